"""ClickHouse unavailable while events flow: backpressure, no commit past an unstored row, nothing lost.

The outage (``outage.StorageOutage``) makes every insert fail for ``outage_s``; the writer retries and the
batch in hand waits, so the worker stops consuming. Throughout, the group's committed offsets are sampled:
none may be past a message that is not stored (the DLQ counts as stored). When ClickHouse is back, every
event must arrive, once.
"""

from __future__ import annotations

import time

from finpulse.chaos.accounting import commits_past_unprocessed, first_unprocessed, read_store
from finpulse.chaos.outage import StorageOutage, table_directories
from finpulse.chaos.result import ChaosResult, ScenarioSize
from finpulse.chaos.stack import committed_offsets, drain, raw_topics, scenario_settings, stored_rows, wait_for_progress
from finpulse.chaos.traffic import Feeder, valid_messages
from finpulse.harness import EmbeddedPipeline
from finpulse.settings import Settings

NAME = "clickhouse-outage"


def run(settings: Settings, size: ScenarioSize, *, seed: int = 0) -> ChaosResult:
    own = scenario_settings(settings, "outage")
    messages = valid_messages(size.events, seed=seed + 2, run_id="outage")
    # the feed runs through the outage: a third before it, the rest during and after
    rate = size.events / (size.outage_s * 2 + 10)
    with EmbeddedPipeline(own) as pipeline:
        worker = pipeline.worker
        assert worker is not None
        feeder = Feeder(pipeline.bootstrap_servers, own, messages, rate=rate).start()
        wait_for_progress(worker.query, 0, timeout_s=120)
        samples: list[dict[tuple[str, int], int | None]] = []
        consumed: list[int] = []
        with StorageOutage(table_directories(worker.query)):
            started = time.monotonic()
            stored_at_start = stored_rows(worker.query)
            while time.monotonic() - started < size.outage_s:
                samples.append(committed_offsets(pipeline.bootstrap_servers, own.worker_id, raw_topics(own)))
                consumed.append(int(worker.health().get("totals", {}).get("consumed", 0)))
                time.sleep(1.0)
            during = read_store(worker.query)
        back_at = time.monotonic()
        progressed = wait_for_progress(worker.query, during.scored_rows, timeout_s=120)
        recover_s = time.monotonic() - back_at if progressed is not None else None
        feeder.wait()
        result, _ = drain(worker.query, feeder.accepted, timeout_s=300)
        exit_code = worker.process.poll() if worker.process else None
    first_missing = first_unprocessed(feeder.accepted, during)
    violations = [v for sample in samples for v in commits_past_unprocessed(sample, first_missing).items()]
    # the batch in hand blocks the agent: after the first sample or two, nothing more is consumed
    settled = consumed[len(consumed) // 2 :]
    return ChaosResult.of(
        NAME,
        result,
        recover_s=recover_s,
        details={
            "outage_s": size.outage_s,
            "stored_during_outage": during.scored_rows - stored_at_start,
            "consumed_in_second_half_of_outage": (settled[-1] - settled[0]) if settled else None,
            "commit_samples": len(samples),
            "commits_past_unstored": [f"{t}:{p} committed {c} > first unstored {f}" for (t, p), (c, f) in violations][
                :10
            ],
            "worker_exit_code": exit_code,
        },
        checks={
            "nothing stored while ClickHouse was down": during.scored_rows == stored_at_start,
            "backpressure: consumption stopped": bool(settled) and settled[-1] == settled[0],
            "no offset committed past an unstored row": not violations,
            "worker rode out the outage": exit_code is None,
            "every valid event stored (none in the DLQ)": result.valid_in_dlq == 0,
        },
    )
