"""Hostile inputs mixed into a valid feed: valid events stored once, the rest dead-lettered, speed kept.

The worker drains *passes* of the same number of valid events, clean ones (valid events alone) and mixed
ones (the same kind of events with the hostile inputs of ``hostile.py`` spread among them), taken in turn
and starting and ending with a clean one: clean, mixed, clean, mixed, clean. Whatever drifts during a run
(the tables grow, the machine is busier for a while) then weighs on both kinds alike, and throughput is
compared as the valid events of each kind over the seconds they took.

Each pass is one fresh stretch of market time after the last, as a live feed's would be, and each hostile
input is dated like the valid event next to it. A pass is produced in full while the worker is stopped,
so what is timed is the worker's processing, not this harness's producer (ten 10 MB messages take a
while to send). A pass is timed from its first row stored to the last thing it wrote: a scored row, a
dead-lettered message or an index update. While it drains, the harness watches the group's committed
offsets at the broker and reads nothing through the worker; once they are at the end, it waits for the
index to count every stored event before the worker stops. Without that wait the index work a pass left
undone fell into the next pass, and the passes alternate: every mixed pass inherited a backlog, while the
first clean pass inherited none. A message the broker itself refuses (too large for it) was never
accepted by Kafka; it is reported apart.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from functools import partial

from finpulse.chaos.accounting import Query
from finpulse.chaos.hostile import hostile_inputs, mix, mix_slots
from finpulse.chaos.result import ChaosResult, ScenarioSize
from finpulse.chaos.stack import (
    commits_at_end,
    drain,
    indexed_events,
    process_cpu_s,
    scenario_settings,
    stored_rows,
    wait_for_commits,
    wait_until,
)
from finpulse.chaos.traffic import Accepted, Feeder, Message, Refused, end_offsets, event_time, valid_messages
from finpulse.feed import default_start
from finpulse.harness import EmbeddedPipeline, WorkerProcess
from finpulse.settings import Settings

NAME = "hostile-inputs"
SLOWDOWN_ALLOWED = 0.10
PASS_SPAN = timedelta(hours=6)  # market time each pass covers
WARM_UP_EVENTS = 200


@dataclass(frozen=True)
class Pass:
    """One drained pass: which kind, what Kafka took of it, and how fast its valid events were stored."""

    run_id: str
    mixed: bool
    accepted: list[Accepted]
    refused: list[Refused]
    events: int  # valid events
    seconds: float
    worker_cpu_s: float | None  # from the worker being ready to the pass committed and indexed (None off Linux)

    @property
    def valid_per_s(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


def run(settings: Settings, size: ScenarioSize, *, seed: int = 0) -> ChaosResult:
    # the accounting reads every stored identity and DLQ row at the end: more than an answer may have by default
    every_message = WARM_UP_EVENTS + size.throughput_passes * (size.events + size.hostile_inputs)
    own = scenario_settings(settings, "hostile", sql_max_rows=max(settings.sql_max_rows, 2 * every_message))
    kinds = [index % 2 == 1 for index in range(size.throughput_passes)]  # clean, mixed, clean, …
    first_start = default_start(PASS_SPAN * (len(kinds) + 1))
    window_s = max(own.index_windows_s)
    passes: list[Pass] = []
    with EmbeddedPipeline(own) as pipeline:
        worker = pipeline.worker
        assert worker is not None
        # the first batch waits for the group to form: warm up first, so that only processing is timed
        warm = valid_messages(WARM_UP_EVENTS, seed=seed, run_id="warm", start=first_start, span=PASS_SPAN)
        accepted = Feeder(pipeline.bootstrap_servers, own, warm).send_all().accepted
        drain(worker.query, accepted, timeout_s=300)
        wait_until(partial(_indexed_all, worker.query, window_s), timeout_s=300, poll_s=0.5)
        for index, mixed in enumerate(kinds):
            start = first_start + PASS_SPAN * (index + 1)
            run_id = f"{'mixed' if mixed else 'clean'}{index}"
            messages = valid_messages(size.events, seed=seed + 4, run_id=run_id, start=start, span=PASS_SPAN)
            if mixed:
                messages = _mixed(messages, size.hostile_inputs, seed=seed, run_id=f"hostile{index}")
            worker.stop()
            feed = Feeder(pipeline.bootstrap_servers, own, messages).send_all()
            accepted += feed.accepted
            worker = pipeline.worker = pipeline.start_worker()
            cpu_at_ready = _worker_cpu_s(worker)
            committed = wait_for_commits(pipeline.bootstrap_servers, own, end_offsets(accepted), timeout_s=600)
            if not commits_at_end(committed, end_offsets(accepted)):
                break  # the accounting below says what is missing
            if not wait_until(partial(_indexed_all, worker.query, window_s), timeout_s=300, poll_s=0.5):
                break
            cpu_at_end = _worker_cpu_s(worker)
            cpu = None if cpu_at_ready is None or cpu_at_end is None else cpu_at_end - cpu_at_ready
            seconds = _seconds_to_store(worker.query, run_id)
            passes.append(Pass(run_id, mixed, feed.accepted, feed.refused, size.events, seconds, cpu))
        overall, _ = drain(worker.query, accepted, timeout_s=300)
        reasons = {
            r["reason"]: int(r["n"])
            for r in worker.query("SELECT reason, count() AS n FROM dlq_events GROUP BY reason")
        }
    clean_rate, mixed_rate = _throughput(passes, mixed=False), _throughput(passes, mixed=True)
    ratio = mixed_rate / clean_rate if clean_rate else 0.0
    hostile_accepted = [a for p in passes if p.mixed for a in p.accepted if not a.message.must_store]
    refused = [r for p in passes for r in p.refused]
    return ChaosResult.of(
        NAME,
        overall,
        recover_s=None,
        details={
            "hostile_sent": len(hostile_accepted),
            "hostile_by_category": dict(Counter(a.message.category for a in hostile_accepted)),
            "refused_by_kafka": dict(Counter(r.message.category for r in refused)),
            "refused_errors": sorted({r.error[:160] for r in refused})[:3],
            "dlq_reasons": reasons,
            "passes": [
                {
                    "pass": p.run_id,
                    "valid_per_s": round(p.valid_per_s, 1),
                    "seconds": round(p.seconds, 2),
                    "worker_cpu_s": None if p.worker_cpu_s is None else round(p.worker_cpu_s, 2),
                }
                for p in passes
            ],
            # worker CPU per 1,000 valid events: less swayed by a busy machine than the wall-clock rates
            "clean_worker_cpu_s_per_1k": _cpu_per_1k(passes, mixed=False),
            "mixed_worker_cpu_s_per_1k": _cpu_per_1k(passes, mixed=True),
            "clean_valid_per_s": round(clean_rate, 1),
            "mixed_valid_per_s": round(mixed_rate, 1),
            "throughput_ratio": round(ratio, 3),
        },
        checks={
            "every pass drained": len(passes) == len(kinds),
            "every valid event stored once (none in the DLQ)": overall.valid_in_dlq == 0 and overall.lost == 0,
            f"throughput with hostile input within {SLOWDOWN_ALLOWED:.0%}": ratio >= 1 - SLOWDOWN_ALLOWED,
        },
    )


def _mixed(valid: list[Message], count: int, *, seed: int, run_id: str) -> list[Message]:
    """``count`` hostile inputs spread among ``valid``, each dated like the valid event it comes before."""
    slots = mix_slots(len(valid), count, seed=seed)
    dates = [event_time(valid[min(slot, len(valid) - 1)]) for slot in slots]
    return mix(valid, hostile_inputs(count, seed=seed, run_id=run_id, created_at=dates), seed=seed, slots=slots)


def _throughput(passes: list[Pass], *, mixed: bool) -> float:
    """Valid events per second over all passes of one kind: their events over their summed seconds."""
    chosen = [p for p in passes if p.mixed == mixed]
    seconds = sum(p.seconds for p in chosen)
    return sum(p.events for p in chosen) / seconds if seconds > 0 else 0.0


def _worker_cpu_s(worker: WorkerProcess) -> float | None:
    return None if worker.process is None else process_cpu_s(worker.process.pid)


def _cpu_per_1k(passes: list[Pass], *, mixed: bool) -> float | None:
    chosen = [p for p in passes if p.mixed == mixed]
    spent = [p.worker_cpu_s for p in chosen if p.worker_cpu_s is not None]
    if not chosen or len(spent) < len(chosen):
        return None
    return round(sum(spent) / (sum(p.events for p in chosen) / 1000), 3)


def _indexed_all(query: Query, window_s: int) -> bool:
    return indexed_events(query, window_s) >= stored_rows(query)


def _seconds_to_store(query: Query, run_id: str) -> float:
    """Seconds from the pass's first row stored to the last thing written since: a row, a DLQ entry or an
    index update (the index has caught up with every earlier pass before this one starts).

    Rows are stored per batch, so the first batch's own processing time is left out of every pass alike.
    """
    mine = f"FROM scored_events WHERE startsWith(source_id, '{run_id}-')"
    row = query(
        f"SELECT (SELECT toUnixTimestamp64Micro(min(stored_at)) {mine}) / 1e6 AS first,"
        f" greatest((SELECT toUnixTimestamp64Micro(max(stored_at)) {mine}),"
        "  (SELECT toUnixTimestamp64Micro(max(received_at)) FROM dlq_events),"
        "  (SELECT toUnixTimestamp64Micro(max(updated_at)) FROM opinion_index)) / 1e6 AS last"
    )[0]
    return max(0.0, float(row["last"]) - float(row["first"]))
