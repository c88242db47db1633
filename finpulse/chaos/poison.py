"""Poison internal records: garbage on ``<prefix>indexes.partials`` and in the ``opinion-index`` changelog.

Both topics are internal, but anything with access to the broker can write to them, and a worker that
cannot apply a record it consumed crashes without committing: the worker that takes the partition over
reads the same record and crashes too (before issue 10 the index agent did exactly that). The promise
checked here: each such record is rejected on its own, logged and dead-lettered with its reason
(``dlq_events`` and ``events.dlq``), the worker stays up, and the valid events sent after it are stored
and indexed.

Steps: a valid feed is stored and indexed; poison partials (bad JSON, wrong shapes, a bad tick, a partial
under another key's name, an empty value) are sent, then more valid events; a corrupt row is written
to the table's changelog and the worker is killed and restarted, so that it recovers the table from the
changelog and meets the row; then more valid events. ``recover_s`` is the time from the first poison
partial to its dead-lettering with the valid events sent after it stored.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer

from finpulse.chaos.accounting import read_store, tally
from finpulse.chaos.result import ChaosResult, ScenarioSize
from finpulse.chaos.stack import drain, indexed_events, scenario_settings, wait_until
from finpulse.chaos.traffic import Accepted, Feeder, Message, new_feed_producer, valid_messages
from finpulse.harness import EmbeddedPipeline, WorkerProcess
from finpulse.settings import Settings
from finpulse.streams import topics
from finpulse.streams.index_agent import TABLE_NAME

NAME = "poison-message"
WAIT_S = 240.0

POISON_PARTIALS: tuple[tuple[bytes | None, bytes, str], ...] = (
    # (key, value, the reason the worker must give)
    (b"market:all", b"\xff\xfe not JSON, not UTF-8", "invalid_json"),
    (b"ticker:AAPL", b'{"scope": "ticker", "key": "AAPL", "w": [["60", "x"]], "hw": {}}', "invalid_partial"),
    (b"~tick~0", b'{"tick": "soon"}', "invalid_tick"),
    (b"ticker:MSFT", b'{"scope": "ticker", "key": "TSLA", "w": [], "hw": {}}', "key_mismatch"),
    (b"market:all", b"", "empty_value"),
)
# The latest changelog row of a key the feed keeps updating: after the restart, its state is unreadable.
CORRUPT_ROW = (b"source:social", b'{"scope": "source", "key": "social", "o": 12, "hw": {"', "invalid_json")


def run(settings: Settings, size: ScenarioSize, *, seed: int = 0) -> ChaosResult:
    own = scenario_settings(settings, "poison")
    per_phase = max(50, size.events // 15)
    phases = [valid_messages(per_phase, seed=seed + phase, run_id=f"poison{phase}") for phase in range(3)]
    window_s = max(own.index_windows_s)
    with EmbeddedPipeline(own) as pipeline:
        worker = pipeline.worker
        assert worker is not None
        accepted = _send(pipeline, phases[0])
        wait_until(lambda: _drained(worker, accepted, window_s), WAIT_S)

        injected_at = time.monotonic()
        poison = _send(pipeline, [Message(topics.INDEX_PARTIALS, v, k, None, "poison") for k, v, _ in POISON_PARTIALS])
        accepted += poison + _send(pipeline, phases[1])
        partials_drained = wait_until(lambda: _drained(worker, accepted, window_s), WAIT_S)
        recover_s = time.monotonic() - injected_at if partials_drained else None
        up_after_partials = _alive(worker)

        changelog = asyncio.run(_write_changelog_row(pipeline.bootstrap_servers, own, *CORRUPT_ROW[:2]))
        worker.kill()  # the next worker recovers the table from the changelog, the corrupt row included
        worker = pipeline.worker = pipeline.start_worker()
        accepted += [changelog] + _send(pipeline, phases[2])
        wait_until(lambda: _drained(worker, accepted, window_s), WAIT_S)
        up_after_changelog = _alive(worker)

        result, _ = drain(worker.query, accepted, timeout_s=60)
        indexed = indexed_events(worker.query, window_s)
        expected = {p.position: reason for p, (_, _, reason) in zip(poison, POISON_PARTIALS, strict=True)}
        expected[changelog.position] = CORRUPT_ROW[2]
        published = asyncio.run(_dlq_reasons(pipeline.bootstrap_servers, own.topic(topics.EVENTS_DLQ), expected))
    return ChaosResult.of(
        NAME,
        result,
        recover_s=recover_s,
        details={
            "indexed": indexed,
            "dlq_reasons_expected": _named(expected),
            "dlq_reasons_published": _named(published),
        },
        checks={
            "worker up after poison partials": up_after_partials,
            "worker up after a corrupt changelog row": up_after_changelog,
            "each poison record on events.dlq with its reason": published == expected,
            "every stored event indexed": indexed == result.stored,
        },
    )


def _send(pipeline: EmbeddedPipeline, messages: Sequence[Message]) -> list[Accepted]:
    feeder = Feeder(pipeline.bootstrap_servers, pipeline.settings, messages).send_all()
    if feeder.refused:
        raise RuntimeError(f"the broker refused {len(feeder.refused)} messages: {feeder.refused[0].error}")
    return feeder.accepted


async def _write_changelog_row(bootstrap_servers: str, settings: Settings, key: bytes, value: bytes) -> Accepted:
    """One record alone in its batch, on the partition the table's own writes of ``key`` use."""
    topic = f"{settings.worker_id}-{TABLE_NAME}-changelog"
    producer = new_feed_producer(bootstrap_servers)
    await producer.start()
    try:
        sent = await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()
    return Accepted(Message(topic, value, key, None, "poison"), sent.topic, sent.partition, sent.offset)


def _alive(worker: WorkerProcess) -> bool:
    return worker.process is not None and worker.process.poll() is None and bool(worker.health().get("ready"))


def _drained(worker: WorkerProcess, accepted: Sequence[Accepted], window_s: int) -> bool:
    """Every accepted message stored or dead-lettered, and every stored event counted by the index."""
    result = tally(accepted, read_store(worker.query))
    return result.lost == 0 and indexed_events(worker.query, window_s) >= result.stored


def _named(reasons: dict[tuple[str, int, int], str]) -> dict[str, str]:
    return {f"{topic}:{partition}@{offset}": reason for (topic, partition, offset), reason in sorted(reasons.items())}


async def _dlq_reasons(
    bootstrap_servers: str, dlq_topic: str, wanted: dict[tuple[str, int, int], str], timeout_s: float = 30.0
) -> dict[tuple[str, int, int], str]:
    """The ``finpulse.reason`` header of each ``events.dlq`` record from a wanted (topic, partition, offset)."""
    consumer = AIOKafkaConsumer(dlq_topic, bootstrap_servers=bootstrap_servers, auto_offset_reset="earliest")
    await consumer.start()
    found: dict[tuple[str, int, int], str] = {}
    deadline = time.monotonic() + timeout_s
    try:
        while not wanted.keys() <= found.keys() and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    headers = {name: value.decode() for name, value in record.headers}
                    origin = (
                        headers["finpulse.source_topic"],
                        int(headers["finpulse.source_partition"]),
                        int(headers["finpulse.source_offset"]),
                    )
                    if origin in wanted:
                        found[origin] = headers["finpulse.reason"]
    finally:
        await consumer.stop()
    return found
