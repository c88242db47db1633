"""Faust's recovery and commit path, patched so that no offset is committed before its record was processed.

faust-streaming 0.15.3 can commit past records it never processed (upstream issue #596; the off-by-one is
#606, fix PR #707; both open). The chain, measured here with a slow ``OffsetFetch`` after a restart:

1. On assignment Faust pauses the raw partitions only in its own bookkeeping; aiokafka keeps prefetching
   from the committed offset C.
2. When table recovery ends, ``Recovery.on_recovery_completed`` resumes those partitions *before*
   ``perform_seek()``: records C…K reach the agent's queue while the seek waits on ``OffsetFetch``.
3. The seek moves the read offset back to C while a fetched batch goes on with K+1, so the drain loop
   records a gap [C+1, K+1]; then ``flow_control.resume()`` clears every queue made with
   ``clear_on_resume=True``: C…K vanish unprocessed and their re-fetch is dropped as already read.
4. ``Consumer._new_offset`` folds the gap into the acked offsets and commits past it, and its head check
   is off by one (``min(acked) - committed > 1``), so C itself can be skipped as well.

``apply()`` (called by ``create_app``; idempotent) changes three things and nothing else:

* **Resume order**, in both places that resume streams (``on_recovery_completed`` and ``_resume_streams``):
  stop the consumer's flow (so the drain loop hands out nothing it fetched before), seek (the partitions
  still paused), then clear the queues, then resume partitions and flow, with no ``await`` between the
  clear and the resume.
* **Every partition is sought** in ``perform_seek``: aiokafka's ``seek_to_committed`` skips partitions
  committed at 0 or never committed, which then resumed from wherever the fetcher had got to while their
  prefetched records were thrown away (seen on ``indexes.partials``); and a committed 0 stays 0
  (upstream records it as None).
* **The commit rule** (``_new_offset``): commit only the run of acked offsets that starts at the committed
  offset. A missing head is held until its records are processed, or until a fetch from the committed
  offset shows that they do not exist (transaction markers and compaction leave real gaps). Holds longer
  than ``HOLD_LOG_S`` are logged and counted in ``COMMIT_HOLDS``.
* **Commits the broker accepted are remembered** (``CONFIRMED_COMMITS``): upstream records an offset as
  committed even when the commit failed in a rebalance, and ``streams/guard.py`` compares the broker's
  committed offsets with what it really accepted from this process.

Remove this module when a faust-streaming release carries the fixes; ``apply`` refuses other versions.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass, field
from importlib.metadata import version
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition
from faust.tables.recovery import Recovery
from faust.transport.consumer import Consumer, ensure_TP
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaDriverConsumer
from faust.types import TP
from faust.utils.functional import consecutive_numbers

from finpulse.streams.batches import exit_without_commit

log = logging.getLogger("finpulse.recovery")

PATCHED_VERSION = "0.15.3"
HOLD_LOG_S = 30.0
RECHECK_S = 5.0
STOPPED_FLOW_GRACE_S = 0.1  # upstream's wait_for_stopped_flow returns at once (its event is never cleared)
SEEK_DELAY_ENV = "FINPULSE_TEST_SEEK_DELAY_S"  # test-only: widens the race window (tests/integration)


@dataclass
class CommitHolds:
    """How often a commit waited at a missing offset, for the worker's counters."""

    started: int = 0
    over_log_threshold: int = 0
    confirmed_absent: int = 0
    since: dict[TP, float] = field(default_factory=dict)
    logged: set[TP] = field(default_factory=set)
    checking: set[TP] = field(default_factory=set)
    last_check: dict[TP, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, int]:
        return {
            "commit_holds": self.started,
            "commit_holds_over_30s": self.over_log_threshold,
            "commit_gaps_confirmed_absent": self.confirmed_absent,
            "commit_holds_open": len(self.since),
        }


COMMIT_HOLDS = CommitHolds()
CONFIRMED_COMMITS: dict[TP, int] = {}  # the highest offset the broker accepted from this process, per partition
_applied = False


def apply() -> None:
    """Patch faust-streaming in this process (idempotent)."""
    global _applied
    if _applied:
        return
    installed = version("faust-streaming")
    if installed != PATCHED_VERSION:
        raise RuntimeError(
            f"finpulse.streams.recovery patches faust-streaming {PATCHED_VERSION}, found {installed}: "
            "check whether upstream fixed #596/#606 and update or drop the patch"
        )
    Recovery.on_recovery_completed = _on_recovery_completed
    Recovery._resume_streams = _resume_streams
    Consumer.perform_seek = _perform_seek
    Consumer._new_offset = _new_offset
    AIOKafkaDriverConsumer._commit = _remembering(AIOKafkaDriverConsumer._commit)
    _applied = True


def _remembering(commit: Any) -> Any:
    async def commit_and_remember(self: Consumer, offsets: dict[TP, int]) -> bool:
        accepted = await commit(self, offsets)
        if accepted:
            for tp, offset in offsets.items():
                CONFIRMED_COMMITS[tp] = max(offset, CONFIRMED_COMMITS.get(tp, -1))
        return accepted

    return commit_and_remember


def install_seek_delay() -> None:
    """Test-only hook: delay every seek to the committed offsets by ``$FINPULSE_TEST_SEEK_DELAY_S``.

    A slow ``OffsetFetch`` after a restart is what opens the race this module closes; the regression test
    sets the variable so the race window is wide on every run, with or without ``apply()``.
    """
    delay_s = float(os.environ.get(SEEK_DELAY_ENV) or 0)
    if delay_s <= 0 or getattr(Consumer.perform_seek, "_finpulse_delayed", False):
        return
    perform_seek = Consumer.perform_seek

    async def delayed_perform_seek(self: Consumer) -> None:
        log.warning("test hook: delaying the seek to committed offsets by %.1fs", delay_s)
        await asyncio.sleep(delay_s)
        await perform_seek(self)

    delayed_perform_seek._finpulse_delayed = True  # type: ignore[attr-defined]
    Consumer.perform_seek = delayed_perform_seek


# --- resume order -------------------------------------------------------------------------------------


async def _seek_then_resume(recovery: Recovery, generation_id: int) -> bool:
    """Seek, then clear queues and resume, in that order; False when a newer rebalance took over."""
    app = recovery.app
    consumer = app.consumer
    assignment = consumer.assignment()
    if assignment:
        # Stop the drain loop first: records it fetched before the seek (a batch it is still handing out)
        # must not reach a queue after the seek moved the read offset back.
        consumer.stop_flow()
        await consumer.wait_for_stopped_flow()
        await asyncio.sleep(STOPPED_FLOW_GRACE_S)  # the drain loop wakes on the stopped flow and lets go
        recovery.log.info("Seek stream partitions to committed offsets.")
        await recovery._wait(consumer.perform_seek(), timeout=app.conf.broker_request_timeout)
    if app.consumer_generation_id != generation_id:
        recovery.log.warning("Rebalancing again after the seek (generation %s)", generation_id)
        return False
    _exit_if_the_broker_forgot(consumer)
    recovery.completed.set()
    # No await from here until the flow runs: a record fetched before the seek must not land in a queue
    # after it was cleared, and the partitions only deliver from the committed offset from now on.
    app.flow_control.resume()  # clears every queue made with clear_on_resume=True
    consumer.resume_partitions({tp for tp in assignment if not recovery._is_changelog_tp(tp)})
    consumer.resume_flow()
    return True


def _exit_if_the_broker_forgot(consumer: Consumer) -> None:
    """Committed offsets only move forward: one below what the broker accepted from this process means
    the broker lost its state (an in-memory broker restarted); resuming would consume from wherever it
    now points. ``streams/guard.py`` watches for the same between rebalances."""
    for tp in consumer.assignment():
        ours, theirs = CONFIRMED_COMMITS.get(tp), consumer._committed_offset.get(tp)
        if ours is not None and (theirs is None or theirs < ours):
            log.critical(
                "after the rebalance the broker's committed offset of %s:%d is %s, below the %d it accepted "
                "from this worker: the broker lost its state; exiting without committing",
                tp.topic, tp.partition, theirs, ours,
            )  # fmt: skip
            exit_without_commit("rebalance")


async def _on_recovery_completed(self: Recovery, generation_id: int = 0) -> None:
    self.log.info("Restore complete!")
    await self.app.on_rebalance_complete.send()
    self._set_recovery_ended()
    callbacks = [
        asyncio.ensure_future(
            table.on_recovery_completed(self.actives_for_table[table], self.standbys_for_table[table])
        )
        for table in self.tables.values()
    ]
    if callbacks:
        await asyncio.wait(callbacks)
    if self.app.consumer_generation_id != generation_id:
        self.log.warning(f"Recovery rebalancing again app id {self.app.consumer_generation_id} param {generation_id}")
        return
    if not await _seek_then_resume(self, generation_id):
        return
    await self.app._fetcher.maybe_start()
    self.tables.on_actives_ready()
    if not self.app.assignor.assigned_standbys():
        self.tables.on_standbys_ready()
    self.app.on_rebalance_end()
    self.log.info("Worker ready")


async def _resume_streams(self: Recovery, generation_id: int = 0) -> None:
    await self.app.on_rebalance_complete.send()
    if self.app.consumer_generation_id != generation_id:
        self.log.warning("Recovery rebalancing again")
        return
    if not await _seek_then_resume(self, generation_id):
        return
    await self.app._fetcher.maybe_start()
    self.tables.on_actives_ready()
    self.tables.on_standbys_ready()
    self.app.on_rebalance_end()
    self.log.info("Worker ready")


async def _perform_seek(self: Consumer) -> None:
    """Seek every partition to its committed offset, those at 0 or with none included.

    aiokafka's ``seek_to_committed`` seeks only offsets above 0, so a partition committed at 0, or never
    committed, kept whatever position the fetcher had reached while its records were being thrown away
    (upstream also recorded a committed 0 as None). Those are sought to 0, or to where the reset policy
    starts a partition without a committed offset.
    """
    committed = await self.seek_to_committed()
    acked_topics = self.app.topics.acks_enabled_for  # input topics; table changelogs keep upstream's way
    unsought = [tp for tp, offset in committed.items() if (not offset or offset < 0) and acked_topics(tp.topic)]
    if unsought:
        starts = await _reset_positions(self, [tp for tp in unsought if committed[tp] is None or committed[tp] < 0])
        for tp in unsought:
            start = committed[tp] if committed[tp] == 0 else starts.get(ensure_TP(tp))
            if start is not None:
                await self._seek(tp, start)
    self._read_offset.update(
        {tp: offset if offset is not None and offset >= 0 else None for tp, offset in committed.items()}
    )
    self._committed_offset.update(
        {ensure_TP(tp): offset for tp, offset in committed.items() if offset is not None and offset >= 0}
    )


async def _reset_positions(consumer: Consumer, tps: list[TP]) -> dict[TP, int]:
    """Where partitions without a committed offset start: the log start, or its end for ``latest``."""
    if not tps:
        return {}
    if consumer.app.conf.consumer_auto_offset_reset == "latest":
        offsets = await consumer.highwaters(*tps)
    else:
        offsets = await consumer.earliest_offsets(*tps)
    return {ensure_TP(tp): offset for tp, offset in offsets.items() if offset is not None}


# --- commit rule --------------------------------------------------------------------------------------


def _new_offset(self: Consumer, tp: TP) -> int | None:
    """The offset to commit for ``tp``: the end of the acked run that starts at the committed offset."""
    acked: list[int] = self._acked[tp]
    self._gap.pop(tp, None)  # the drain loop's guesses; a gap counts only once a fetch confirmed it
    if not acked:
        return None
    acked.sort()
    committed: int | None = self._committed_offset[tp]
    if committed is not None and acked[0] > committed:
        _hold(self, tp, committed, acked[0])
        return None
    _release(tp)
    run = next(consecutive_numbers(acked))
    acked[: len(run)] = []
    self._acked_index[tp].difference_update(run)
    return run[-1] + 1


def _hold(consumer: Consumer, tp: TP, committed: int, first_acked: int) -> None:
    """Offsets ``committed`` … ``first_acked - 1`` were not processed: commit nothing until they are."""
    holds, now = COMMIT_HOLDS, time.monotonic()
    if tp not in holds.since:
        holds.since[tp] = now
        holds.started += 1
    elif now - holds.since[tp] > HOLD_LOG_S and tp not in holds.logged:
        holds.logged.add(tp)
        holds.over_log_threshold += 1
        log.error(
            "commit of %s:%d held for %.0fs: offsets %d..%d were never processed",
            tp.topic, tp.partition, now - holds.since[tp], committed, first_acked - 1,
        )  # fmt: skip
    if tp not in holds.checking and now - holds.last_check.get(tp, 0.0) >= RECHECK_S:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # called outside the worker's loop: hold without checking
            return
        holds.checking.add(tp)
        holds.last_check[tp] = now
        loop.create_task(_confirm_absent(consumer, tp, committed, first_acked))


def _release(tp: TP) -> None:
    holds = COMMIT_HOLDS
    holds.since.pop(tp, None)
    holds.logged.discard(tp)
    holds.last_check.pop(tp, None)


async def _confirm_absent(consumer: Consumer, tp: TP, committed: int, first_acked: int) -> None:
    """Fetch from the committed offset; if the log has nothing before ``first_acked``, ack the gap."""
    try:
        first_existing = await first_offset_from(_bootstrap_servers(consumer), tp, committed)
        if first_existing is not None and first_existing >= first_acked and consumer._committed_offset[tp] == committed:
            COMMIT_HOLDS.confirmed_absent += 1
            log.info("offsets %d..%d of %s:%d do not exist: committing past them", committed, first_acked - 1, *tp)
            missing = range(committed, first_acked)
            consumer._acked[tp].extend(missing)
            consumer._acked_index[tp].update(missing)
    except Exception:  # a failed check keeps the hold; the next commit retries it
        log.warning("could not check offsets %d..%d of %s:%d", committed, first_acked - 1, *tp, exc_info=True)
    finally:
        COMMIT_HOLDS.checking.discard(tp)


async def first_offset_from(bootstrap_servers: str, tp: TP, offset: int, timeout_s: float = 10.0) -> int | None:
    """The offset of the first record at or after ``offset`` in the log, None if none came in time."""
    # "earliest": offsets below the log start (retention, deleted records) do not exist either
    reader = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers, group_id=None, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await reader.start()
    try:
        partition = TopicPartition(tp.topic, tp.partition)
        reader.assign([partition])
        reader.seek(partition, offset)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            batches = await reader.getmany(partition, timeout_ms=500, max_records=1)
            records = batches.get(partition, [])
            if records:
                return records[0].offset
        return None
    finally:
        await reader.stop()


async def group_committed_offset(bootstrap_servers: str, group_id: str, tp: TP) -> int | None:
    """The group's committed offset of ``tp`` as the broker has it now (None when there is none)."""
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, group_id=group_id, enable_auto_commit=False)
    await reader.start()
    try:
        return await reader.committed(TopicPartition(tp.topic, tp.partition))
    finally:
        await reader.stop()


def _bootstrap_servers(consumer: Any) -> str:
    return ",".join(f"{url.host}:{url.port or 9092}" for url in consumer.app.conf.broker)
