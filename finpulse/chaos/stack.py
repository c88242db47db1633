"""A fresh embedded stack per scenario, and the waits every scenario needs.

Each scenario gets its own data directory (so its own chDB) and its own embedded broker, or, when the
settings name a broker, its own topic prefix and consumer group: no scenario sees another's events.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from finpulse.chaos.accounting import Query, StoreSnapshot, Tally, combined, read_store, tally
from finpulse.chaos.traffic import Accepted
from finpulse.harness import EmbeddedPipeline, WorkerFailed, WorkerProcess
from finpulse.settings import Settings
from finpulse.streams import topics


def scenario_settings(settings: Settings, name: str, **overrides: object) -> Settings:
    run = f"{name}-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:4]}"
    update: dict[str, object] = {"data_dir": settings.data_dir / "chaos" / run, **overrides}
    if settings.broker:  # a shared broker: a topic prefix and a consumer group of its own
        update |= {"topic_prefix": f"{settings.topic_prefix}{run}.", "worker_id": f"{settings.worker_id}-{run}"}
    return settings.model_copy(update=update)


def raw_topics(settings: Settings) -> list[str]:
    return [settings.topic(name) for name in topics.RAW_TOPICS]


def extra_worker(pipeline: EmbeddedPipeline, name: str, settings: Settings | None = None) -> WorkerProcess:
    """Another worker process of the same group, with a data directory (and so a chDB) of its own."""
    own = (settings or pipeline.settings).model_copy(update={"data_dir": pipeline.settings.data_dir / name})
    return WorkerProcess(own, pipeline.bootstrap_servers, own.data_dir / "worker.log")


def committed_offsets(
    bootstrap_servers: str, group_id: str, topic_names: Sequence[str]
) -> dict[tuple[str, int], int | None]:
    """The group's committed offsets per (topic, partition), read without joining the group."""

    async def read() -> dict[tuple[str, int], int | None]:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, group_id=group_id, enable_auto_commit=False)
        await consumer.start()
        try:
            await consumer.topics()
            partitions = [
                TopicPartition(t, p) for t in topic_names for p in sorted(consumer.partitions_for_topic(t) or ())
            ]
            return {(tp.topic, tp.partition): await consumer.committed(tp) for tp in partitions}
        finally:
            await consumer.stop()

    return asyncio.run(read())


def wait_until(check: Callable[[], bool], timeout_s: float, poll_s: float = 0.5) -> bool:
    """Poll ``check`` until it holds or the time is up; whether it held. A worker that cannot answer
    (restarting, or gone) counts as "not yet"."""
    deadline = time.monotonic() + timeout_s
    while True:
        if _holds(check):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll_s)


def _holds(check: Callable[[], bool]) -> bool:
    try:
        return check()
    except (httpx.HTTPError, WorkerFailed, RuntimeError):
        return False


def supervise(pipeline: EmbeddedPipeline, exits: list[int]) -> None:
    """Restart the worker if it exited on its own, as a supervisor would (its exit code goes to ``exits``).

    A worker exits non-zero without committing when it cannot vouch for a batch (``streams/guard.py``):
    the next worker redelivers, so the scenario goes on and reports how often that happened.
    """
    worker = pipeline.worker
    if worker is not None and worker.process is not None and worker.process.poll() is not None:
        exits.append(worker.process.returncode)
        pipeline.worker = pipeline.start_worker()


def process_cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system, all threads) a live process has used; None where /proc cannot tell."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime (proc(5))


def stored_rows(query: Query) -> int:
    return int(query("SELECT count() AS n FROM scored_events")[0]["n"])


def indexed_events(query: Query, window_s: int) -> int:
    """Events the streamed index counted on ``market:all`` (every event counts there once per window size)."""
    found = query(
        "SELECT sum(buzz + late_events) AS n FROM opinion_index_final "
        f"WHERE scope = 'market' AND key = 'all' AND window_s = {int(window_s)}"
    )[0]["n"]
    return int(found or 0)


def wait_for_progress(query: Query, beyond: int, timeout_s: float) -> float | None:
    """Seconds until ``scored_events`` holds more than ``beyond`` rows; None if it did not in time."""
    started = time.monotonic()
    if wait_until(lambda: stored_rows(query) > beyond, timeout_s, poll_s=0.2):
        return time.monotonic() - started
    return None


def drain(
    query: Query,
    accepted: Sequence[Accepted],
    timeout_s: float,
    quiet_s: float = 30.0,
    *,
    elsewhere: StoreSnapshot | None = None,
) -> tuple[Tally, StoreSnapshot]:
    """Wait until nothing accepted is missing, or nothing moved for ``quiet_s``, or the time is up.

    ``elsewhere``: what another (stopped) worker stored in its own chDB, counted with this one's.
    """
    deadline = time.monotonic() + timeout_s
    last_seen, moved_at = -1, time.monotonic()
    while True:
        snapshot = read_store(query) if elsewhere is None else combined(read_store(query), elsewhere)
        result = tally(accepted, snapshot)
        now = time.monotonic()
        if result.stored + result.dlq != last_seen:
            last_seen, moved_at = result.stored + result.dlq, now
        if result.lost == 0 or now >= deadline or now - moved_at >= quiet_s:
            return result, snapshot
        time.sleep(1.0)


def wait_for_commits(
    bootstrap_servers: str, settings: Settings, expected: dict[tuple[str, int], int], timeout_s: float
) -> dict[tuple[str, int], int | None]:
    """Wait until the group committed ``expected`` on every input partition; the last offsets read."""
    names = raw_topics(settings)
    committed: dict[tuple[str, int], int | None] = {}

    def caught_up() -> bool:
        nonlocal committed
        committed = committed_offsets(bootstrap_servers, settings.worker_id, names)
        return commits_at_end(committed, expected)

    wait_until(caught_up, timeout_s, poll_s=1.0)
    return committed


def commits_at_end(committed: dict[tuple[str, int], int | None], expected: dict[tuple[str, int], int]) -> bool:
    """Every input partition committed exactly its end (a partition nothing was sent to: nothing or 0)."""
    return all((committed.get(key) or 0) == expected.get(key, 0) for key in committed | expected)
