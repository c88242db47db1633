"""Reading what the pipeline published, straight from the broker."""

from __future__ import annotations

import asyncio
import time

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import ConsumerRecord


async def _read(bootstrap_servers: str, topic: str, expected: int, timeout_s: float) -> list[ConsumerRecord]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap_servers, auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    records: list[ConsumerRecord] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(records) < expected and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for partition_records in batches.values():
                records.extend(partition_records)
    finally:
        await consumer.stop()
    return records


def read_topic(bootstrap_servers: str, topic: str, expected: int, timeout_s: float = 30.0) -> list[ConsumerRecord]:
    """Every record of ``topic`` from the start, until ``expected`` were seen or the timeout passed."""
    return asyncio.run(_read(bootstrap_servers, topic, expected, timeout_s))


def raw_positions(
    bootstrap_servers: str, topics: list[str], keys: set[str], expected: int
) -> list[tuple[str, int, int]]:
    """(topic, partition, offset) of the records whose key is in ``keys``: where lost events sat."""
    records = [r for topic in topics for r in read_topic(bootstrap_servers, topic, expected, timeout_s=10.0)]
    return sorted((r.topic, r.partition, r.offset) for r in records if r.key is not None and r.key.decode() in keys)


def committed_offsets(bootstrap_servers: str, group_id: str, topics: list[str]) -> dict[tuple[str, int], int | None]:
    """The consumer group's committed offsets of ``topics``, per (topic, partition), read without joining."""
    from aiokafka.structs import TopicPartition

    async def read() -> dict[tuple[str, int], int | None]:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, group_id=group_id, enable_auto_commit=False)
        await consumer.start()
        try:
            await consumer.topics()
            partitions = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or ())]
            return {(tp.topic, tp.partition): await consumer.committed(tp) for tp in partitions}
        finally:
            await consumer.stop()

    return asyncio.run(read())
