"""Turning raw Kafka messages into ``TextEvent``s; what cannot be turned goes to the dead-letter queue.

Errors are data here (as in Bytewax): every message comes out either as an event or as a ``Rejected``
that keeps the original bytes and says why.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from pydantic import ValidationError

from finpulse.entities import EntityLinker
from finpulse.identity import event_id
from finpulse.schemas import NewsArticle, SocialPost, TextEvent
from finpulse.settings import Settings
from finpulse.streams import topics
from finpulse.text import normalize_text

if TYPE_CHECKING:
    from faust.types import Message


@dataclass(frozen=True, slots=True)
class RawMessage:
    """A consumed message and where it came from."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes

    @classmethod
    def of(cls, message: Message) -> RawMessage:
        """From a Faust message of a raw-serialized topic (a value that is not bytes is kept as empty)."""
        return cls(
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            timestamp_ms=int(message.timestamp * 1000),
            key=message.key,
            value=message.value if isinstance(message.value, bytes) else b"",
        )


@dataclass(frozen=True, slots=True)
class Rejected:
    """A message that could not become an event: the reason travels with the original bytes."""

    message: RawMessage
    reason: str
    error: str
    # Computed once: the DLQ row and the DLQ record both carry it, and a payload can be megabytes.
    payload_sha256: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "payload_sha256", hashlib.sha256(self.message.value).hexdigest())

    @property
    def dlq_id(self) -> str:
        # The timestamp keeps ids apart when offsets restart (the embedded broker keeps no log across runs)
        # while a redelivered message, which carries its stored timestamp, keeps its id.
        m = self.message
        return f"{m.topic}:{m.partition}:{m.offset}:{m.timestamp_ms}"


@dataclass(frozen=True, slots=True)
class ParsedBatch:
    events: list[TextEvent]
    rejected: list[Rejected]


def _summarize(error: ValidationError) -> tuple[str, str]:
    details = error.errors(include_url=False, include_input=False)
    if any(d["type"] == "json_invalid" for d in details):
        return "invalid_json", details[0]["msg"]
    fields = "; ".join(f"{'.'.join(str(p) for p in d['loc']) or '<root>'}: {d['msg']}" for d in details[:5])
    return "invalid_event", fields


class EventParser:
    """Validates raw news and social messages, normalizes their text and links entities, per batch."""

    def __init__(self, settings: Settings, linker: EntityLinker) -> None:
        self._max_bytes = settings.max_message_bytes
        self._max_chars = settings.max_text_chars
        self._linker = linker
        self._schema_by_topic: dict[str, type[NewsArticle] | type[SocialPost]] = {
            settings.topic(topics.NEWS_RAW): NewsArticle,
            settings.topic(topics.SOCIAL_RAW): SocialPost,
        }

    def parse(self, messages: Sequence[RawMessage]) -> ParsedBatch:
        rejected: list[Rejected] = []
        valid: list[tuple[RawMessage, NewsArticle | SocialPost, str]] = []
        for message in messages:
            outcome = self._validate(message)
            if isinstance(outcome, Rejected):
                rejected.append(outcome)
            else:
                valid.append((message, *outcome))
        linked = self._linker.link_many([text for _, _, text in valid])
        events = [
            _to_event(message, inbound, text, tickers)
            for (message, inbound, text), tickers in zip(valid, linked, strict=True)
        ]
        return ParsedBatch(events=events, rejected=rejected)

    def _validate(self, message: RawMessage) -> tuple[NewsArticle | SocialPost, str] | Rejected:
        if len(message.value) > self._max_bytes:
            return Rejected(message, "too_large", f"{len(message.value)} bytes > limit {self._max_bytes}")
        schema = self._schema_by_topic.get(message.topic)
        if schema is None:
            return Rejected(message, "unknown_topic", f"no schema for topic {message.topic!r}")
        try:
            document = message.value.decode("utf-8")
        except UnicodeDecodeError as err:
            return Rejected(message, "invalid_utf8", f"byte {err.start}: {err.reason}")
        try:
            inbound = schema.model_validate_json(document)
        except ValidationError as err:
            return Rejected(message, *_summarize(err))
        raw_text = f"{inbound.headline}\n{inbound.body}" if isinstance(inbound, NewsArticle) else inbound.text
        text = normalize_text(raw_text, max_chars=self._max_chars)
        if not text:
            return Rejected(message, "empty_text", "text is empty after normalization")
        return inbound, text


def _to_event(message: RawMessage, inbound: NewsArticle | SocialPost, text: str, linked: list[str]) -> TextEvent:
    explicit = inbound.tickers or []
    tickers = explicit + [t for t in linked if t not in explicit]
    if isinstance(inbound, NewsArticle):
        kind, source, event_time = "news", inbound.source.lower(), inbound.published_at
    else:
        kind, source, event_time = "social", inbound.platform.lower(), inbound.created_at
    # model_construct: every field was validated above; skipping a second validation keeps per-event cost low.
    return TextEvent.model_construct(
        event_id=event_id(kind, source, inbound.id),
        source_id=inbound.id,
        kind=kind,
        source=source,
        text=text,
        tickers=tickers,
        event_time=event_time.astimezone(UTC),
        ingested_at=datetime.fromtimestamp(message.timestamp_ms / 1000, tz=UTC),
        source_topic=message.topic,
        partition=message.partition,
        offset=message.offset,
    )
