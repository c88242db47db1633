"""Replaying a JSONL or CSV file as messages for the input topics (``finpulse replay FILE``).

Files are read row by row, never whole. Each row becomes a ``NewsArticle`` or ``SocialPost`` payload:

* Kind: ``kind`` if given, else per row: a row with a non-empty ``headline`` is news, any other row a
  social post (so a CSV without a ``headline`` column replays as social posts).
* Text: the ``text_col`` column (default ``text``); for news it is the headline, with ``headline`` as
  the fallback column (``text`` for social posts). News bodies come from ``body``.
* Id: ``id`` if present, else ``{file stem}-{row}`` (row = line number in JSONL, data row in CSV, from 1).
* Time: ``published_at`` / ``created_at`` (then ``timestamp``, ``time``, ``date``, ``datetime``) as ISO
  8601, RFC 2822, Twitter's ``Wed Oct 10 20:19:24 +0000 2018`` or epoch seconds/milliseconds; times
  without a zone are UTC; a missing time is the current time (UTC).
* Source: ``source`` (news) or ``platform``/``source`` (social); if missing, the first well-known
  outlet or platform named in the file's path (``twitter-financial-news/valid.csv`` → ``twitter``),
  else the file stem.
* Tickers: optional ``tickers``, a JSON list or a ``|``/``,`` separated string. Other columns are ignored.

A row that does not make a valid event is not dropped: its record carries whatever JSON it produced
(or the raw bytes of a line that is not JSON) and ``error`` says why, so the CLI can report it and still
publish it for the pipeline's dead-letter queue to record.

Example:
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "tweets.csv").write_text("text,label\\n$AAPL beats,1\\n,2\\n")
    >>> for record in iter_records(folder / "tweets.csv"):
    ...     print(record.topic_name, record.key, record.error)
    social.raw b'tweets-1' None
    social.raw b'tweets-2' text: String should have at least 1 character
"""

from __future__ import annotations

import csv
import gzip
import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import IO, Any

from pydantic import ValidationError

from finpulse.schemas import Kind, NewsArticle, SocialPost

NEWS_TOPIC = "news.raw"
SOCIAL_TOPIC = "social.raw"

_TIME_COLUMNS = ("timestamp", "time", "date", "datetime")
_KNOWN_SOURCES = (
    "twitter", "x", "stocktwits", "reddit", "reuters", "bloomberg", "wsj", "cnbc", "ft", "caixin", "scmp",
)  # fmt: skip
_JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
_CSV_DELIMITERS = {".csv": ",", ".tsv": "\t"}
# Python's csv module refuses fields over 128 KiB by default; oversized texts must reach the DLQ instead.
_CSV_FIELD_LIMIT = 64 << 20

Clock = Callable[[], datetime]


@dataclass(frozen=True, slots=True)
class ReplayRecord:
    """One message to publish: topic name without the prefix, key (the event id), JSON value."""

    topic_name: str
    key: bytes
    value: bytes
    row: int
    error: str | None = None


class ReplayError(ValueError):
    """A file that cannot be replayed at all (unknown format, missing text column, broken CSV)."""


def iter_records(
    path: str | Path,
    kind: Kind | None = None,
    text_col: str = "text",
    *,
    source: str | None = None,
    clock: Clock | None = None,
) -> Iterator[ReplayRecord]:
    """The file's rows as records, lazily and in file order (see the module docstring for the mapping).

    Raises ``ReplayError`` at once for a file that cannot be replayed at all: unknown format, unreadable
    file, CSV without a text column. ``source`` overrides the source derived from the path; ``clock``
    gives the time of rows without one (default: now, UTC).
    """
    path = Path(path)
    suffix = _format_suffix(path)
    mapper = _RowMapper(
        kind=kind,
        text_col=text_col,
        stem=_stem(path),
        default_source=source or _source_from_path(path),
        clock=clock or _utc_now,
    )
    if suffix in _JSONL_SUFFIXES:
        rows = _jsonl_rows(_open(path, "rb"))
    else:
        rows = _csv_rows(path, _CSV_DELIMITERS[suffix], _text_columns(kind, text_col))
    return (mapper.record(row_number, row) for row_number, row in rows)


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _format_suffix(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes.pop()
    suffix = suffixes[-1] if suffixes else ""
    if suffix not in _JSONL_SUFFIXES and suffix not in _CSV_DELIMITERS:
        raise ReplayError(
            f"{path}: unknown format; name the file .jsonl, .ndjson, .csv or .tsv (optionally .gz)"
        )
    return suffix


def _stem(path: Path) -> str:
    name = path.name[:-3] if path.name.lower().endswith(".gz") else path.name
    return Path(name).stem


def _source_from_path(path: Path) -> str:
    for part in reversed(path.parts):
        tokens = set(re.split(r"[^a-z0-9]+", part.lower()))
        for known in _KNOWN_SOURCES:
            if known in tokens:
                return known
    return _stem(path)


def _open(path: Path, mode: str, **kwargs: Any) -> IO[Any]:
    try:
        if path.name.lower().endswith(".gz"):
            return gzip.open(path, mode, **kwargs)
        return path.open(mode, **kwargs)
    except OSError as err:
        raise ReplayError(f"{path}: cannot open: {err}") from err


Row = Mapping[str, Any] | bytes


def _text_columns(kind: Kind | None, text_col: str) -> tuple[str, ...]:
    fallbacks = {"news": ("headline",), "social": ("text",), None: ("text", "headline")}[kind]
    return tuple(dict.fromkeys((text_col, *fallbacks)))


def _jsonl_rows(handle: IO[bytes]) -> Iterator[tuple[int, Row]]:
    """Parsed JSON objects; a line that is not a UTF-8 JSON object comes back as its raw bytes."""
    with handle:
        for line_number, line in enumerate(handle, start=1):
            raw = line.rstrip(b"\r\n")
            if not raw.strip():
                continue
            try:
                document = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                yield line_number, raw
                continue
            yield line_number, document if isinstance(document, dict) else raw


def _csv_rows(path: Path, delimiter: str, text_columns: tuple[str, ...]) -> Iterator[tuple[int, Row]]:
    csv.field_size_limit(max(csv.field_size_limit(), _CSV_FIELD_LIMIT))
    # surrogateescape keeps undecodable bytes; they are written back unchanged, and the pipeline's
    # validation sends the row to the DLQ as invalid UTF-8.
    handle = _open(path, "rt", encoding="utf-8-sig", errors="surrogateescape", newline="")
    reader = csv.DictReader(handle, delimiter=delimiter)
    try:
        columns = reader.fieldnames or []
    except csv.Error as err:
        handle.close()
        raise ReplayError(f"{path}:1: not valid CSV: {err}") from err
    if columns and not set(text_columns) & set(columns):
        handle.close()
        raise ReplayError(f"{path}: no text column; expected one of {list(text_columns)}, found {columns}")
    return _csv_data_rows(path, handle, reader)


def _csv_data_rows(path: Path, handle: IO[str], reader: csv.DictReader[str]) -> Iterator[tuple[int, Row]]:
    with handle:
        try:
            yield from enumerate(reader, start=1)
        except csv.Error as err:
            raise ReplayError(f"{path}:{reader.line_num}: not valid CSV: {err}") from err


@dataclass(frozen=True)
class _RowMapper:
    kind: Kind | None
    text_col: str
    stem: str
    default_source: str
    clock: Clock

    def record(self, row_number: int, row: Row) -> ReplayRecord:
        if isinstance(row, bytes):
            return self._unparsed(row_number, row)
        kind = self.kind or ("news" if _present(row.get("headline")) else "social")
        payload = self._news(row) if kind == "news" else self._social(row)
        payload["id"] = _text(row.get("id")) or f"{self.stem}-{row_number}"
        schema = NewsArticle if kind == "news" else SocialPost
        topic = NEWS_TOPIC if kind == "news" else SOCIAL_TOPIC
        key = str(payload["id"]).encode("utf-8", "surrogateescape")
        try:
            event = schema.model_validate(payload)
        except ValidationError as err:
            value = json.dumps(payload, ensure_ascii=False, default=str).encode("utf-8", "surrogateescape")
            return ReplayRecord(topic, key, value, row_number, _summary(err))
        return ReplayRecord(topic, key, event.model_dump_json().encode(), row_number)

    def _unparsed(self, row_number: int, raw: bytes) -> ReplayRecord:
        topic = NEWS_TOPIC if self.kind == "news" else SOCIAL_TOPIC
        try:
            json.loads(raw.decode("utf-8"))
            reason = "not a JSON object"
        except UnicodeDecodeError:
            reason = "invalid UTF-8"
        except json.JSONDecodeError as err:
            reason = f"invalid JSON: {err.msg} at column {err.colno}"
        return ReplayRecord(topic, f"{self.stem}-{row_number}".encode(), raw, row_number, reason)

    def _news(self, row: Mapping[str, Any]) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "source": _first(row, "source", "outlet", "publisher") or self.default_source,
            "published_at": self._time(row, "published_at", "created_at"),
            "headline": _first(row, self.text_col, "headline") or "",
            "body": _first(row, "body") or "",
            "url": _first(row, "url"),
        }
        return payload | _tickers(row)

    def _social(self, row: Mapping[str, Any]) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "platform": _first(row, "platform", "source") or self.default_source,
            "author": _first(row, "author", "user", "username") or "",
            "created_at": self._time(row, "created_at", "published_at"),
            "text": _first(row, self.text_col, "text") or "",
        }
        return payload | _tickers(row)

    def _time(self, row: Mapping[str, Any], *columns: str) -> Any:
        value = _first(row, *columns, *_TIME_COLUMNS)
        if value is None:
            return self.clock().isoformat()
        parsed = parse_time(value)
        return parsed.isoformat() if parsed else value


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, str) and not value.strip())


def _first(row: Mapping[str, Any], *columns: str) -> Any:
    for column in columns:
        value = row.get(column)
        if _present(value):
            return value
    return None


def _text(value: Any) -> str | None:
    return str(value).strip() if _present(value) else None


def _tickers(row: Mapping[str, Any]) -> dict[str, Any]:
    value = row.get("tickers")
    if not _present(value):
        return {}
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                return {"tickers": json.loads(text)}
            except json.JSONDecodeError:
                pass
        return {"tickers": [t for t in re.split(r"[|,;\s]+", text) if t]}
    return {"tickers": value}


def parse_time(value: Any) -> datetime | None:
    """A timestamp in one of the accepted forms as an aware UTC datetime, or None if it is none of them.

    Example:
        >>> [parse_time(v).isoformat() for v in ("2024-05-01T12:00:00Z", "2024-05-01 14:00", 1714564800)]
        ['2024-05-01T12:00:00+00:00', '2024-05-01T14:00:00+00:00', '2024-05-01T12:00:00+00:00']
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return _from_epoch(float(value))
    if not isinstance(value, str):
        return None
    text = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return _from_epoch(float(text))
    for parse in (datetime.fromisoformat, parsedate_to_datetime, _twitter_time):
        try:
            parsed = parse(text)
        except (ValueError, TypeError, IndexError):
            continue
        return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)
    return None


def _from_epoch(seconds: float) -> datetime | None:
    if seconds > 1e11:  # milliseconds: 1e11 seconds is the year 5138
        seconds /= 1000
    try:
        return datetime.fromtimestamp(seconds, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _twitter_time(text: str) -> datetime:
    return datetime.strptime(text, "%a %b %d %H:%M:%S %z %Y")


def _summary(error: ValidationError) -> str:
    details = error.errors(include_url=False, include_input=False)
    return "; ".join(f"{'.'.join(str(p) for p in d['loc']) or '<root>'}: {d['msg']}" for d in details[:5])
