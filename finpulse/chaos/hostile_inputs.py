"""Hostile inputs mixed into a valid feed: valid events stored once, the rest dead-lettered, speed kept.

The same valid events go through the same worker twice: once alone, once with the hostile inputs
(``hostile.py``) spread among them. Throughput is valid events per second from the first message sent to
the last one stored (or dead-lettered), so the two runs are compared on the work that matters. A message
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
        first = Feeder(pipeline.bootstrap_servers, own, clean).send_all()
        drain(worker.query, first.accepted, timeout_s=600)
        clean_rate = _valid_per_s(worker.query, "clean", size.events, first.first_sent_at)
        second = Feeder(pipeline.bootstrap_servers, own, mix(valid, hostile, seed=seed)).send_all()
        result, _ = drain(worker.query, second.accepted, timeout_s=600)
        mixed_rate = _valid_per_s(worker.query, "mixed", size.events, second.first_sent_at)
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


def _valid_per_s(query: Query, run_id: str, events: int, first_sent_at: float | None) -> float:
    """Valid events of the run per second, from its first message sent to the last thing it stored."""
    last = query(
        "SELECT greatest("
        " (SELECT toUnixTimestamp64Micro(max(stored_at)) FROM scored_events"
        f" WHERE position(event_id, '{run_id}-') > 0),"
        " (SELECT toUnixTimestamp64Micro(max(received_at)) FROM dlq_events)) / 1e6 AS t"
    )[0]["t"]
    elapsed = float(last) - (first_sent_at or 0.0)
    return events / elapsed if elapsed > 0 else 0.0
