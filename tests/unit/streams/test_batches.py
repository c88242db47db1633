"""A batch is finished before its offsets can be acknowledged, or the process leaves without acknowledging."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest

from finpulse.streams import batches
from finpulse.streams.batches import EXIT_BATCH_FAILED, process_whole


class Exited(BaseException):
    pass


@pytest.fixture
def exits(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    codes: list[int] = []

    def fake_exit(code: int) -> None:
        codes.append(code)
        raise Exited

    monkeypatch.setattr(batches.os, "_exit", fake_exit)
    return codes


class Finishing(logging.Handler):
    """Set once ``process_whole`` logs that it has taken the cancellation and finishes the batch in hand."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.seen = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if "finishing the" in record.getMessage():
            self.seen.set()


@pytest.fixture
def finishing() -> Iterator[Finishing]:
    handler = Finishing()
    logger = logging.getLogger("finpulse.streams")
    previous_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(previous_level)


async def cancel_mid_batch(agent: asyncio.Future, started: asyncio.Event, finishing: Finishing) -> None:
    """Cancel ``agent`` while its batch is in hand and wait until it has taken the cancellation."""
    await asyncio.wait_for(started.wait(), timeout=30)
    agent.cancel()
    await asyncio.wait_for(finishing.seen.wait(), timeout=30)


async def test_a_cancelled_agent_finishes_the_batch_in_hand_then_stops(finishing: Finishing) -> None:
    started, release = asyncio.Event(), asyncio.Event()
    stored: list[str] = []

    async def store() -> str:
        started.set()
        await release.wait()
        stored.append("rows")
        return "done"

    agent = asyncio.ensure_future(process_whole(store(), what="scoring"))
    await cancel_mid_batch(agent, started, finishing)
    assert not agent.done() and stored == []  # cancelled, yet still waiting for the batch
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await agent
    assert stored == ["rows"]


async def test_a_failed_batch_exits_before_the_loop_body_can_return(exits: list[int]) -> None:
    async def store() -> None:
        raise ConnectionError("ClickHouse is down")

    with pytest.raises(Exited):
        await process_whole(store(), what="scoring")
    assert exits == [EXIT_BATCH_FAILED]


async def test_a_batch_failing_after_cancellation_still_exits_without_committing(
    exits: list[int], finishing: Finishing
) -> None:
    started, release = asyncio.Event(), asyncio.Event()

    async def store() -> None:
        started.set()
        await release.wait()
        raise ConnectionError("ClickHouse is down")

    agent = asyncio.ensure_future(process_whole(store(), what="index"))
    await cancel_mid_batch(agent, started, finishing)
    assert exits == []
    release.set()
    with pytest.raises(Exited):
        await agent
    assert exits == [EXIT_BATCH_FAILED]


async def test_the_result_comes_back() -> None:
    async def store() -> int:
        return 3

    assert await process_whole(store(), what="index") == 3
