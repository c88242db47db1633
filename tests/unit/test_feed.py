import json
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from finpulse.entities import EntityLinker
from finpulse.feed import (
    SCENARIOS,
    SHOCK_CANDIDATES,
    FeedEvent,
    default_start,
    generate,
    generate_labeled,
    shocked_ticker,
    to_message,
)
from finpulse.schemas import NewsArticle, SocialPost

START = datetime(2025, 3, 3, 9, 30, tzinfo=UTC)
SPAN = timedelta(hours=6)


def event_time(event: NewsArticle | SocialPost) -> datetime:
    return event.published_at if isinstance(event, NewsArticle) else event.created_at


def event_text(event: NewsArticle | SocialPost) -> str:
    return f"{event.headline}\n{event.body}" if isinstance(event, NewsArticle) else event.text


@pytest.fixture(scope="module")
def steady() -> list[FeedEvent]:
    return generate_labeled("steady", events=6000, seed=11, start=START)


@pytest.fixture(scope="module")
def shock() -> list[FeedEvent]:
    return generate_labeled("shock", events=6000, seed=11, start=START)


def test_same_seed_same_events() -> None:
    first = generate("shock", events=400, seed=3, start=START)
    second = generate("shock", events=400, seed=3, start=START)
    assert [e.model_dump() for e in first] == [e.model_dump() for e in second]


def test_other_seed_other_events() -> None:
    first = generate("steady", events=200, seed=1, start=START)
    second = generate("steady", events=200, seed=2, start=START)
    assert [event_text(e) for e in first] != [event_text(e) for e in second]


def test_ids_are_unique_and_name_scenario_seed_and_index(steady: list[FeedEvent]) -> None:
    ids = [item.event.id for item in steady]
    assert len(set(ids)) == len(ids)
    assert ids[0] == "steady-11-000000"
    assert ids[-1] == "steady-11-005999"


def test_every_event_round_trips_through_its_topic_schema(shock: list[FeedEvent]) -> None:
    for item in shock:
        topic, key, value = to_message(item.event)
        schema = NewsArticle if topic == "news.raw" else SocialPost
        assert isinstance(item.event, schema)
        assert key == item.event.id.encode()
        assert schema.model_validate_json(value) == item.event
        assert json.loads(value)["id"] == item.event.id


def test_kinds_sources_and_platforms(steady: list[FeedEvent]) -> None:
    news = [item.event for item in steady if isinstance(item.event, NewsArticle)]
    posts = [item.event for item in steady if isinstance(item.event, SocialPost)]
    assert 0.15 < len(news) / len(steady) < 0.35
    assert {n.source for n in news} == {"reuters", "bloomberg", "wsj", "cnbc", "ft", "caixin", "scmp"}
    assert {p.platform for p in posts} == {"x", "stocktwits", "reddit"}
    assert all(n.body and n.url and n.tickers for n in news)
    assert any("🚀" in p.text for p in posts)
    assert len({p.author for p in posts}) > 100


def test_the_linker_finds_exactly_the_tickers_each_event_is_about(
    steady: list[FeedEvent], shock: list[FeedEvent]
) -> None:
    linker = EntityLinker.default()
    for item in steady + shock:
        assert set(linker.link(event_text(item.event))) == set(item.tickers), event_text(item.event)
        if item.event.tickers is not None:
            assert item.event.tickers == list(item.tickers)


def test_events_cover_the_span_in_time_order_with_a_few_late_ones(steady: list[FeedEvent]) -> None:
    times = [event_time(item.event) for item in steady]
    assert START - timedelta(minutes=6) <= min(times) and max(times) <= START + SPAN + timedelta(minutes=1)
    assert {int((t - START) / timedelta(hours=1)) for t in times} >= set(range(6))
    running_max = times[0]
    late = 0
    for moment in times[1:]:
        late += moment < running_max
        running_max = max(running_max, moment)
    assert 0 < late < 0.03 * len(times)


def test_all_three_stances_carry_signal(steady: list[FeedEvent]) -> None:
    shares = Counter(item.stance for item in steady)
    assert all(shares[stance] > 0.1 * len(steady) for stance in ("bullish", "neutral", "bearish"))


def test_steady_opinion_is_stable_per_company() -> None:
    events = generate_labeled("steady", events=20_000, seed=5, start=START)
    value = {"bullish": 1, "neutral": 0, "bearish": -1}
    for ticker in SHOCK_CANDIDATES:
        hourly: dict[int, list[int]] = {}
        for item in events:
            if item.tickers[0] == ticker:
                hour = int((event_time(item.event) - START) / timedelta(hours=1))
                hourly.setdefault(hour, []).append(value[item.stance])
        means = [sum(v) / len(v) for v in hourly.values() if len(v) >= 50]
        assert len(means) >= 5
        assert max(means) - min(means) < 0.2, (ticker, means)


def test_shocked_ticker_is_deterministic_and_overridable() -> None:
    chosen = {shocked_ticker("shock", seed) for seed in range(40)}
    assert chosen <= set(SHOCK_CANDIDATES) and len(chosen) > 1
    assert shocked_ticker("shock", 3) == shocked_ticker("shock", 3)
    assert shocked_ticker("shock", 3, ticker="0700.HK") == "0700.HK"
    assert shocked_ticker("steady", 3) is None
    with pytest.raises(ValueError, match="not in the bundled"):
        shocked_ticker("shock", 3, ticker="NOPE")


def test_shock_is_a_concentrated_negative_burst_on_one_ticker(shock: list[FeedEvent]) -> None:
    target = shocked_ticker("shock", 11)
    burst = [item for item in shock if item.shock]
    assert len(burst) == round(6000 * SCENARIOS["shock"].shock.share)  # type: ignore[union-attr]
    assert all(item.tickers == (target,) for item in burst)
    assert sum(item.stance == "bearish" for item in burst) > 0.8 * len(burst)

    burst_start = min(event_time(item.event) for item in burst)
    burst_end = max(event_time(item.event) for item in burst)
    assert burst_end - burst_start <= timedelta(minutes=31)
    assert START + SPAN * 0.55 < burst_start < START + SPAN * 0.65

    def target_share(items: list[FeedEvent]) -> float:
        return sum(target in item.tickers for item in items) / len(items)

    during = [item for item in shock if burst_start <= event_time(item.event) <= burst_end]
    outside = [item for item in shock if not burst_start <= event_time(item.event) <= burst_end]
    assert target_share(during) > 0.3
    assert target_share(during) > 5 * target_share(outside)


def test_shock_leaves_other_tickers_alone(shock: list[FeedEvent], steady: list[FeedEvent]) -> None:
    target = shocked_ticker("shock", 11)
    others = [item for item in shock if not item.shock and target not in item.tickers]
    bearish_share = sum(item.stance == "bearish" for item in others) / len(others)
    steady_share = sum(item.stance == "bearish" for item in steady) / len(steady)
    assert abs(bearish_share - steady_share) < 0.05
    assert len([item for item in shock if not item.shock]) == len(shock) - round(6000 * 0.05)


def test_shock_ticker_override() -> None:
    events = generate_labeled("shock", events=1000, seed=1, start=START, shock_ticker="0700.HK")
    assert {item.tickers for item in events if item.shock} == {("0700.HK",)}


def test_scenario_defaults_are_documented_numbers() -> None:
    assert set(SCENARIOS) == {"steady", "shock"}
    for scenario in SCENARIOS.values():
        assert 1000 <= scenario.default_events <= 30_000
        assert timedelta(hours=3) <= scenario.span <= timedelta(hours=12)


def test_default_start_ends_the_span_at_the_current_hour() -> None:
    now = datetime(2025, 6, 1, 14, 37, 12, tzinfo=UTC)
    assert default_start(SPAN, now) == datetime(2025, 6, 1, 8, tzinfo=UTC)
    events = generate("steady", events=50, seed=0)
    assert max(event_time(e) for e in events) <= datetime.now(UTC)


def test_custom_span_and_count() -> None:
    events = generate("steady", events=300, seed=0, start=START, span=timedelta(minutes=30))
    assert len(events) == 300
    assert max(event_time(e) for e in events) <= START + timedelta(minutes=31)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"scenario": "crash"}, "unknown scenario 'crash'; choose one of steady, shock"),
        ({"events": -1}, "events must be >= 0"),
        ({"start": datetime(2025, 1, 1)}, "timezone-aware"),
        ({"span": timedelta(0)}, "span must be positive"),
    ],
)
def test_bad_arguments_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        generate(**{"scenario": "steady", "events": 10, **kwargs})


def test_no_events() -> None:
    assert generate("shock", events=0, seed=0, start=START) == []
