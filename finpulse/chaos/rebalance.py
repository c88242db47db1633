"""Two live workers: a second worker joins the group while events flow, takes partitions, and leaves.

Both processes stay alive through the join (a real rebalance, not a crash), and the second one leaves with
SIGTERM. Each worker has a chDB of its own (chDB allows one process per directory), so what was stored is
read from both as one server would hold them (``accounting.combined``): a batch stored but not yet
committed when its partition moved is redelivered (at-least-once) and reported, not counted as a duplicate,
since the writer drops it against a shared server. The streamed index must have moved with its
partitions: once both are stopped, the second store's rows are copied into the first and every
closed window of the streamed index must agree with the SQL index over the same events.
"""

from __future__ import annotations

import time
from contextlib import closing

from finpulse.chaos.accounting import Query, client_query, read_store
from finpulse.chaos.result import ChaosResult, ScenarioSize
from finpulse.chaos.stack import drain, extra_worker, scenario_settings, wait_for_progress, wait_until
from finpulse.chaos.traffic import Feeder, valid_messages
from finpulse.harness import EmbeddedPipeline, WorkerProcess
from finpulse.settings import Settings
from finpulse.sinks.clickhouse import get_client

NAME = "two-workers"
STAY_S = 10.0  # how long both workers share the group


def run(settings: Settings, size: ScenarioSize, *, seed: int = 0) -> ChaosResult:
    own = scenario_settings(settings, "rebalance")
    messages = valid_messages(size.events, seed=seed + 5, run_id="rebal")
    rate = size.events / (STAY_S + 2 * own.broker_session_timeout_s + 30)  # the feed outlasts the join and leave
    with EmbeddedPipeline(own) as pipeline:
        first = pipeline.worker
        assert first is not None
        feeder = Feeder(pipeline.bootstrap_servers, own, messages, rate=rate).start()
        wait_for_progress(first.query, 0, timeout_s=120)
        joined_at = time.monotonic()
        second = extra_worker(pipeline, "second").start()
        shared = wait_until(lambda: _stored_by(second) > 0, timeout_s=120)
        recover_s = time.monotonic() - joined_at if shared else None
        both_assigned = _raw_assigned(first) and _raw_assigned(second)
        time.sleep(STAY_S)
        second_stored = _stored_by(second)
        second_exit = second.stop(timeout_s=60)
        feeder.wait()
        elsewhere = _read_closed(second)
        result, snapshot = drain(first.query, feeder.accepted, timeout_s=300, elsewhere=elsewhere)
        first_exit = first.stop(timeout_s=60)
    agreement = _index_agreement(first, second)
    return ChaosResult.of(
        NAME,
        result,
        recover_s=recover_s,
        details={
            "stored_by_second_worker": second_stored,
            "redelivered_across_the_rebalance": snapshot.in_both_stores,
            "second_worker_exit_code": second_exit,
            "first_worker_exit_code": first_exit,
            **agreement,
        },
        checks={
            "both workers held input partitions at once": both_assigned,
            "second worker stored events, then left cleanly": second_stored > 0 and second_exit == 0,
            "streamed index agrees with SQL on every closed window": agreement["index_disagreements"] == 0,
        },
    )


def _stored_by(worker: WorkerProcess) -> int:
    return int(worker.health().get("totals", {}).get("stored", 0))


def _raw_assigned(worker: WorkerProcess) -> bool:
    return any(".raw:" in tp for tp in worker.health().get("assigned", []))


def _read_closed(worker: WorkerProcess):  # noqa: ANN202 - a StoreSnapshot
    with closing(get_client(worker.settings.resolved_clickhouse_dsn)) as client:
        return read_store(client_query(client))


def _index_agreement(first: WorkerProcess, second: WorkerProcess) -> dict[str, object]:
    """Copy the second store's events and index rows into the first, then compare the two indexes.

    Every scored row of the second store is copied, redelivered ones included: the second worker's own
    store did not hold them, so it counted them into the streamed index as new (against a shared server
    its writer reports them stored and the index skips them, ``test_indexes.py``); the SQL index then
    counts what the streamed one counted, and any state lost in the handover still shows.
    """
    with closing(get_client(second.settings.resolved_clickhouse_dsn)) as client:
        events = client.query("SELECT * EXCEPT (primary_ticker, stored_at) FROM scored_events")
        index = client.query("SELECT * FROM opinion_index")
    with closing(get_client(first.settings.resolved_clickhouse_dsn)) as client:
        if events.result_rows:
            client.insert("scored_events", events.result_rows, column_names=list(events.column_names))
        have = {row[0] for row in client.query("SELECT index_id FROM opinion_index").result_rows}
        at = index.column_names.index("index_id")
        missing = [row for row in index.result_rows if row[at] not in have]
        if missing:
            client.insert("opinion_index", missing, column_names=list(index.column_names))
        return _compare(client_query(client))


def _compare(query: Query) -> dict[str, object]:
    columns = "scope, key, window_s, toUnixTimestamp64Milli(window_start) AS start_ms, buzz"
    stream = {
        (r["scope"], r["key"], int(r["window_s"]), int(r["start_ms"])): int(r["buzz"]) + int(r["late_events"])
        for r in query(f"SELECT {columns}, late_events FROM opinion_index_final WHERE closed")
    }
    sql = {
        (r["scope"], r["key"], int(r["window_s"]), int(r["start_ms"])): int(r["buzz"])
        for r in query(f"SELECT {columns} FROM opinion_index_sql WHERE closed")
    }
    both = stream.keys() & sql.keys()
    buzz_differs = [k for k in both if stream[k] != sql[k]]
    return {
        "closed_windows_compared": len(both),
        "closed_only_in_stream": len(stream.keys() - sql.keys()),
        "closed_only_in_sql": len(sql.keys() - stream.keys()),
        "buzz_differs": [f"{k}: stream {stream[k]} sql {sql[k]}" for k in sorted(buzz_differs)[:5]],
        "index_disagreements": len(buzz_differs) + len(stream.keys() ^ sql.keys()),
    }
