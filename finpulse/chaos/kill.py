"""kill -9, again and again, under a continuous feed: nothing lost, nothing stored twice, offsets at the end.

Each cycle kills the worker with SIGKILL at one of three moments, in turn: mid-batch (while rows are being
stored), during recovery (right after a restarted worker became ready, while its tables come back from
the changelog), and right after a commit (the moment the group's committed offsets moved). Then a new
worker starts on the same data. After the last cycle the feed ends, the pipeline drains, and every input
partition's committed offset must be the offset after the last message the producer was acknowledged for.
"""

from __future__ import annotations

import random
import time

from finpulse.chaos.result import ChaosResult, ScenarioSize
from finpulse.chaos.stack import (
    commits_at_end,
    committed_offsets,
    drain,
    raw_topics,
    scenario_settings,
    stored_rows,
    supervise,
    wait_for_commits,
    wait_for_progress,
    wait_until,
)
from finpulse.chaos.traffic import Feeder, end_offsets, valid_messages
from finpulse.harness import EmbeddedPipeline
from finpulse.settings import Settings

NAME = "kill-9"
MOMENTS = ("mid-batch", "during-recovery", "after-commit")
# A killed worker keeps its partitions until its session times out; the feed is paced to outlast the cycles.
CYCLE_OVERHEAD_S = 20.0


def run(settings: Settings, size: ScenarioSize, *, seed: int = 0) -> ChaosResult:
    own = scenario_settings(settings, "kill")
    rng = random.Random(f"finpulse-chaos-kill:{seed}")
    messages = valid_messages(size.events, seed=seed, run_id="kill")
    rate = size.events / max(size.kill_cycles * (own.broker_session_timeout_s + CYCLE_OVERHEAD_S), 10.0)
    with EmbeddedPipeline(own) as pipeline:
        feeder = Feeder(pipeline.bootstrap_servers, own, messages, rate=rate).start()
        recoveries: list[float] = []
        moments: list[str] = []
        exit_codes: list[int] = []
        own_exits: list[int] = []  # the worker exiting by itself (the offset guard), restarted as a supervisor would
        for cycle in range(size.kill_cycles):
            supervise(pipeline, own_exits)
            assert pipeline.worker is not None
            moment = MOMENTS[cycle % len(MOMENTS)]
            _wait_for_moment(pipeline, own, moment, rng)
            at_kill = _stored_or_zero(pipeline)
            killed_at = time.monotonic()
            exit_codes.append(pipeline.worker.kill())
            moments.append(moment)
            pipeline.worker = pipeline.start_worker()
            next_moment = MOMENTS[(cycle + 1) % len(MOMENTS)]
            if next_moment != "during-recovery" or cycle == size.kill_cycles - 1:
                progressed = wait_for_progress(pipeline.worker.query, at_kill, timeout_s=120)
                if progressed is not None:
                    recoveries.append(time.monotonic() - killed_at)
        feeder.wait()
        supervise(pipeline, own_exits)
        assert pipeline.worker is not None
        result, _ = drain(pipeline.worker.query, feeder.accepted, timeout_s=300)
        expected = end_offsets(feeder.accepted)
        committed = wait_for_commits(pipeline.bootstrap_servers, own, expected, timeout_s=30)
    return ChaosResult.of(
        NAME,
        result,
        recover_s=max(recoveries) if recoveries else None,
        details={
            "cycles": len(moments),
            "moments": moments,
            "kill_exit_codes": sorted(set(exit_codes)),
            "worker_exits_on_its_own": own_exits,
            "recover_s_each": [round(r, 2) for r in recoveries],
            "refused_by_kafka": len(feeder.refused),
            "feed_rate_per_s": round(rate, 1),
            "committed": {f"{t}:{p}": o for (t, p), o in sorted(committed.items())},
            "end_offsets": {f"{t}:{p}": o for (t, p), o in sorted(expected.items())},
        },
        checks={
            "committed offset == end offset on every input partition": commits_at_end(committed, expected),
            "every valid event stored (none in the DLQ)": result.valid_in_dlq == 0,
        },
    )


def _stored_or_zero(pipeline: EmbeddedPipeline) -> int:
    assert pipeline.worker is not None
    try:
        return stored_rows(pipeline.worker.query)
    except Exception:  # noqa: BLE001 - a worker between batches may be slow to answer; 0 only delays the check
        return 0


def _wait_for_moment(pipeline: EmbeddedPipeline, settings: Settings, moment: str, rng: random.Random) -> None:
    worker = pipeline.worker
    assert worker is not None
    if moment == "during-recovery":
        time.sleep(rng.uniform(0.0, 1.0))
        return
    wait_for_progress(worker.query, _stored_or_zero(pipeline), timeout_s=60)
    if moment == "mid-batch":
        time.sleep(rng.uniform(0.1, 1.5))
        return
    names = raw_topics(settings)
    before = committed_offsets(pipeline.bootstrap_servers, settings.worker_id, names)
    wait_until(
        lambda: committed_offsets(pipeline.bootstrap_servers, settings.worker_id, names) != before,
        timeout_s=30,
        poll_s=0.1,
    )
