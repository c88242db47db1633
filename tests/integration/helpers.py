"""Reading what the pipeline published, straight from the broker."""

from __future__ import annotations

import asyncio
import time

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import ConsumerRecord


async def _read(bootstrap_servers: str, topic: str, expected: int, timeout_s: float) -> list[ConsumerRecord]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap_servers, auto_offset_reset="earliest", group_id=None
    )
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


def read_topic(
    bootstrap_servers: str, topic: str, expected: int, timeout_s: float = 30.0
) -> list[ConsumerRecord]:
    """Every record of ``topic`` from the start, until ``expected`` were seen or the timeout passed."""
    return asyncio.run(_read(bootstrap_servers, topic, expected, timeout_s))
