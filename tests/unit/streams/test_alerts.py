"""The alert engine on handcrafted index updates and scored events: fires, cooldown, resolves, flips, news."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from finpulse.rules import Rule, default_rules_path, load_rules, parse_rules
from finpulse.schemas import Alert, OpinionIndex
from finpulse.sinks.webhooks import Delivery, Undelivered
from finpulse.streams.alerts import (
    AlertEngine,
    EngineState,
    EntityState,
    alert_columns,
    alert_id,
    alert_records,
    undelivered_records,
)

T0 = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)
FIVE_MIN = timedelta(minutes=5)
CLOCK = datetime(2026, 1, 1, tzinfo=UTC)


def rules(yaml_rules: str) -> list[Rule]:
    return parse_rules("rules:\n" + yaml_rules)


CRASH = rules("""
  - name: crash
    kind: sentiment_z
    window: 5m
    threshold: -3
    min_buzz: 20
    max_net_sentiment: -0.3
    cooldown: 1h
    severity: critical
""")


def engine(rule_list: list[Rule], state: EngineState | None = None) -> AlertEngine:
    return AlertEngine(rule_list, state=state, clock=lambda: CLOCK)


def update(
    key: str = "AAPL",
    window: int = 0,
    *,
    buzz: int = 40,
    z: float | None = -5.0,
    net: float = -0.6,
    buzz_z: float | None = 1.0,
    closed: bool = False,
    window_s: int = 300,
    scope: str = "ticker",
    baseline: int = 12,
) -> OpinionIndex:
    """The update of the ``window``-th window of ``window_s`` after T0."""
    start = T0 + window * timedelta(seconds=window_s)
    return OpinionIndex(
        scope=scope, key=key, window_s=window_s, window_start=start, window_end=start + timedelta(seconds=window_s),
        buzz=buzz, mean_score=net * 0.8, net_sentiment=net, bullish_share=0.1, neutral_share=0.2,
        bearish_share=0.7, dispersion=0.3, buzz_z=buzz_z, sentiment_z=z, baseline_windows=baseline,
        closed=closed, updated_at=CLOCK,
    )  # fmt: skip


@dataclass(frozen=True)
class Contributor:
    event_id: str
    text: str
    score: float


def states(alerts: list[Alert]) -> list[tuple[str, str, str, datetime]]:
    return [(a.rule, a.state, a.key, a.window_start) for a in alerts]


def test_a_rule_fires_once_when_its_condition_starts_holding() -> None:
    alerting = engine(CRASH)
    assert alerting.evaluate_windows([update(z=-1.0, net=0.2)]) == []
    [alert] = alerting.evaluate_windows([update(z=-5.2, net=-0.61, buzz=42)])
    assert (alert.rule, alert.state, alert.severity, alert.scope, alert.key, alert.window_s) == (
        "crash", "firing", "critical", "ticker", "AAPL", 300,
    )  # fmt: skip
    assert alert.window_start == T0 and alert.fired_at == CLOCK
    assert alert.observed == {
        "sentiment_z": -5.2, "buzz": 42, "net_sentiment": -0.61, "mean_score": -0.488, "baseline_windows": 12,
    }  # fmt: skip
    assert alert.threshold == {"sentiment_z": -3.0, "min_buzz": 20, "max_net_sentiment": -0.3}
    assert alert.message == (
        "AAPL: sentiment z-score -5.2 <= -3.0 in the 5m window from 2025-03-03 09:00 UTC "
        "(42 events, net sentiment -0.61)"
    )
    # the same window growing, its close, and the next windows: still the same episode
    again = [update(z=-6.0), update(z=-6.0, closed=True), update(window=1, z=-4.0), update(window=1, closed=True)]
    assert alerting.evaluate_windows(again) == []


@pytest.mark.parametrize(
    "quiet",
    [
        update(buzz=19),  # too few events to mean anything
        update(net=-0.2),  # z-score alone: the level guard says opinion is not negative enough
        update(z=-2.9),
        update(z=None, baseline=1),  # no baseline yet
        update(baseline=2),  # below the rule's min_baseline_windows (3)
        update(window_s=3600),  # a window size the rule does not watch
        update(scope="market", key="all"),  # nor scope
    ],
)
def test_guards_keep_a_rule_quiet(quiet: OpinionIndex) -> None:
    assert engine(CRASH).evaluate_windows([quiet]) == []


def test_it_resolves_on_a_closed_window_that_no_longer_meets_the_condition() -> None:
    alerting = engine(CRASH)
    alerting.evaluate_windows([update(window=0)])
    # an open window that looks normal is not a recovery yet, nor is one still filling
    assert alerting.evaluate_windows([update(window=1, z=-0.5, net=0.1), update(window=1, buzz=3)]) == []
    [resolved] = alerting.evaluate_windows([update(window=1, z=-0.5, net=0.1, closed=True)])
    assert (resolved.state, resolved.window_start, resolved.severity) == ("resolved", T0 + FIVE_MIN, "info")
    assert resolved.message.startswith("AAPL: crash resolved in the 5m window from 2025-03-03 09:05 UTC")
    assert resolved.alert_id != alert_id("crash", "ticker", "AAPL", 300, T0 + FIVE_MIN, "firing")
    assert resolved.top_event_ids == []


def test_a_closed_window_with_too_few_events_resolves_it() -> None:
    alerting = engine(CRASH)
    alerting.evaluate_windows([update(window=0)])
    assert states(alerting.evaluate_windows([update(window=1, buzz=12, closed=True)])) == [
        ("crash", "resolved", "AAPL", T0 + FIVE_MIN)
    ]


def test_the_cooldown_holds_back_a_second_firing_until_it_has_passed() -> None:
    alerting = engine(CRASH)  # cooldown 1h = 12 windows of 5 minutes
    alerting.evaluate_windows([update(window=0)])
    alerting.evaluate_windows([update(window=1, z=0.0, net=0.1, closed=True)])
    for window in range(2, 12):  # the storm goes on: no new firing within the hour
        assert alerting.evaluate_windows([update(window=window)]) == []
    [again] = alerting.evaluate_windows([update(window=12)])
    assert (again.state, again.window_start) == ("firing", T0 + timedelta(hours=1))


def test_updates_are_taken_in_window_order_and_stale_ones_cannot_undo_a_newer_decision() -> None:
    alerting = engine(CRASH)
    batch = [update(window=2, z=-0.5, net=0.1, closed=True), update(window=1), update(window=1, closed=True)]
    assert states(alerting.evaluate_windows(batch)) == [
        ("crash", "firing", "AAPL", T0 + FIVE_MIN), ("crash", "resolved", "AAPL", T0 + 2 * FIVE_MIN),
    ]  # fmt: skip
    # a late re-close of window 1 (holding) arrives after the resolution of window 2: ignored
    assert alerting.evaluate_windows([update(window=1, closed=True)]) == []


def test_each_entity_has_its_own_state_and_key_filters_apply() -> None:
    watched = rules("  - {name: crash, kind: sentiment_z, threshold: -3, min_buzz: 20, keys: [AAPL, MSFT]}\n")
    alerting = engine(watched)
    alerts = alerting.evaluate_windows([update("AAPL"), update("MSFT"), update("TSLA")])
    assert [a.key for a in alerts] == ["AAPL", "MSFT"]


def test_alert_ids_are_stable_so_a_replayed_batch_after_a_restart_adds_nothing() -> None:
    batch = [update(window=0), update("MSFT", window=0)]
    first = AlertEngine(CRASH, clock=lambda: CLOCK).evaluate_windows(batch)
    later = AlertEngine(CRASH, clock=lambda: CLOCK + timedelta(hours=5)).evaluate_windows(batch)
    assert [a.alert_id for a in first] == [a.alert_id for a in later]
    assert len({a.alert_id for a in first}) == 2
    # the state a restart restores from the alerts table (firing since window 0): the replay fires nothing
    restored = EngineState(entities={("crash", "ticker", k): EntityState(True, T0, T0) for k in ("AAPL", "MSFT")})
    assert engine(CRASH, restored).evaluate_windows(batch) == []


def test_a_firing_quotes_the_windows_most_telling_contributors() -> None:
    alerting = AlertEngine(CRASH, top_events=2, clock=lambda: CLOCK)
    first = update(window=0)
    contributors = {
        ("ticker", "AAPL", 300, T0): [
            Contributor("mild", "AAPL dips", -0.3),
            Contributor("worst", "AAPL collapses " + "x" * 600, -0.95),
            Contributor("bad", "AAPL slides", -0.8),
            Contributor("good", "AAPL beats", 0.9),
        ],
        ("ticker", "AAPL", 300, T0 + FIVE_MIN): [Contributor("other-window", "later", -0.99)],
    }
    [alert] = alerting.evaluate_windows([first], contributors)
    assert alert.top_event_ids == ["worst", "bad"]
    assert alert.top_event_texts[0].startswith("AAPL collapses") and len(alert.top_event_texts[0]) == 500


def test_an_above_rule_fires_on_a_rise_and_quotes_the_most_positive() -> None:
    rally = rules(
        "  - {name: rally, kind: sentiment_z, direction: above, threshold: 3, min_buzz: 20, min_net_sentiment: 0.4}\n"
    )
    alerting = engine(rally)
    assert alerting.evaluate_windows([update(z=4.0, net=0.3)]) == []
    contributors = {("ticker", "AAPL", 300, T0): [Contributor("down", "d", -0.5), Contributor("up", "u", 0.9)]}
    [alert] = alerting.evaluate_windows([update(z=4.0, net=0.5)], contributors)
    assert alert.top_event_ids == ["up", "down"] and "z-score +4.0 >= +3.0" in alert.message


def test_a_buzz_spike_fires_on_the_buzz_z_score() -> None:
    spike = rules("  - {name: spike, kind: buzz_spike, threshold: 4, min_buzz: 40, cooldown: 2h}\n")
    alerting = engine(spike)
    assert alerting.evaluate_windows([update(buzz=39, buzz_z=20.0), update(buzz=45, buzz_z=3.9)]) == []
    [alert] = alerting.evaluate_windows([update(buzz=120, buzz_z=18.5)])
    assert alert.observed["buzz_z"] == 18.5 and alert.threshold == {"buzz_z": 4.0, "min_buzz": 40}
    assert "buzz z-score +18.5 >= +4.0" in alert.message


FLIP = rules("""
  - name: flip
    kind: sign_flip
    window: 1h
    direction: to_negative
    min_magnitude: 0.2
    min_buzz: 100
    cooldown: 6h
""")


def hour(window: int, net: float, *, buzz: int = 150, closed: bool = False, key: str = "AAPL") -> OpinionIndex:
    return update(key, window, net=net, buzz=buzz, closed=closed, window_s=3600, z=None, buzz_z=None)


def test_a_sign_flip_compares_with_the_previous_closed_window() -> None:
    alerting = engine(FLIP)
    assert alerting.evaluate_windows([hour(0, 0.3), hour(0, 0.3, closed=True)]) == []
    assert alerting.evaluate_windows([hour(1, -0.5, buzz=99)]) == []  # not enough events yet
    [alert] = alerting.evaluate_windows([hour(1, -0.45)])
    assert alert.observed == {"net_sentiment": -0.45, "previous_net_sentiment": 0.3, "buzz": 150, "previous_buzz": 150}
    assert "flipped from +0.30 to -0.45 in the 1h window from 2025-03-03 10:00 UTC" in alert.message
    # the next hour stays negative: no flip against the (negative) hour before, so it resolves once closed
    alerts = alerting.evaluate_windows([hour(1, -0.45, closed=True), hour(2, -0.4), hour(2, -0.4, closed=True)])
    assert states(alerts) == [("flip", "resolved", "AAPL", T0 + timedelta(hours=2))]


@pytest.mark.parametrize(
    ("before", "after", "before_buzz"),
    [
        (0.3, -0.1, 150),  # too small a move below zero
        (0.1, -0.5, 150),  # the previous hour was barely positive
        (-0.3, 0.5, 150),  # a flip the other way: this rule watches only turns to negative
        (0.3, -0.5, 40),  # the previous hour had too few events to compare with
    ],
)
def test_small_or_unwatched_flips_do_not_fire(before: float, after: float, before_buzz: int) -> None:
    alerting = engine(FLIP)
    alerting.evaluate_windows([hour(0, before, buzz=before_buzz, closed=True)])
    assert alerting.evaluate_windows([hour(1, after)]) == []


def test_a_flip_needs_a_previous_window() -> None:
    assert engine(FLIP).evaluate_windows([hour(5, -0.8), hour(5, -0.8, closed=True)]) == []


NEWS = rules("""
  - name: news
    kind: news_event
    keys: [AAPL, NVDA]
    max_score: -0.8
    keywords: [fraud, recall]
    cooldown: 1h
""")


def scored(*events: tuple[str, str, list[str], str, float, int]) -> dict[str, list[object]]:
    """Columns of a stored batch: (id, kind, tickers, text, score, minutes after T0)."""
    return {
        "event_id": [e[0] for e in events],
        "kind": [e[1] for e in events],
        "tickers": [e[2] for e in events],
        "text": [e[3] for e in events],
        "score": [e[4] for e in events],
        "confidence": [0.9 for _ in events],
        "event_time": [T0 + timedelta(minutes=e[5]) for e in events],
    }


def test_a_single_very_negative_news_event_about_a_watched_ticker_fires() -> None:
    alerting = engine(NEWS)
    batch = scored(
        ("n1", "news", ["NVDA"], "Nvidia shares plunge after report alleging fraud\nbody", -0.92, 1),
        ("n2", "news", ["NVDA"], "Nvidia recall widens", -0.85, 2),
        ("s1", "social", ["NVDA"], "$NVDA fraud!!", -0.95, 1),  # not news
        ("n3", "news", ["MSFT"], "Microsoft fraud probe", -0.95, 1),  # not watched
        ("n4", "news", ["AAPL"], "Apple recall is minor", -0.5, 1),  # not negative enough
        ("n5", "news", ["AAPL"], "Apple shares slide on weak demand", -0.9, 1),  # no keyword
    )
    [alert] = alerting.evaluate_events(batch)
    assert (alert.rule, alert.state, alert.scope, alert.key, alert.window_s) == ("news", "firing", "ticker", "NVDA", 0)
    assert alert.window_start == T0 + timedelta(minutes=1)
    assert alert.top_event_ids == ["n1", "n2"] and alert.observed == {"score": -0.92, "confidence": 0.9}
    assert alert.message == (
        "NVDA: very negative news (score -0.92 <= -0.80): Nvidia shares plunge after report alleging fraud"
    )
    # within the cooldown: quiet; after it: fires again
    assert alerting.evaluate_events(scored(("n6", "news", ["NVDA"], "fraud deepens", -0.9, 30))) == []
    [later] = alerting.evaluate_events(scored(("n7", "news", ["NVDA"], "fraud deepens", -0.9, 61)))
    assert later.top_event_ids == ["n7"] and later.alert_id != alert.alert_id


def test_event_rules_ignore_index_updates_and_window_rules_ignore_events() -> None:
    assert engine(NEWS).evaluate_windows([update()]) == []
    assert engine(CRASH).evaluate_events(scored(("n1", "news", ["AAPL"], "fraud", -0.99, 0))) == []
    assert engine(NEWS).evaluate_events(scored()) == []


def test_the_packaged_rules_fire_each_once_on_a_shock_and_never_on_steady_chatter() -> None:
    """Figures shaped like the feed's: a busy ticker has ~15 events per 5 minutes, a shock ~150."""
    alerting = engine(load_rules(default_rules_path()))
    steady = []
    for window in range(48):
        steady += [update("NVDA", window, buzz=15, z=-3.5, net=0.2, buzz_z=2.0), update("NVDA", window, buzz=16,
                   z=-4.0, net=0.15, buzz_z=2.5, closed=True)]  # fmt: skip
    for window in range(4):
        steady += [hour(window, 0.25, buzz=180, key="NVDA"), hour(window, 0.25, buzz=180, closed=True, key="NVDA")]
    assert alerting.evaluate_windows(steady) == []

    shock = [
        update("NVDA", 48, buzz=60, z=-7.5, net=-0.6, buzz_z=15.0),
        update("NVDA", 48, buzz=150, z=-7.7, net=-0.66, buzz_z=40.0, closed=True),
        update("NVDA", 49, buzz=180, z=-3.2, net=-0.7, buzz_z=4.5, closed=True),
        update("NVDA", 50, buzz=180, z=-2.0, net=-0.7, buzz_z=2.5, closed=True),
        hour(4, -0.4, buzz=260, key="NVDA"),
        update("NVDA", 51, buzz=180, z=-3.1, net=-0.7, buzz_z=4.1),  # within the cooldown
    ]
    news = scored(("n1", "news", ["NVDA"], "Nvidia stock tumbles as a short-seller report alleging fraud", -0.9, 240))
    alerts = alerting.evaluate_windows(shock) + alerting.evaluate_events(news)
    assert sorted((a.rule, a.state) for a in alerts) == [
        ("ticker-buzz-spike", "firing"), ("ticker-buzz-spike", "resolved"), ("ticker-opinion-flip", "firing"),
        ("ticker-sentiment-crash", "firing"), ("ticker-sentiment-crash", "resolved"),
        ("watched-ticker-severe-news", "firing"),
    ]  # fmt: skip
    assert {a.key for a in alerts} == {"NVDA"}


def _alert(**changes: object) -> Alert:
    [alert] = engine(CRASH).evaluate_windows([update()])
    return alert.model_copy(update=changes)


def test_alert_rows_keep_measured_figures_only() -> None:
    alert = _alert(observed={"sentiment_z": -5.0, "buzz": 40, "previous_net_sentiment": None})
    columns = alert_columns([alert], stored_at=CLOCK)
    assert columns["alert_id"] == [alert.alert_id] and columns["stored_at"] == [CLOCK]
    assert columns["observed"] == [{"sentiment_z": -5.0, "buzz": 40.0}]
    assert columns["threshold"] == [{"sentiment_z": -3.0, "min_buzz": 20.0, "max_net_sentiment": -0.3}]
    assert {len(values) for values in columns.values()} == {1}


def test_topic_records_carry_the_alert_json_keyed_by_entity() -> None:
    alert = _alert()
    [record] = alert_records([alert])
    assert record.key == b"AAPL" and Alert.model_validate_json(record.value) == alert
    assert dict(record.headers) == {"alert-id": alert.alert_id.encode(), "rule": b"crash", "state": b"firing"}
    failure = Undelivered(alert, Delivery("http://hook", alert.alert_id, False, 5, 503, "HTTP 503", 1.0))
    [dead] = undelivered_records([failure])
    headers = dict(dead.headers)
    assert json.loads(dead.value)["alert_id"] == alert.alert_id
    assert (headers["webhook-url"], headers["error"], headers["status"], headers["attempts"]) == (
        b"http://hook", b"HTTP 503", b"503", b"5",
    )  # fmt: skip
