"""The agents' offset guard (streams/guard.py) against the real embedded broker."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from types import SimpleNamespace

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from faust.types import TP
from yarl import URL

from finpulse.streams import guard as guard_module
from finpulse.streams.broker import EmbeddedBroker
from finpulse.streams.guard import OffsetGuard, skipped_ranges
from finpulse.streams.produce import OutboundRecord, new_producer, publish_batch

pytestmark = [pytest.mark.integration]


@dataclass(frozen=True)
class Message:
    topic: str
    partition: int
    offset: int


class Exited(Exception):
    pass


def batch(topic: str, offsets: Sequence[int], partition: int = 0) -> list[Message]:
    return [Message(topic, partition, offset) for offset in offsets]


@pytest.fixture
def exits(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    seen: list[str] = []

    def exit_without_commit(what: str) -> None:
        seen.append(what)
        raise Exited(what)

    monkeypatch.setattr(guard_module, "exit_without_commit", exit_without_commit)
    return seen


@pytest.fixture
def topic_with_ten_records(broker: EmbeddedBroker) -> str:
    name = f"guard-{uuid.uuid4().hex[:8]}"

    async def fill() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)])
        finally:
            await admin.close()
        producer = new_producer(broker.bootstrap_servers)
        await producer.start()
        try:
            await publish_batch(producer, name, [OutboundRecord(key=b"k", value=b"%d" % i) for i in range(10)])
        finally:
            await producer.stop()

    asyncio.run(fill())
    return name


def fake_app(broker: EmbeddedBroker, committed: dict[TP, int]) -> SimpleNamespace:
    async def earliest_offsets(*tps: TP) -> dict[TP, int]:
        return {tp: 0 for tp in tps}

    consumer = SimpleNamespace(_committed_offset=committed, earliest_offsets=earliest_offsets)
    return SimpleNamespace(
        consumer=consumer, conf=SimpleNamespace(broker=[URL(f"kafka://{broker.bootstrap_servers}")], id="guard-test")
    )


def test_skipped_ranges() -> None:
    assert skipped_ranges(None, [5, 6, 9]) == [range(7, 9)]
    assert skipped_ranges(3, []) == []


def test_a_batch_that_continues_its_partition_passes(
    broker: EmbeddedBroker, topic_with_ten_records: str, exits: list[str]
) -> None:
    tp = TP(topic_with_ten_records, 0)
    guard = OffsetGuard(fake_app(broker, {tp: 2}), what="scoring")
    guard.on_assigned({tp})
    asyncio.run(guard.check(batch(tp.topic, [2, 3, 4])))
    guard.advance(batch(tp.topic, [2, 3, 4]))
    asyncio.run(guard.check(batch(tp.topic, [5, 6])))
    asyncio.run(guard.check(batch(tp.topic, [0, 1, 2, 3, 4, 5])))  # a redelivery is not a gap
    assert exits == []


def test_a_batch_that_starts_past_the_committed_offset_exits_without_commit(
    broker: EmbeddedBroker, topic_with_ten_records: str, exits: list[str]
) -> None:
    tp = TP(topic_with_ten_records, 0)
    guard = OffsetGuard(fake_app(broker, {tp: 2}), what="scoring")
    guard.on_assigned({tp})
    with pytest.raises(Exited):
        asyncio.run(guard.check(batch(tp.topic, [6, 7])))  # offsets 2..5 exist and were never delivered
    assert exits == ["scoring"]


def test_a_batch_that_skips_offsets_inside_exits(
    broker: EmbeddedBroker, topic_with_ten_records: str, exits: list[str]
) -> None:
    tp = TP(topic_with_ten_records, 0)
    guard = OffsetGuard(fake_app(broker, {tp: 0}), what="index")
    with pytest.raises(Exited):
        asyncio.run(guard.check(batch(tp.topic, [0, 1, 4, 5])))
