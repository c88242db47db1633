"""Read-only SQL for people and dashboards: the guard, the query, and its output formats.

Two lines of defence. ``check_read_only`` reads the query's tokens (string literals, quoted names and
comments skipped) and refuses anything but one ``SELECT``/``WITH``/``SHOW``/``DESCRIBE``/``EXPLAIN``/
``EXISTS`` statement without a writing keyword, an ``INTO OUTFILE`` or a ``FORMAT`` clause. ``run_query``
then runs it with the ClickHouse setting ``readonly=1``, which also refuses writes, DDL, setting changes
and table functions such as ``file()`` or ``url()`` (the embedded engine would otherwise read local files
for a caller of the worker's HTTP endpoint). ``readonly`` is passed per query, never set on the client's
session: on chDB a session ``SET readonly=1`` cannot be undone, and would leave a shared writer client
unable to insert.

An answer is capped in ClickHouse itself (``max_result_rows``, ``max_result_bytes``,
``result_overflow_mode='throw'``; ``FINPULSE_SQL_MAX_ROWS``/``_MAX_BYTES``): a larger one is refused
with :class:`ResultTooLargeError`, never cut short, before the worker or the CLI holds it in memory.
Only the answer counts: subqueries (``IN (SELECT …)``, joins, views) of any size pass, as measured on
chDB 4.4 (engine 26.9).

Output (the CLI's ``--format`` and the worker's ``/sql``): ``to_json`` gives one document
``{"columns": [names], "types": [ClickHouse types], "rows": [{name: value}, ...]}`` with datetimes as
ISO 8601 strings, decimals as strings and non-finite floats as null; ``to_csv`` a header line and rows;
``render_table`` a rich table for a terminal.

Example:
    >>> check_read_only("SELECT count() FROM scored_events;")
    'SELECT count() FROM scored_events'
    >>> check_read_only("DROP TABLE scored_events")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    finpulse.sinks.exceptions.ReadOnlyQueryError: DROP statements are not allowed: ...
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import Any

from clickhouse_connect.driver import Client
from clickhouse_connect.driver.exceptions import DatabaseError
from rich.table import Table
from rich.text import Text

from finpulse.settings import Settings
from finpulse.sinks.exceptions import ReadOnlyQueryError, ResultTooLargeError

__all__ = [
    "QueryResult", "ReadOnlyQueryError", "ResultLimits", "ResultTooLargeError", "check_read_only", "render_table",
    "run_query", "to_csv", "to_json",
]  # fmt: skip

ALLOWED_STATEMENTS = ("SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXPLAIN", "EXISTS")
_ALLOWED_HINT = "only SELECT, WITH, SHOW, DESCRIBE, EXPLAIN and EXISTS queries run here"
# Keywords that change data, schema, grants or session state. A word counts as such a keyword unless it
# is part of a dotted name (system.tables) or a function call (a word followed by "(").
WRITE_KEYWORDS = frozenset({
    "INSERT", "CREATE", "DROP", "ALTER", "TRUNCATE", "RENAME", "OPTIMIZE", "SYSTEM", "KILL", "GRANT",
    "REVOKE", "SET", "ATTACH", "DETACH", "DELETE", "UPDATE", "EXCHANGE", "UNDROP", "BACKUP", "RESTORE",
    "USE", "INTO", "OUTFILE",
})  # fmt: skip
_NUMERIC_TYPE = re.compile(r"^(Nullable\()?(U?Int|Float|Decimal)")


# ---- the guard -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # "word", "punct", "literal" (a string, a quoted name, a number)
    text: str
    start: int


def check_read_only(query: str) -> str:
    """The query without trailing semicolons, if it is one read-only statement.

    Raises:
        ReadOnlyQueryError: with a message naming what was refused and why.
    """
    tokens = list(_tokens(query))
    while tokens and tokens[-1].text == ";":
        tokens.pop()
    if not tokens:
        raise ReadOnlyQueryError("the query is empty")
    if any(token.text == ";" for token in tokens):
        raise ReadOnlyQueryError("multiple statements are not allowed: send one query at a time")

    first = next((token for token in tokens if token.kind == "word"), None)
    if first is None or first.text.upper() not in ALLOWED_STATEMENTS:
        shown = first.text.upper() if first else tokens[0].text
        raise ReadOnlyQueryError(
            f"{shown} statements are not allowed: finpulse SQL is read-only ({_ALLOWED_HINT})"
        )

    for index, token in enumerate(tokens):
        if token.kind != "word" or _is_name_part(tokens, index):
            continue
        word = token.text.upper()
        if word == "CREATE" and index > 0 and tokens[index - 1].text.upper() == "SHOW":
            continue  # SHOW CREATE TABLE only reads the definition
        if word in ("INTO", "OUTFILE"):
            raise ReadOnlyQueryError(
                "INTO is not allowed: finpulse SQL is read-only and writes nowhere (INSERT INTO, "
                "INTO OUTFILE); save results by redirecting --format csv or --format json"
            )
        if word in WRITE_KEYWORDS:
            raise ReadOnlyQueryError(
                f"{word} is not allowed: finpulse SQL is read-only ({_ALLOWED_HINT}); if {token.text!r} "
                f"is a column or table name, quote it: `{token.text}`"
            )
        if word == "FORMAT":
            raise ReadOnlyQueryError(
                "a FORMAT clause is not allowed: choose the output with --format (table, csv or json)"
            )
    return query[: tokens[-1].start + len(tokens[-1].text)].strip()


def _is_name_part(tokens: list[_Token], index: int) -> bool:
    before = tokens[index - 1].text if index > 0 else ""
    after = tokens[index + 1].text if index + 1 < len(tokens) else ""
    return before == "." or after in (".", "(")


_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")
_NUMBER = re.compile(r"\d[\w.]*(?:[eE][+-]?\d+)?")
_HEREDOC = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")


def _tokens(query: str) -> Iterator[_Token]:
    """ClickHouse's lexical structure, as far as the guard needs it; comments are dropped."""
    position, end = 0, len(query)
    while position < end:
        char = query[position]
        if char.isspace():
            position += 1
        elif query.startswith("--", position) or char == "#":
            newline = query.find("\n", position)
            position = end if newline < 0 else newline + 1
        elif query.startswith("/*", position):
            position = _block_comment_end(query, position)
        elif char in "'\"`":
            close = _quoted_end(query, position)
            yield _Token("literal", query[position:close], position)
            position = close
        elif heredoc := _HEREDOC.match(query, position):
            close = query.find(heredoc.group(0), heredoc.end())
            if close < 0:
                raise ReadOnlyQueryError(f"unterminated heredoc string starting at position {position}")
            position = close + len(heredoc.group(0))
            yield _Token("literal", query[heredoc.start() : position], heredoc.start())
        elif word := _WORD.match(query, position):
            yield _Token("word", word.group(0), position)
            position = word.end()
        elif number := _NUMBER.match(query, position):
            yield _Token("literal", number.group(0), position)
            position = number.end()
        else:
            yield _Token("punct", char, position)
            position += 1


def _quoted_end(query: str, start: int) -> int:
    quote, position = query[start], start + 1
    while position < len(query):
        char = query[position]
        if char == "\\":
            position += 2
        elif char == quote and query.startswith(quote * 2, position):
            position += 2
        elif char == quote:
            return position + 1
        else:
            position += 1
    kind = "string literal" if quote == "'" else "quoted name"
    raise ReadOnlyQueryError(f"unterminated {kind} starting at position {start}")


def _block_comment_end(query: str, start: int) -> int:
    depth, position = 0, start
    while position < len(query):
        if query.startswith("/*", position):
            depth, position = depth + 1, position + 2
        elif query.startswith("*/", position):
            depth, position = depth - 1, position + 2
            if depth == 0:
                return position
        else:
            position += 1
    raise ReadOnlyQueryError(f"unterminated comment starting at position {start}")


# ---- running a query -------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueryResult:
    """A query's columns (unique names), their ClickHouse types, and its rows."""

    columns: list[str]
    types: list[str]
    rows: list[tuple[Any, ...]]

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> QueryResult:
        """The inverse of ``to_json`` (values stay as JSON gave them, e.g. datetimes as strings)."""
        columns = list(document["columns"])
        return cls(
            columns=columns,
            types=list(document.get("types", [""] * len(columns))),
            rows=[tuple(row.get(name) for name in columns) for row in document["rows"]],
        )


@dataclass(frozen=True, slots=True)
class ResultLimits:
    """The most rows and bytes (uncompressed, as ClickHouse holds them) an answer may have."""

    max_rows: int
    max_bytes: int

    @classmethod
    def from_settings(cls, settings: Settings) -> ResultLimits:
        """``FINPULSE_SQL_MAX_ROWS`` and ``FINPULSE_SQL_MAX_BYTES``."""
        return cls(max_rows=settings.sql_max_rows, max_bytes=settings.sql_max_bytes)


# ClickHouse's TOO_MANY_ROWS_OR_BYTES (code 396): max_result_rows/_bytes with result_overflow_mode='throw'.
_RESULT_LIMIT_ERROR = "TOO_MANY_ROWS_OR_BYTES"
_RESULT_LIMIT_DETAIL = re.compile(r"Limit for result exceeded, (?P<detail>[^()]*?)\.?\s*(?:\(|$)")
# chDB 4.4 keeps what a failed query had already output (blocks before a result limit, a timeout or an
# error in a later block) and puts it in front of the same client's next answer: wrong rows, silently
# (measured 20 of 20 times after a UNION ALL whose last part failed), or a stream that does not parse.
# One throwaway query after a failure takes them; the lock keeps another thread's query from running
# in between, at the cost of one query at a time per process (a chDB client runs one at a time anyway).
_QUERY_THEN_CLEAN_UP = threading.Lock()


def run_query(
    client: Client, query: str, *, timeout_s: float | None = None, limits: ResultLimits | None = None
) -> QueryResult:
    """Check ``query`` with ``check_read_only`` and run it read-only.

    ``timeout_s`` caps the query's run time on the server (``max_execution_time``), e.g. for an HTTP
    endpoint whose callers should not hold the database for long. ``limits`` caps the answer; without
    it the answer is as large as ClickHouse's own settings allow (callers that serve people pass it).

    Raises:
        ReadOnlyQueryError: the guard refused the query.
        ResultTooLargeError: the answer would be larger than ``limits``.
        clickhouse_connect.driver.exceptions.DatabaseError: ClickHouse refused or failed it (a timeout is
            code 159, TIMEOUT_EXCEEDED).
    """
    statement = check_read_only(query)
    settings: dict[str, object] = {"readonly": 1}
    if timeout_s is not None:
        settings["max_execution_time"] = timeout_s
    if limits is not None:
        settings |= {
            "max_result_rows": limits.max_rows,
            "max_result_bytes": limits.max_bytes,
            "result_overflow_mode": "throw",
        }
    with _QUERY_THEN_CLEAN_UP:
        try:
            result = client.query(statement, settings=settings)
        except DatabaseError as error:
            with suppress(Exception):
                client.query("SELECT 1")  # takes what chDB kept of the failed query
            if limits is not None and _RESULT_LIMIT_ERROR in str(error):
                raise ResultTooLargeError(_too_large(limits, str(error))) from None
            raise
    return QueryResult(
        columns=_unique_names(result.column_names),
        types=[column_type.name for column_type in result.column_types],
        rows=[tuple(row) for row in result.result_rows],
    )


def _too_large(limits: ResultLimits, clickhouse_message: str) -> str:
    detail = _RESULT_LIMIT_DETAIL.search(clickhouse_message)
    said = f" (ClickHouse: {detail['detail']})" if detail else ""
    return (
        f"the answer is larger than allowed: at most {limits.max_rows:,} rows (FINPULSE_SQL_MAX_ROWS) and "
        f"{limits.max_bytes:,} bytes (FINPULSE_SQL_MAX_BYTES){said}; add a LIMIT, aggregate, or select "
        "fewer columns"
    )


def _unique_names(names: Sequence[str]) -> list[str]:
    """``SELECT 1, 1`` names two columns ``1``; JSON rows need distinct keys, so the second is ``1_2``."""
    seen: dict[str, int] = {}
    unique = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        unique.append(name if seen[name] == 1 else f"{name}_{seen[name]}")
    return unique


# ---- output formats --------------------------------------------------------------------------------


def to_json(result: QueryResult) -> str:
    """One JSON document: ``{"columns": [...], "types": [...], "rows": [{column: value}, ...]}``."""
    document = {
        "columns": result.columns,
        "types": result.types,
        "rows": [dict(zip(result.columns, map(_json_value, row), strict=True)) for row in result.rows],
    }
    return json.dumps(document, ensure_ascii=False, allow_nan=False)


def to_csv(result: QueryResult) -> str:
    """A header line, then one line per row; nested values (arrays, maps, tuples) as JSON text."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(result.columns)
    writer.writerows([_text_value(value) for value in row] for row in result.rows)
    return buffer.getvalue()


def render_table(result: QueryResult) -> Table:
    """A rich table for a terminal, numbers right-aligned, row count as caption."""
    count = len(result.rows)
    table = Table(caption=f"{count} row{'' if count == 1 else 's'}", caption_justify="left")
    for name, type_name in zip(result.columns, result.types, strict=True):
        table.add_column(name, justify="right" if _NUMERIC_TYPE.match(type_name) else "left", overflow="fold")
    for row in result.rows:
        table.add_row(*(_cell(value) for value in row))
    return table


def _cell(value: Any) -> Text:
    # Text, not a str: a str cell would be read as rich markup, and "[b]" in a tweet is not markup.
    return Text("NULL", style="dim") if value is None else Text(_text_value(value))


def _json_value(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_json_value(item) for item in value]
    if isinstance(value, Mapping):
        return {str(_json_value(k)): _json_value(v) for k, v in value.items()}
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    return str(value)  # Decimal (exact), UUID, IP addresses, enums


def _text_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        return str(value)
    if isinstance(value, (list, tuple, set, frozenset, Mapping)):
        return json.dumps(_json_value(value), ensure_ascii=False)
    return str(_json_value(value))
