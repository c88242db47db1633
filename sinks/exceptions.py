"""Errors of the ClickHouse sink, under one root so callers can catch the whole family."""

from __future__ import annotations


class SinkError(Exception):
    """Root of every error raised by ``finpulse.sinks``."""


class ChdbPathInUseError(SinkError):
    """The chDB data directory cannot be opened: another process holds it, or this one holds another."""


class MigrationError(SinkError):
    """A schema migration could not be applied, or an applied one was edited afterwards."""


class ClickHouseWriteError(SinkError):
    """A batch could not be written; nothing of it may be assumed stored, offsets must not be committed."""


class ClickHouseUnavailableError(ClickHouseWriteError):
    """ClickHouse kept failing for the whole retry budget (``FINPULSE_CLICKHOUSE_RETRY_MAX_S``)."""


class ReadOnlyQueryError(SinkError):
    """A query given to the read-only SQL surface would change data or state, or could not be checked."""


class ResultTooLargeError(SinkError):
    """A read-only query's answer has more rows or bytes than ``FINPULSE_SQL_MAX_ROWS``/``_MAX_BYTES`` allow."""
