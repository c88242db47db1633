"""SIGTERM mid-batch: the batch in hand is finished and committed, and nothing is scored twice after.

All events are sent first; the worker is stopped with SIGTERM while batches are being stored. Once it has
exited, every input partition's committed offset must be exactly the first offset not stored (what was
processed was committed, nothing more). A new worker then drains the rest: it must consume exactly the
messages the first one had not processed, so no event already stored is scored again.
"""

from __future__ import annotations

import time

from finpulse.chaos.accounting import commits_past_unprocessed, first_unprocessed, read_store, tally
from finpulse.chaos.result import ChaosResult, ScenarioSize
from finpulse.chaos.stack import committed_offsets, drain, raw_topics, scenario_settings, stored_rows, wait_until
from finpulse.chaos.traffic import Feeder, valid_messages
from finpulse.harness import EmbeddedPipeline
from finpulse.settings import Settings

NAME = "sigterm-mid-batch"


def run(settings: Settings, size: ScenarioSize, *, seed: int = 0) -> ChaosResult:
    own = scenario_settings(settings, "sigterm")
    messages = valid_messages(size.events, seed=seed + 1, run_id="term")
    with EmbeddedPipeline(own) as pipeline:
        worker = pipeline.worker
        assert worker is not None
        feeder = Feeder(pipeline.bootstrap_servers, own, messages).send_all()
        wait_until(lambda: stored_rows(worker.query) >= size.events // 3, timeout_s=180, poll_s=0.1)
        stopped_at = time.monotonic()
        exit_code = worker.stop(timeout_s=60)
        committed = committed_offsets(pipeline.bootstrap_servers, own.worker_id, raw_topics(own))
        pipeline.worker = pipeline.start_worker()
        before = read_store(pipeline.worker.query)
        processed_before = tally(feeder.accepted, before)
        first_missing = first_unprocessed(feeder.accepted, before)
        recovered = wait_until(
            lambda: stored_rows(pipeline.worker.query) > before.scored_rows, timeout_s=180, poll_s=0.2
        )
        recover_s = time.monotonic() - stopped_at if recovered else None
        result, _ = drain(pipeline.worker.query, feeder.accepted, timeout_s=300)
        consumed_after = int(pipeline.worker.health().get("totals", {}).get("consumed", 0))
    to_process = result.sent - (processed_before.stored + processed_before.dlq)
    return ChaosResult.of(
        NAME,
        result,
        recover_s=recover_s,
        details={
            "exit_code": exit_code,
            "processed_before_stop": processed_before.stored + processed_before.dlq,
            "consumed_by_the_next_worker": consumed_after,
            "left_to_process": to_process,
            "committed_at_stop": {f"{t}:{p}": o for (t, p), o in sorted(committed.items())},
            "first_unprocessed_at_stop": {f"{t}:{p}": o for (t, p), o in sorted(first_missing.items())},
        },
        checks={
            "worker exited 0 on SIGTERM": exit_code == 0,
            "stopped mid-feed": 0 < processed_before.stored < result.sent,
            "what was stored was committed, nothing more": all(
                (committed.get(key) or 0) == offset for key, offset in first_missing.items()
            )
            and not commits_past_unprocessed(committed, first_missing),
            "nothing re-scored after restart": consumed_after == to_process,
        },
    )
