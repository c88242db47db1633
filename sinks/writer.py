"""Idempotent batched inserts into ClickHouse, with retries while ClickHouse is down.

Delivery into the tables is at-least-once (a worker restart or a rebalance redelivers offsets that were
not committed, with other batch boundaries), so the writer makes every insert idempotent by key:

1. keys repeated inside the batch are kept once (the first row wins);
2. keys already in the table are dropped: one ``SELECT key … WHERE key IN (…)`` per attempt, cheap
   because each table is ordered by its key (``scored_events`` through its ``by_event_id`` projection);
3. the rest is inserted with ``insert_deduplication_token`` = the caller's token plus a hash of the
   keys being inserted, so an insert that reached the server but whose reply was lost, and is retried
   while the first one is still in flight, is dropped by ClickHouse itself. The key hash keeps a reused
   caller token (e.g. offsets that restart at 0 with a fresh in-memory broker) from hiding new rows.

A failed attempt is retried (exponential backoff with jitter, capped) for as long as the retry budget
lasts, each attempt re-running step 2, since an insert reported as failed may have landed. Errors that a
retry cannot fix (unknown column, bad value, syntax, permissions) are raised at once. Either way the
caller must not commit the batch's offsets. Thus ``count() == uniqExact(key)`` holds without ``FINAL``.

Not covered: two *processes* inserting the same key at the same instant (between one's check and its
insert). Kafka gives a partition to one consumer at a time, so this needs a rebalance that moves a
partition while its old owner is mid-insert.

Example:
    >>> writer = ClickHouseWriter(client, retry_max_s=600)  # doctest: +SKIP
    >>> token = "news.raw:0:100-199"
    >>> writer.write("scored_events", columns, key="event_id", dedup_token=token)  # doctest: +SKIP
    WriteResult(inserted=100, skipped_in_batch=0, attempts=1, existing=frozenset())
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from clickhouse_connect.driver import Client
from clickhouse_connect.driver.binding import quote_identifier
from clickhouse_connect.driver.exceptions import DatabaseError, InternalError, OperationalError
from tenacity import (
    RetryCallState,
    RetryError,
    Retrying,
    retry_if_exception,
    stop_before_delay,
    wait_exponential_jitter,
)

from finpulse.sinks.exceptions import ClickHouseUnavailableError, ClickHouseWriteError

log = logging.getLogger("finpulse.sinks.writer")

Rows = Sequence[Mapping[str, Any]] | Mapping[str, Sequence[Any]]
"""Row dicts, or columns: ``{"event_id": [...], "text": [...]}`` (columns are cheaper)."""

# ClickHouse error codes a retry cannot fix: the statement or the data is wrong, or access is denied.
PERMANENT_ERROR_CODES = frozenset({
    1,  # UNSUPPORTED_METHOD
    6,  # CANNOT_PARSE_TEXT
    8,  # THERE_IS_NO_COLUMN
    10,  # NOT_FOUND_COLUMN_IN_BLOCK
    16,  # NO_SUCH_COLUMN_IN_TABLE
    20,  # NUMBER_OF_COLUMNS_DOESNT_MATCH
    27,  # CANNOT_PARSE_INPUT_ASSERTION_FAILED
    36,  # BAD_ARGUMENTS
    41,  # CANNOT_PARSE_DATETIME
    43,  # ILLEGAL_TYPE_OF_ARGUMENT
    44,  # ILLEGAL_COLUMN
    46,  # UNKNOWN_FUNCTION
    47,  # UNKNOWN_IDENTIFIER
    48,  # NOT_IMPLEMENTED
    53,  # TYPE_MISMATCH
    60,  # UNKNOWN_TABLE
    62,  # SYNTAX_ERROR
    70,  # CANNOT_CONVERT_TYPE
    81,  # UNKNOWN_DATABASE
    115,  # UNKNOWN_SETTING
    164,  # READONLY
    192,  # UNKNOWN_USER
    193,  # WRONG_PASSWORD
    194,  # REQUIRED_PASSWORD
    497,  # ACCESS_DENIED
    516,  # AUTHENTICATION_FAILED
})  # fmt: skip

_INSERT_SETTINGS = {
    "insert_deduplicate": 1,
    "async_insert": 0,
    # One batch may carry events of many months (a replayed archive); an insert refused for it would
    # fail again on every retry and stall the worker, so the partition count per insert is not capped.
    "max_partitions_per_insert_block": 0,
}


@dataclass(frozen=True)
class WriteResult:
    """What one ``write`` did. ``inserted`` counts the batch's rows stored by this call, including
    rows of an attempt that was reported failed but had landed; ``skipped_existing`` the rows dropped
    because their key was stored before the call (``existing`` holds those keys), ``skipped_in_batch``
    those that repeated a key of the same batch."""

    inserted: int
    skipped_in_batch: int = 0
    attempts: int = 1
    existing: frozenset[str] = frozenset()

    @property
    def skipped_existing(self) -> int:
        return len(self.existing)

    @property
    def duplicates(self) -> int:
        """Rows dropped as duplicates: redelivered, or sent twice by their feed."""
        return self.skipped_existing + self.skipped_in_batch


def is_transient(error: BaseException) -> bool:
    """Whether retrying may help: connection and server-side failures yes, wrong statements or data no."""
    if isinstance(error, (OperationalError, InternalError)) or type(error) is DatabaseError:
        return getattr(error, "code", None) not in PERMANENT_ERROR_CODES
    return isinstance(error, (ConnectionError, TimeoutError))


class ClickHouseWriter:
    """Writes batches to any finpulse table, idempotently by a key column. Blocking and thread-safe.

    Args:
        client: from ``finpulse.sinks.clickhouse.get_client``.
        retry_max_s: how long a failing batch is retried before ``ClickHouseUnavailableError``
            (``FINPULSE_CLICKHOUSE_RETRY_MAX_S``).
        retry_initial_s: first backoff; it doubles on each retry, plus up to as much jitter.
        retry_cap_s: longest single backoff.
    """

    def __init__(
        self, client: Client, *, retry_max_s: float, retry_initial_s: float = 0.2, retry_cap_s: float = 10.0
    ) -> None:
        if retry_max_s <= 0 or retry_initial_s <= 0 or retry_cap_s < retry_initial_s:
            raise ValueError(
                f"retry timing must satisfy 0 < retry_initial_s <= retry_cap_s and retry_max_s > 0, got "
                f"retry_max_s={retry_max_s}, retry_initial_s={retry_initial_s}, retry_cap_s={retry_cap_s}"
            )
        self._client = client
        self._retry_max_s = retry_max_s
        self._wait = wait_exponential_jitter(initial=retry_initial_s, max=retry_cap_s, jitter=retry_initial_s)
        self._lock = threading.Lock()

    def write(self, table: str, rows: Rows, *, key: str, dedup_token: str) -> WriteResult:
        """Store the rows whose ``key`` is not in ``table`` yet; retry while ClickHouse fails.

        ``dedup_token`` names the batch stably across retries and restarts, e.g. its topic, partition and
        offset range. Columns missing from ``rows`` take the table's defaults.

        Raises:
            ValueError: columns of different lengths, or no ``key`` column.
            ClickHouseWriteError: an error no retry can fix (the original error is its cause).
            ClickHouseUnavailableError: ClickHouse still failed when the retry budget ran out.
        """
        columns = as_columns(rows)
        batch = _Batch.unique_by_key(table, columns, key, dedup_token)
        if batch.size == 0:
            return WriteResult(inserted=0)

        outcome = _Outcome()
        retrying = Retrying(
            stop=stop_before_delay(self._retry_max_s),
            wait=self._wait,
            retry=retry_if_exception(is_transient),
            before_sleep=self._log_retry(batch),
        )
        started = time.monotonic()
        try:
            retrying(self._attempt, batch, outcome)
        except RetryError as exhausted:
            last = exhausted.last_attempt.exception()
            raise ClickHouseUnavailableError(
                f"could not write {batch.size} rows to {table} (batch {dedup_token!r}): ClickHouse kept "
                f"failing for {time.monotonic() - started:.0f}s over {outcome.attempts} attempts; "
                f"last error: {last}"
            ) from last
        except Exception as error:
            raise ClickHouseWriteError(
                f"could not write {batch.size} rows to {table} (batch {dedup_token!r}), and retrying would "
                f"not help: {error}"
            ) from error

        if outcome.attempts > 1:
            log.info("wrote %d rows to %s after %d attempts", batch.size, table, outcome.attempts)
        existing = outcome.existing_before or frozenset()
        return WriteResult(
            inserted=batch.size - len(existing),
            skipped_in_batch=batch.duplicates,
            attempts=outcome.attempts,
            existing=existing,
        )

    def _attempt(self, batch: _Batch, outcome: _Outcome) -> None:
        outcome.attempts += 1
        with self._lock:
            existing = self._existing_keys(batch)
            if outcome.existing_before is None:
                outcome.existing_before = frozenset(existing)
            pending = [i for i, key in zip(batch.rows, batch.keys, strict=True) if key not in existing]
            if pending:
                self._insert(batch, pending)

    def _existing_keys(self, batch: _Batch) -> set[str]:
        result = self._client.query(
            f"SELECT {quote_identifier(batch.key)} FROM {quote_identifier(batch.table)} "
            f"WHERE {quote_identifier(batch.key)} IN {{keys:Array(String)}}",
            parameters={"keys": batch.keys},
        )
        return {row[0] for row in result.result_rows}

    def _insert(self, batch: _Batch, pending: list[int]) -> None:
        names = list(batch.columns)
        data = [[batch.columns[name][i] for i in pending] for name in names]
        token = batch.token_for([batch.columns[batch.key][i] for i in pending])
        self._client.insert(
            batch.table,
            data,
            column_names=names,
            column_oriented=True,
            settings={**_INSERT_SETTINGS, "insert_deduplication_token": token},
        )

    def _log_retry(self, batch: _Batch):
        def log_it(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            log.warning(
                "writing %d rows to %s failed (attempt %d, %.1fs of %.0fs retry budget used): %s; "
                "retrying in %.2fs",
                batch.size, batch.table, state.attempt_number, state.seconds_since_start, self._retry_max_s,
                error, state.upcoming_sleep,
            )  # fmt: skip

        return log_it


def as_columns(rows: Rows) -> dict[str, list[Any]]:
    """Row dicts or columns → columns of equal length (the shape clickhouse-connect inserts fastest)."""
    if isinstance(rows, Mapping):
        columns = {name: list(values) for name, values in rows.items()}
    else:
        names = list(rows[0]) if rows else []
        try:
            columns = {name: [row[name] for row in rows] for name in names}
        except KeyError as missing:
            raise ValueError(f"every row must have the same columns; a row lacks {missing}") from None
    lengths = {name: len(values) for name, values in columns.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"columns of different lengths: {lengths}")
    return columns


@dataclass(frozen=True)
class _Batch:
    """One batch after in-batch deduplication: ``rows`` are the indexes kept, ``keys`` their keys."""

    table: str
    key: str
    columns: dict[str, list[Any]]
    rows: list[int]
    keys: list[str]
    duplicates: int
    dedup_token: str

    @classmethod
    def unique_by_key(cls, table: str, columns: dict[str, list[Any]], key: str, dedup_token: str) -> _Batch:
        if columns and key not in columns:
            raise ValueError(f"rows for {table} have no key column {key!r}; columns: {sorted(columns)}")
        all_keys = columns.get(key, [])
        first_index: dict[str, int] = {}
        for index, value in enumerate(all_keys):
            first_index.setdefault(value, index)
        return cls(
            table=table,
            key=key,
            columns=columns,
            rows=list(first_index.values()),
            keys=list(first_index),
            duplicates=len(all_keys) - len(first_index),
            dedup_token=dedup_token,
        )

    @property
    def size(self) -> int:
        return len(self.rows)

    def token_for(self, keys: list[str]) -> str:
        digest = hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()[:24]
        return f"{self.table}/{self.dedup_token}/{digest}"


@dataclass
class _Outcome:
    attempts: int = 0
    existing_before: frozenset[str] | None = None  # keys found stored by the first key check that ran
