"""What a scenario sends, and a producer that records where Kafka put each message.

The accounting needs, for every message Kafka accepted, its position (topic, partition, offset: how a DLQ
row is matched, and where the committed offsets must end) and, for an event, its identity (how a stored
row is matched). ``harness.produce`` publishes whole record batches and returns only a count, so the
scenarios send through ``Feeder``, one ``send`` per message, and keep each message's ``RecordMetadata``.
A message the producer or the broker refused was never accepted by Kafka: it is kept apart, not counted
as sent, so it cannot be counted as lost.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from aiokafka import AIOKafkaProducer

from finpulse.feed import generate, to_message
from finpulse.identity import EventKey
from finpulse.schemas import NewsArticle, SocialPost
from finpulse.settings import Settings

# Large enough for the hostile suite's 10 MB messages: whether such a message is accepted is the broker's
# call (and the worker's, which sends it to the DLQ), not the test producer's.
MAX_REQUEST_BYTES = 16 << 20


@dataclass(frozen=True, slots=True)
class Message:
    """One message to send. ``identity`` is the event it carries if the pipeline may store it."""

    topic: str  # without the prefix
    value: bytes
    key: bytes | None
    identity: EventKey | None
    category: str = "valid"  # "valid" for feed events, a hostile category otherwise

    @property
    def must_store(self) -> bool:
        """A feed event: the pipeline must store it (the DLQ is not an acceptable place for it)."""
        return self.category == "valid"


@dataclass(frozen=True, slots=True)
class Accepted:
    """A message Kafka acknowledged, and where it sits."""

    message: Message
    topic: str  # with the prefix
    partition: int
    offset: int

    @property
    def position(self) -> tuple[str, int, int]:
        return self.topic, self.partition, self.offset


@dataclass(frozen=True, slots=True)
class Refused:
    message: Message
    error: str


def identity_of(event: NewsArticle | SocialPost) -> EventKey:
    if isinstance(event, NewsArticle):
        return EventKey("news", event.source.lower(), event.id)
    return EventKey("social", event.platform.lower(), event.id)


def message_of(event: NewsArticle | SocialPost, category: str = "valid") -> Message:
    topic, key, value = to_message(event)
    return Message(topic, value, key, identity_of(event), category)


def valid_messages(
    count: int, *, seed: int, run_id: str, start: datetime | None = None, span: timedelta | None = None
) -> list[Message]:
    """``count`` events of the built-in steady feed, ids prefixed with ``run_id`` so runs never collide.

    ``start`` and ``span``: the market time the events cover (``feed.generate``'s defaults without them).
    """
    events = generate("steady", events=count, seed=seed, start=start, span=span)
    return [message_of(event.model_copy(update={"id": f"{run_id}-{event.id}"})) for event in events]


def event_time(message: Message) -> datetime:
    """When a feed event happened: its ``published_at`` (news) or ``created_at`` (social)."""
    document = json.loads(message.value)
    return datetime.fromisoformat(document.get("published_at") or document["created_at"])


def new_feed_producer(bootstrap_servers: str) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers,
        linger_ms=5,
        max_batch_size=1 << 20,
        max_request_size=MAX_REQUEST_BYTES,
        acks="all",
        enable_idempotence=False,
    )


@dataclass
class Feeder:
    """Sends messages from a background thread, at most ``rate`` per second, recording each outcome.

    ``start()`` returns at once; ``wait()`` blocks until everything was sent (or refused).
    """

    bootstrap_servers: str
    settings: Settings
    messages: Sequence[Message]
    rate: float | None = None
    chunk: int = 100
    accepted: list[Accepted] = field(default_factory=list)
    refused: list[Refused] = field(default_factory=list)
    first_sent_at: float | None = None  # wall clock (time.time()), comparable with stored_at
    last_sent_at: float | None = None
    _thread: threading.Thread | None = None
    _error: BaseException | None = None

    def start(self) -> Feeder:
        self._thread = threading.Thread(target=self._run, name="chaos-feeder", daemon=True)
        self._thread.start()
        return self

    def wait(self, timeout_s: float = 600.0) -> Feeder:
        assert self._thread is not None
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            raise TimeoutError(f"the feed did not finish within {timeout_s}s")
        if self._error is not None:
            raise RuntimeError("the feed failed") from self._error
        return self

    @property
    def done(self) -> bool:
        return self._thread is not None and not self._thread.is_alive()

    def send_all(self) -> Feeder:
        return self.start().wait()

    def _run(self) -> None:
        try:
            asyncio.run(self._send())
        except BaseException as error:  # noqa: BLE001 - handed to the caller by wait()
            self._error = error

    async def _send(self) -> None:
        producer = new_feed_producer(self.bootstrap_servers)
        await producer.start()
        started = time.monotonic()
        self.first_sent_at = time.time()
        try:
            for begin in range(0, len(self.messages), self.chunk):
                await self._send_chunk(producer, self.messages[begin : begin + self.chunk])
                if self.rate:
                    sent = begin + self.chunk
                    await asyncio.sleep(max(0.0, sent / self.rate - (time.monotonic() - started)))
        finally:
            self.last_sent_at = time.time()
            await producer.stop()

    async def _send_chunk(self, producer: AIOKafkaProducer, chunk: Sequence[Message]) -> None:
        pending: list[tuple[Message, asyncio.Future]] = []
        for message in chunk:
            try:
                delivery = await producer.send(self.settings.topic(message.topic), message.value, key=message.key)
            except Exception as error:  # noqa: BLE001 - refused by the producer: never reached Kafka
                self.refused.append(Refused(message, f"{type(error).__name__}: {error}"))
                continue
            pending.append((message, delivery))
        outcomes = await asyncio.gather(*(delivery for _, delivery in pending), return_exceptions=True)
        for (message, _), outcome in zip(pending, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                self.refused.append(Refused(message, f"{type(outcome).__name__}: {outcome}"))
            else:
                self.accepted.append(Accepted(message, outcome.topic, outcome.partition, outcome.offset))


def end_offsets(accepted: Sequence[Accepted]) -> dict[tuple[str, int], int]:
    """Per (topic, partition): the offset after the last accepted message, where a drained group commits.

    Taken from what the producer got back, not from the broker's ListOffsets, which Tansu 0.6 answers
    with an end offset that can run ahead of the records a fetch returns.
    """
    ends: dict[tuple[str, int], int] = {}
    for item in accepted:
        key = (item.topic, item.partition)
        ends[key] = max(ends.get(key, 0), item.offset + 1)
    return ends
