"""Two last lines of defence for "nothing lost": a batch must start where its partition left off, and the
broker must still hold what this worker committed.

``OffsetGuard`` knows each assigned partition's next offset (the committed offset at assignment, then the
end of every processed batch). A batch that starts past it, or skips offsets inside, ends the process
without committing, so the next owner of the partition redelivers the records in between, unless a fetch
shows those offsets do not exist (transaction markers, compaction). It catches any future path that
drops fetched records before an agent sees them, the way ``streams/recovery.py``'s race did.

``CommittedOffsetsWatch`` reads the group's committed offsets every few seconds. Committed offsets only
move forward; if the broker reports less than this worker committed (an in-memory broker that restarted
empty, a lost topic), carrying on would consume from wherever the broker now says and silently skip or
re-read data, so the worker exits non-zero without committing instead.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Protocol

import faust
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition
from faust.types import TP

from finpulse.streams.batches import exit_without_commit
from finpulse.streams.recovery import CONFIRMED_COMMITS, first_offset_from, group_committed_offset

log = logging.getLogger("finpulse.guard")

WATCH_INTERVAL_S = 5.0


class Positioned(Protocol):
    topic: str
    partition: int
    offset: int


def offsets_by_partition(messages: Iterable[Positioned]) -> dict[TP, list[int]]:
    """Offsets of a batch per partition, ascending."""
    grouped: dict[TP, list[int]] = defaultdict(list)
    for message in messages:
        grouped[TP(message.topic, message.partition)].append(message.offset)
    return {tp: sorted(offsets) for tp, offsets in grouped.items()}


def skipped_ranges(expected: int | None, offsets: Sequence[int]) -> list[range]:
    """Offsets missing before and inside ``offsets`` (ascending), given the partition's next ``expected``.

    >>> skipped_ranges(100, [100, 101, 102])
    []
    >>> skipped_ranges(100, [103, 104, 107])
    [range(100, 103), range(105, 107)]
    >>> skipped_ranges(100, [98, 99, 100])  # a redelivery of stored records is not a gap
    []
    """
    missing: list[range] = []
    if expected is not None and offsets and offsets[0] > expected:
        missing.append(range(expected, offsets[0]))
    for previous, current in itertools.pairwise(offsets):
        if current > previous + 1:
            missing.append(range(previous + 1, current))
    return missing


class OffsetGuard:
    """Checks every batch of an agent against its partitions' next offsets before it is processed.

    The next offset of a partition is the furthest anyone is known to have processed: the end of the last
    batch this process handled, or the committed offset read after an assignment (another worker may have
    moved it on meanwhile), whichever is further.
    """

    def __init__(self, app: faust.App, what: str) -> None:
        self._app = app
        self._what = what
        self._next: dict[TP, int] = {}
        self._assigned_since_last_batch: set[TP] = set()

    def on_assigned(self, partitions: Iterable[TP]) -> None:
        self._assigned_since_last_batch.update(partitions)

    async def check(self, messages: Sequence[Positioned]) -> None:
        """Return if the batch continues each partition; otherwise exit without committing."""
        for tp, offsets in offsets_by_partition(messages).items():
            expected = await self._expected(tp)
            for missing in skipped_ranges(expected, offsets):
                if not await self._absent(tp, missing):
                    log.critical(
                        "%s batch skips offsets %d..%d of %s:%d (next expected %s): records fetched but never "
                        "delivered; exiting so the next owner redelivers them",
                        self._what, missing.start, missing.stop - 1, tp.topic, tp.partition, expected,
                    )  # fmt: skip
                    exit_without_commit(self._what)

    def advance(self, messages: Sequence[Positioned]) -> None:
        """The batch was processed: its partitions continue after its last offsets."""
        for tp, offsets in offsets_by_partition(messages).items():
            self._next[tp] = max(self._next.get(tp, 0), offsets[-1] + 1)
            self._assigned_since_last_batch.discard(tp)

    async def _expected(self, tp: TP) -> int | None:
        ours = self._next.get(tp)
        if ours is not None and tp not in self._assigned_since_last_batch:
            return ours
        consumer = self._app.consumer
        committed = consumer._committed_offset.get(tp)  # faust keeps no public accessor; set by the seek
        if committed is None:  # not sought yet in this generation (a batch buffered across a rebalance)
            committed = await group_committed_offset(self._servers(), self._app.conf.id, tp)
        if committed is None and ours is None:
            committed = (await consumer.earliest_offsets(tp)).get(tp)
        known = [offset for offset in (ours, committed) if offset is not None]
        return max(known) if known else None

    async def _absent(self, tp: TP, missing: range) -> bool:
        first = await first_offset_from(self._servers(), tp, missing.start)
        return first is not None and first >= missing.stop

    def _servers(self) -> str:
        return ",".join(f"{url.host}:{url.port or 9092}" for url in self._app.conf.broker)


class CommittedOffsetsWatch:
    """Exits the worker when the broker's committed offsets fall behind what this worker committed."""

    def __init__(self, app: faust.App, bootstrap_servers: str, interval_s: float = WATCH_INTERVAL_S) -> None:
        self._app = app
        self._bootstrap_servers = bootstrap_servers
        self._interval_s = interval_s
        self._behind_last_time: set[TP] = set()

    async def run(self) -> None:
        while True:
            reader = AIOKafkaConsumer(
                bootstrap_servers=self._bootstrap_servers, group_id=self._app.conf.id, enable_auto_commit=False
            )
            try:
                await reader.start()
                while True:
                    await asyncio.sleep(self._interval_s)
                    await self.check(reader)
            except KafkaError:  # the broker is away; the consumer's own errors say so; watch again when back
                log.debug("committed-offsets watch lost the broker", exc_info=True)
            finally:
                await reader.stop()
            await asyncio.sleep(self._interval_s)

    async def check(self, reader: AIOKafkaConsumer) -> None:
        behind: set[TP] = set()
        for tp, ours in list(CONFIRMED_COMMITS.items()):
            try:
                theirs = await reader.committed(TopicPartition(tp.topic, tp.partition))
            except Exception:  # a broker that is down is not yet a broker that forgot; check again later
                log.debug("could not read the committed offset of %s:%d", *tp, exc_info=True)
                continue
            if theirs is not None and theirs >= ours:
                continue
            behind.add(tp)
            if tp in self._behind_last_time:  # seen twice, an interval apart: not a blip of a reconnect
                log.critical(
                    "the broker's committed offset of %s:%d is %s, below the %d this worker committed: "
                    "the broker lost its state (an in-memory broker restarted?); exiting without committing",
                    tp.topic, tp.partition, theirs, ours,
                )  # fmt: skip
                exit_without_commit("any")
        self._behind_last_time = behind
