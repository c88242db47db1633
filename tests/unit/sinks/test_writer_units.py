"""The writer's pure parts: row shapes, which errors are worth a retry, its settings."""

from __future__ import annotations

import pytest
from clickhouse_connect.driver.exceptions import DatabaseError, DataError, OperationalError, ProgrammingError

from finpulse.sinks.writer import ClickHouseWriter, as_columns, is_transient


def test_rows_become_columns() -> None:
    rows = [{"event_id": "a", "n": 1}, {"event_id": "b", "n": 2}]
    assert as_columns(rows) == {"event_id": ["a", "b"], "n": [1, 2]}


def test_columns_stay_columns() -> None:
    assert as_columns({"event_id": ("a", "b"), "n": [1, 2]}) == {"event_id": ["a", "b"], "n": [1, 2]}


def test_no_rows_is_no_columns() -> None:
    assert as_columns([]) == {}


def test_columns_of_different_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="different lengths"):
        as_columns({"event_id": ["a", "b"], "n": [1]})


def test_rows_with_different_columns_are_refused() -> None:
    with pytest.raises(ValueError, match="same columns"):
        as_columns([{"event_id": "a", "n": 1}, {"event_id": "b"}])


@pytest.mark.parametrize(
    "error",
    [
        OperationalError("Connection refused"),
        OperationalError("timed out", code=159),
        DatabaseError("Code: 252. Too many parts", code=252),
        DatabaseError("Code: 241. Memory limit exceeded", code=241),
        ConnectionResetError("reset by peer"),
        TimeoutError(),
    ],
)
def test_connection_and_server_failures_are_retried(error: BaseException) -> None:
    assert is_transient(error)


@pytest.mark.parametrize(
    "error",
    [
        DatabaseError("Code: 16. No such column", code=16),
        DatabaseError("Code: 60. Unknown table", code=60),
        DatabaseError("Code: 62. Syntax error", code=62),
        DatabaseError("Code: 516. Authentication failed", code=516),
        OperationalError("Code: 164. readonly", code=164),
        DataError("Unable to create native array for column `partition`"),
        ProgrammingError("The client has been closed"),
        ValueError("a bug"),
    ],
)
def test_wrong_statements_or_data_are_not_retried(error: BaseException) -> None:
    assert not is_transient(error)


@pytest.mark.parametrize(
    "timing",
    [
        {"retry_max_s": 0},
        {"retry_max_s": 10, "retry_initial_s": 0},
        {"retry_max_s": 10, "retry_initial_s": 5, "retry_cap_s": 1},
    ],
)
def test_retry_timing_is_checked_at_construction(timing: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="retry timing"):
        ClickHouseWriter(object(), **timing)  # type: ignore[arg-type]
