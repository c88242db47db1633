"""A batch is finished before its offsets can be acknowledged, or the process leaves without acknowledging."""

from __future__ import annotations

import asyncio

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


async def test_a_cancelled_agent_finishes_the_batch_in_hand_then_stops() -> None:
    stored: list[str] = []

    async def store() -> str:
        await asyncio.sleep(0.05)
        stored.append("rows")
        return "done"

    agent = asyncio.ensure_future(process_whole(store(), what="scoring"))
    await asyncio.sleep(0.01)
    agent.cancel()
    with pytest.raises(asyncio.CancelledError):
        await agent
    assert stored == ["rows"]


async def test_a_failed_batch_exits_before_the_loop_body_can_return(exits: list[int]) -> None:
    async def store() -> None:
        raise ConnectionError("ClickHouse is down")

    with pytest.raises(Exited):
        await process_whole(store(), what="scoring")
    assert exits == [EXIT_BATCH_FAILED]


async def test_a_batch_failing_after_cancellation_still_exits_without_committing(exits: list[int]) -> None:
    async def store() -> None:
        await asyncio.sleep(0.05)
        raise ConnectionError("ClickHouse is down")

    agent = asyncio.ensure_future(process_whole(store(), what="index"))
    await asyncio.sleep(0.01)
    agent.cancel()
    with pytest.raises(Exited):
        await agent
    assert exits == [EXIT_BATCH_FAILED]


async def test_the_result_comes_back() -> None:
    async def store() -> int:
        return 3

    assert await process_whole(store(), what="index") == 3
