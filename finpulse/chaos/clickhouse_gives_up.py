"""ClickHouse down for longer than ``FINPULSE_CLICKHOUSE_RETRY_MAX_S``: the worker exits non-zero without
committing the batch it could not store, and a restarted worker stores everything once ClickHouse is back.
"""

from __future__ import annotations

import time

from finpulse.chaos.accounting import commits_past_unprocessed, first_unprocessed, read_store
from finpulse.chaos.outage import StorageOutage, table_directories
from finpulse.chaos.result import ChaosResult, ScenarioSize
from finpulse.chaos.stack import committed_offsets, drain, raw_topics, scenario_settings, wait_for_progress, wait_until
from finpulse.chaos.traffic import Feeder, valid_messages
from finpulse.harness import EmbeddedPipeline
from finpulse.settings import Settings

NAME = "clickhouse-gives-up"
RETRY_MAX_S = 3.0


def run(settings: Settings, size: ScenarioSize, *, seed: int = 0) -> ChaosResult:
    own = scenario_settings(settings, "gives-up", clickhouse_retry_max_s=RETRY_MAX_S)
    messages = valid_messages(max(size.events // 3, 300), seed=seed + 3, run_id="givesup")
    with EmbeddedPipeline(own) as pipeline:
        worker = pipeline.worker
        assert worker is not None and worker.process is not None
        feeder = Feeder(pipeline.bootstrap_servers, own, messages[: len(messages) // 3]).send_all()
        wait_for_progress(worker.query, 0, timeout_s=120)
        with StorageOutage(table_directories(worker.query)):
            during = read_store(worker.query)
            rest = Feeder(pipeline.bootstrap_servers, own, messages[len(messages) // 3 :]).send_all()
            exited = wait_until(lambda: worker.process.poll() is not None, timeout_s=RETRY_MAX_S * 10 + 60)
            exit_code = worker.process.poll()
            committed = committed_offsets(pipeline.bootstrap_servers, own.worker_id, raw_topics(own))
        back_at = time.monotonic()
        pipeline.worker = pipeline.start_worker()
        progressed = wait_for_progress(pipeline.worker.query, during.scored_rows, timeout_s=180)
        recover_s = time.monotonic() - back_at if progressed is not None else None
        accepted = feeder.accepted + rest.accepted
        result, _ = drain(pipeline.worker.query, accepted, timeout_s=300)
    violations = commits_past_unprocessed(committed, first_unprocessed(accepted, during))
    return ChaosResult.of(
        NAME,
        result,
        recover_s=recover_s,
        details={
            "retry_max_s": RETRY_MAX_S,
            "worker_exit_code": exit_code,
            "commits_past_unstored": {f"{t}:{p}": v for (t, p), v in violations.items()},
        },
        checks={
            "worker exited non-zero": exited and exit_code not in (None, 0),
            "no offset committed past an unstored row": not violations,
            "every valid event stored (none in the DLQ)": result.valid_in_dlq == 0,
        },
    )
