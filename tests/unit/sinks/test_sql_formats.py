"""Output formats of a query result: one JSON document, CSV, a rich table."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, date, datetime
from decimal import Decimal
from uuid import UUID

from rich.console import Console

from finpulse.sinks.sql import QueryResult, render_table, to_csv, to_json

RESULT = QueryResult(
    columns=["event_id", "tickers", "score", "event_time", "day", "price", "note", "ok"],
    types=[
        "String",
        "Array(String)",
        "Float32",
        "DateTime64(3, 'UTC')",
        "Date",
        "Decimal(9, 2)",
        "Nullable(String)",
        "Bool",
    ],
    rows=[
        (
            "n-1",
            ["AAPL", "MSFT"],
            0.5,
            datetime(2024, 5, 1, 12, 30, tzinfo=UTC),
            date(2024, 5, 1),
            Decimal("1.10"),
            None,
            True,
        ),
        (
            "n-2",
            [],
            float("nan"),
            datetime(2024, 5, 2, tzinfo=UTC),
            date(2024, 5, 2),
            Decimal("-3.00"),
            'a,"b"',
            False,
        ),
    ],
)


def test_json_is_one_document_with_columns_types_and_rows_as_objects() -> None:
    document = json.loads(to_json(RESULT))
    assert document["columns"] == RESULT.columns
    assert document["types"] == RESULT.types
    assert document["rows"][0] == {
        "event_id": "n-1",
        "tickers": ["AAPL", "MSFT"],
        "score": 0.5,
        "event_time": "2024-05-01T12:30:00+00:00",
        "day": "2024-05-01",
        "price": "1.10",
        "note": None,
        "ok": True,
    }
    assert document["rows"][1]["score"] is None  # NaN is not JSON


def test_json_round_trips_through_from_json() -> None:
    back = QueryResult.from_json(json.loads(to_json(RESULT)))
    assert back.columns == RESULT.columns
    assert back.types == RESULT.types
    assert back.rows[0][0] == "n-1"
    assert back.rows[0][3] == "2024-05-01T12:30:00+00:00"
    assert len(back.rows) == 2


def test_json_of_other_types() -> None:
    result = QueryResult(
        ["id", "raw", "m"], ["UUID", "String", "Map(String, UInt8)"], [(UUID(int=1), b"\xff", {"a": 1})]
    )
    assert json.loads(to_json(result))["rows"] == [
        {"id": "00000000-0000-0000-0000-000000000001", "raw": "\ufffd", "m": {"a": 1}}
    ]


def test_csv_has_a_header_then_rows_with_iso_times_and_json_arrays() -> None:
    text = to_csv(RESULT)
    lines = list(csv.reader(io.StringIO(text)))
    assert lines[0] == RESULT.columns
    assert lines[1] == [
        "n-1",
        '["AAPL", "MSFT"]',
        "0.5",
        "2024-05-01T12:30:00+00:00",
        "2024-05-01",
        "1.10",
        "",
        "true",
    ]
    assert lines[2][6] == 'a,"b"'  # quoted by the CSV writer, read back intact
    assert len(lines) == 3


def test_empty_result_has_a_header_only() -> None:
    empty = QueryResult(["n"], ["UInt64"], [])
    assert to_csv(empty) == "n\n"
    assert json.loads(to_json(empty)) == {"columns": ["n"], "types": ["UInt64"], "rows": []}


def test_table_shows_every_cell_without_reading_markup() -> None:
    result = QueryResult(["text", "n"], ["String", "UInt64"], [("[bold]not markup[/bold]", 7), (None, 8)])
    console = Console(width=120, record=True, file=io.StringIO())
    console.print(render_table(result))
    shown = console.export_text()
    assert "[bold]not markup[/bold]" in shown
    assert "NULL" in shown
    assert "2 rows" in shown
