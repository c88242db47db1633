"""Regression test of Faust's recovery race (streams/recovery.py): a slow seek after a restart lost events.

The worker is killed after its first commits, with a non-empty ``opinion-index`` changelog, so the
restarted worker goes through table recovery; the test-only hook delays its seek to the committed
offsets by 1.5 s, which is what opened the window: before the fix this lost a contiguous range of
events per partition starting at the committed offset, every run.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from finpulse.demo import feed_messages, run_filter
from finpulse.harness import EmbeddedPipeline, WorkerProcess, produce
from finpulse.settings import Settings
from finpulse.streams import topics
from finpulse.streams.recovery import SEEK_DELAY_ENV
from tests.integration.helpers import committed_offsets, read_topic

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TOTAL = 3000
FIRST = 600


def _wait_for(condition, timeout_s: float, poll_s: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(poll_s)
    return condition()


def test_a_slow_seek_after_a_crash_loses_nothing(pipeline_settings: Settings) -> None:
    settings = pipeline_settings
    raw_topics = [settings.topic(topics.NEWS_RAW), settings.topic(topics.SOCIAL_RAW)]
    messages = feed_messages("steady", TOTAL, seed=11, run_id="race")
    with EmbeddedPipeline(settings) as pipeline:
        worker = pipeline.worker
        assert worker is not None
        first, rest = messages[:FIRST], messages[FIRST:]
        asyncio.run(produce(pipeline.bootstrap_servers, settings, first, rate=None))

        def committed_with_index_state() -> bool:
            offsets = committed_offsets(pipeline.bootstrap_servers, settings.worker_id, raw_topics)
            return any(offsets.values()) and int(worker.scalar("SELECT count() AS n FROM opinion_index")) > 0

        assert _wait_for(committed_with_index_state, timeout_s=180), "no commit and no index state yet"
        # The rest arrives at once and the worker dies in the middle of it: at the restart thousands of
        # records wait beyond the committed offsets, for the fetcher to prefetch while the seek is slow.
        asyncio.run(produce(pipeline.bootstrap_servers, settings, rest, rate=None))
        worker.kill()

        restarted = WorkerProcess(
            settings, pipeline.bootstrap_servers, settings.data_dir / "worker-restarted.log", {SEEK_DELAY_ENV: "1.5"}
        )
        pipeline.worker = restarted
        try:
            restarted.start()
            stored = pipeline.wait_for_rows("scored_events", TOTAL, timeout_s=240, where=run_filter("race"))
            counts = restarted.query("SELECT count() AS n, uniqExact(event_id) AS u FROM scored_events")[0]
            assert (stored, int(counts["n"]), int(counts["u"])) == (TOTAL, TOTAL, TOTAL)

            ends: dict[tuple[str, int], int] = {}
            for topic in (topics.NEWS_RAW, topics.SOCIAL_RAW):
                sent = sum(1 for message in messages if message.topic == topic)
                for record in read_topic(pipeline.bootstrap_servers, settings.topic(topic), sent, timeout_s=30):
                    key = (record.topic, record.partition)
                    ends[key] = max(ends.get(key, 0), record.offset + 1)

            def drained() -> bool:
                offsets = committed_offsets(pipeline.bootstrap_servers, settings.worker_id, raw_topics)
                return all(offsets.get(key) == end for key, end in ends.items())

            assert _wait_for(drained, timeout_s=30), (
                f"committed {committed_offsets(pipeline.bootstrap_servers, settings.worker_id, raw_topics)} "
                f"!= ends {ends}"
            )
        finally:
            restarted.stop()
