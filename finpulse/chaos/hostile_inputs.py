"""Hostile inputs mixed into a valid feed: valid events stored once, the rest dead-lettered, speed kept.

The same valid events go through the same worker twice: once alone, once with the hostile inputs
(``hostile.py``) spread among them. Each pass is produced in full while the worker is stopped, then the
worker drains it; throughput is valid events per second from the pass's first row stored to its last row
stored (or dead-lettered), so the two passes are compared on the worker's work alone. A message
the broker itself refuses (too large for it) was never accepted by Kafka; it is reported apart.
"""

from __future__ import annotations

from collections import Counter

from finpulse.chaos.accounting import Query, read_store, tally
from finpulse.chaos.hostile import hostile_inputs, mix
from finpulse.chaos.result import ChaosResult, ScenarioSize
from finpulse.chaos.stack import drain, scenario_settings
from finpulse.chaos.traffic import Feeder, valid_messages
from finpulse.harness import EmbeddedPipeline
from finpulse.settings import Settings

NAME = "hostile-inputs"
SLOWDOWN_ALLOWED = 0.10


def run(settings: Settings, size: ScenarioSize, *, seed: int = 0) -> ChaosResult:
    own = scenario_settings(settings, "hostile")
    clean = valid_messages(size.events, seed=seed + 4, run_id="clean")
    valid = valid_messages(size.events, seed=seed + 4, run_id="mixed")
    hostile = hostile_inputs(size.hostile_inputs, seed=seed, run_id="hostile")
    with EmbeddedPipeline(own) as pipeline:
        worker = pipeline.worker
        assert worker is not None
        # the first batch waits for the group to form: warm up first, so that only processing is timed
        warm = Feeder(pipeline.bootstrap_servers, own, valid_messages(200, seed=seed, run_id="warm")).send_all()
        drain(worker.query, warm.accepted, timeout_s=300)
        # Each pass is sent in full while the worker is stopped, so what is timed is the worker's
        # processing, not how fast this harness can produce (ten 10 MB messages take a while to send).
        worker.stop()
        first = Feeder(pipeline.bootstrap_servers, own, clean).send_all()
        worker = pipeline.worker = pipeline.start_worker()
        drain(worker.query, first.accepted, timeout_s=600)
        clean_rate = _valid_per_s(worker.query, "clean", size.events)
        worker.stop()
        second = Feeder(pipeline.bootstrap_servers, own, mix(valid, hostile, seed=seed)).send_all()
        worker = pipeline.worker = pipeline.start_worker()
        result, _ = drain(worker.query, second.accepted, timeout_s=600)
        mixed_rate = _valid_per_s(worker.query, "mixed", size.events)
        overall = tally(warm.accepted + first.accepted + second.accepted, read_store(worker.query))
        reasons = {
            r["reason"]: int(r["n"])
            for r in worker.query("SELECT reason, count() AS n FROM dlq_events GROUP BY reason")
        }
    hostile_accepted = [a for a in second.accepted if not a.message.must_store]
    ratio = mixed_rate / clean_rate if clean_rate else 0.0
    return ChaosResult.of(
        NAME,
        overall,
        recover_s=None,
        details={
            "hostile_sent": len(hostile_accepted),
            "hostile_by_category": dict(Counter(a.message.category for a in hostile_accepted)),
            "refused_by_kafka": dict(Counter(r.message.category for r in first.refused + second.refused)),
            "refused_errors": sorted({r.error[:160] for r in second.refused})[:3],
            "dlq_reasons": reasons,
            "clean_valid_per_s": round(clean_rate, 1),
            "mixed_valid_per_s": round(mixed_rate, 1),
            "throughput_ratio": round(ratio, 3),
        },
        checks={
            "every valid event stored once (none in the DLQ)": overall.valid_in_dlq == 0 and result.lost == 0,
            f"throughput with hostile input within {SLOWDOWN_ALLOWED:.0%}": ratio >= 1 - SLOWDOWN_ALLOWED,
        },
    )


def _valid_per_s(query: Query, run_id: str, events: int) -> float:
    """Valid events of the run per second, from its first row stored to the last thing it stored.

    Rows are stored per batch, so the first batch's own processing time is left out of both passes alike.
    """
    row = query(
        "SELECT"
        " (SELECT toUnixTimestamp64Micro(min(stored_at)) FROM scored_events"
        f"  WHERE startsWith(source_id, '{run_id}-')) / 1e6 AS first,"
        " greatest("
        "  (SELECT toUnixTimestamp64Micro(max(stored_at)) FROM scored_events"
        f"   WHERE startsWith(source_id, '{run_id}-')),"
        "  (SELECT toUnixTimestamp64Micro(max(received_at)) FROM dlq_events)) / 1e6 AS last"
    )[0]
    elapsed = float(row["last"]) - float(row["first"])
    return events / elapsed if elapsed > 0 else 0.0
