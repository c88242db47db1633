"""The built-in scenarios end to end: the shock fires alerts for the shocked ticker alone, steady fires none.

Both run the real worker (scoring, indexes, alerts with the packaged default rules) on the real broker
and chDB. They send fewer events than the demo over a shorter span of event time, at the demo's density,
so that 5-minute windows hold as many events as in the demo and baselines fill before the shock.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from finpulse.demo import feed_messages, run_feed, wait_for_index_to_settle
from finpulse.feed import shocked_ticker
from finpulse.harness import EmbeddedPipeline
from finpulse.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EVENTS = 4000
SPAN = timedelta(minutes=75)  # 20,000 events over 6 h in the demo: the same events per minute


def run_scenario(settings: Settings, scenario: str, seed: int) -> tuple[list[dict], list[dict], int]:
    messages = feed_messages(scenario, EVENTS, seed, run_id=scenario, span=SPAN)
    with EmbeddedPipeline(settings.model_copy(update={"batch_size": 500})) as pipeline:
        assert run_feed(pipeline, messages, rate=None, timeout_s=400) == EVENTS
        worker = pipeline.worker
        assert worker is not None
        wait_for_index_to_settle(pipeline)
        alerts = worker.query("SELECT rule, state, scope, key, window_s, window_start FROM v_alerts ORDER BY fired_at")
        indexes = worker.query("SELECT scope, count() AS n FROM opinion_index_final GROUP BY scope")
        tables = worker.query(
            "SELECT count() AS n FROM system.tables WHERE database = currentDatabase()"
            " AND name IN ('opinion_index', 'alerts')"
        )
    return alerts, indexes, int(tables[0]["n"])


def test_shock_fires_for_the_shocked_ticker_alone_and_once_per_rule(pipeline_settings: Settings) -> None:
    alerts, indexes, tables = run_scenario(pipeline_settings, "shock", seed=1)
    shocked = shocked_ticker("shock", seed=1)
    firing = [a for a in alerts if a["state"] == "firing"]
    assert firing, f"no alert fired for the shock on {shocked}"
    assert {a["key"] for a in firing} == {shocked}
    rules = [a["rule"] for a in firing]
    assert len(rules) == len(set(rules)), f"a rule fired twice despite its cooldown: {rules}"
    assert {row["scope"] for row in indexes} == {"ticker", "source", "market"}
    assert tables == 2


def test_steady_fires_nothing(pipeline_settings: Settings) -> None:
    alerts, indexes, tables = run_scenario(pipeline_settings, "steady", seed=0)
    assert alerts == []
    assert indexes and tables == 2
