"""Rows for the finpulse tables, and a fault-injecting proxy around a real client."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

from clickhouse_connect.driver.exceptions import OperationalError

Columns = dict[str, list[Any]]


def scored_columns(ids: list[str], *, ticker: str = "AAPL") -> Columns:
    """``scored_events`` columns as the pipeline writes them, for the given event ids."""
    now = datetime.now(UTC)
    n = len(ids)
    return {
        "event_id": ids,
        "source_id": ids,
        "kind": ["news" if i % 2 else "social" for i in range(n)],
        "source": ["reuters" if i % 2 else "x" for i in range(n)],
        "tickers": [[ticker, "MSFT"] if i % 3 else [] for i in range(n)],
        "text": [f"{ticker} beats estimates as iPhone sales climb, post {event_id}" for event_id in ids],
        "label": ["bullish"] * n,
        "p_bearish": [0.1] * n,
        "p_neutral": [0.2] * n,
        "p_bullish": [0.7] * n,
        "score": [0.6] * n,
        "confidence": [0.7] * n,
        "model_version": ["test-v1"] * n,
        "event_time": [now - timedelta(days=i % 70, seconds=i) for i in range(n)],
        "ingested_at": [now] * n,
        "scored_at": [now] * n,
        "stored_at": [now] * n,
        "source_topic": ["finpulse.news.raw"] * n,
        "partition": [i % 4 for i in range(n)],
        "offset": list(range(n)),
    }


def ids(prefix: str, start: int, stop: int) -> list[str]:
    return [f"{prefix}-{i:06d}" for i in range(start, stop)]


def count_and_unique(
    client: Any, table: str = "scored_events", key: str = "event_id", prefix: str = ""
) -> tuple[int, int]:
    rows = client.query(
        f"SELECT count(), uniqExact({key}) FROM {table} WHERE startsWith({key}, {{prefix:String}})",
        parameters={"prefix": prefix},
    ).result_rows
    return int(rows[0][0]), int(rows[0][1])


class FlakyClient:
    """The real client, except that some calls fail the way a dropped connection does.

    ``fail_inserts``/``fail_queries``: how many of the next calls raise. ``fail_until``: calls raise
    until that ``time.monotonic()``. ``land_then_fail``: the failing inserts reach ClickHouse first, as
    when the connection drops after the request was sent.
    """

    def __init__(self, client: Any, *, fail_inserts: int = 0, fail_queries: int = 0, fail_until: float = 0.0,
                 land_then_fail: bool = False) -> None:  # fmt: skip
        self._client = client
        self.fail_inserts = fail_inserts
        self.fail_queries = fail_queries
        self.fail_until = fail_until
        self.land_then_fail = land_then_fail
        self.inserts_failed = 0
        self.queries_failed = 0

    def insert(self, *args: Any, **kwargs: Any) -> Any:
        if self.fail_inserts > 0 or time.monotonic() < self.fail_until:
            self.fail_inserts -= 1
            self.inserts_failed += 1
            if self.land_then_fail:
                self._client.insert(*args, **kwargs)
                raise OperationalError("connection reset by peer after the insert was sent (injected)")
            raise OperationalError("Connection refused (injected outage)")
        return self._client.insert(*args, **kwargs)

    def query(self, *args: Any, **kwargs: Any) -> Any:
        if self.fail_queries > 0:
            self.fail_queries -= 1
            self.queries_failed += 1
            raise OperationalError("Connection refused (injected outage)")
        return self._client.query(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def write(writer: Any, table: str, rows: Any, batch: str, key: str = "event_id") -> Any:
    """``writer.write`` with ``batch`` as the dedup token."""
    return writer.write(table, rows, key=key, dedup_token=batch)


def write_scored(writer: Any, event_ids: list[str], batch: str) -> Any:
    """``scored_events`` rows for these ids, written with ``batch`` as the dedup token."""
    return write(writer, "scored_events", scored_columns(event_ids), batch)
