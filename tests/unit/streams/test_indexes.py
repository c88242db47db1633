"""Opinion-index logic on handcrafted events with known answers: windows, keys, figures, lateness, z-scores."""

from __future__ import annotations

import json
import math
import random
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from finpulse.streams.index_agent import stored_earlier_flags
from finpulse.streams.indexes import (
    TOP_EVENTS_PER_SIDE,
    TOP_TEXT_CHARS,
    BatchPartials,
    IndexConfig,
    Indexer,
    KeyPartial,
    KeyState,
    UndecodableRecord,
    WindowAgg,
    WindowUpdate,
    batch_partials,
    decode_partials_message,
    decode_table_row,
    figures,
    record_id,
    to_ms,
    to_opinion_index,
    window_start_ms,
    with_late_events,
    z_scores,
)

T0 = datetime(2025, 3, 3, 0, 0, tzinfo=UTC)
MARKETS = {"AAPL": "US", "MSFT": "US", "0700.HK": "HK"}


@dataclass
class Ev:
    id: str
    at_s: float
    score: float
    label: str = "neutral"
    tickers: list[str] = field(default_factory=list)
    kind: str = "social"
    source: str = "x"
    offset: int = 0
    partition: int = 0
    text: str = ""


def columns(events: list[Ev]) -> dict[str, list[object]]:
    return {
        "event_id": [e.id for e in events],
        "kind": [e.kind for e in events],
        "source": [e.source for e in events],
        "tickers": [e.tickers for e in events],
        "text": [e.text or f"text of {e.id}" for e in events],
        "label": [e.label for e in events],
        "score": [e.score for e in events],
        "event_time": [T0 + timedelta(seconds=e.at_s) for e in events],
        "source_topic": ["t.social.raw"] * len(events),
        "partition": [e.partition for e in events],
        "offset": [e.offset for e in events],
        "stored_at": [T0] * len(events),
    }


def batch_of(
    events: list[Ev], config: IndexConfig, replayed: list[bool] | None = None, repeated: list[bool] | None = None
) -> BatchPartials:
    flags = None if replayed is None else np.array(replayed)
    repeats = None if repeated is None else np.array(repeated)
    return batch_partials(columns(events), config, MARKETS.get, flags, repeats)


def partials_of(
    events: list[Ev], config: IndexConfig, replayed: list[bool] | None = None, repeated: list[bool] | None = None
) -> dict[str, KeyPartial]:
    # through JSON, as the partials travel on the topic
    batch = batch_of(events, config, replayed, repeated)
    return {p.table_key: KeyPartial.from_document(json.loads(p.to_json())) for p in batch.keys}


def window(partial: KeyPartial, window_s: int, start_s: int):
    start_ms = to_ms(T0) + start_s * 1000
    matches = [w for w in partial.windows if w.window_s == window_s and w.start_ms == start_ms]
    assert len(matches) == 1, (partial.table_key, window_s, start_s, partial.windows)
    return matches[0]


class Feeder:
    """Drives an Indexer the way the agent does: each batch's partials at increasing topic offsets."""

    def __init__(self, config: IndexConfig) -> None:
        self.config = config
        self.indexer = Indexer(config)
        self.offset = 0
        self.records: dict[tuple[str, int, int], WindowUpdate] = {}  # the newest version of each record

    def _keep(self, outcome):
        for u in outcome.updates:
            ref = (f"{u.scope}:{u.key}", u.update.window_s, u.update.window.start_ms)
            if ref in self.records:
                assert self.records[ref].window.revision < u.update.window.revision
                assert u.update.closed or not self.records[ref].closed, "a closed window never reopens"
            self.records[ref] = u.update
        return outcome

    def batch(
        self,
        events: list[Ev],
        replayed: list[bool] | None = None,
        behind: tuple[str, ...] = (),
        repeated: list[bool] | None = None,
    ):
        """A scored batch; its raw partitions caught up unless named in ``behind``."""
        messages = []
        for table_key, partial in partials_of(events, self.config, replayed, repeated).items():
            messages.append((table_key, 0, self.offset, partial))
            self.offset += 1
        latest = batch_of(events, self.config).progress
        progress = {tp: (latest.get(tp), tp not in behind) for tp in set(latest) | set(behind)}
        return self._keep(self.indexer.apply(messages, now_ms=1, ticks=[(0, progress)]))

    def tick(self, at_s: float | None, raw_tp: str = "t.social.raw:0", caught_up: bool = True):
        latest = None if at_s is None else to_ms(T0) + int(at_s * 1000)
        return self._keep(self.indexer.apply([], now_ms=1, ticks=[(0, {raw_tp: (latest, caught_up)})]))


def updates_by_window(outcome, table_key: str) -> dict[tuple[int, int], object]:
    found = {}
    for u in outcome.updates:
        if f"{u.scope}:{u.key}" == table_key:
            ref = (u.update.window_s, (u.update.window.start_ms - to_ms(T0)) // 1000)
            assert ref not in found, f"window {ref} of {table_key} updated twice in one batch"
            found[ref] = u
    return found


# --- window arithmetic --------------------------------------------------------------------------------


def test_windows_are_half_open_and_aligned_to_the_epoch() -> None:
    assert window_start_ms(59_999, 60) == 0
    assert window_start_ms(60_000, 60) == 60_000
    assert window_start_ms(299_999, 300) == 0
    late_evening = to_ms(datetime(2025, 3, 3, 23, 59, 59, 999_000, tzinfo=UTC))
    assert window_start_ms(late_evening, 86400) == to_ms(datetime(2025, 3, 3, tzinfo=UTC))
    assert window_start_ms(late_evening, 3600) == to_ms(datetime(2025, 3, 3, 23, tzinfo=UTC))


def test_event_times_are_truncated_to_the_millisecond_like_datetime64_3() -> None:
    assert to_ms(datetime(2025, 3, 3, 0, 0, 59, 999_999, tzinfo=UTC)) % 60_000 == 59_999


# --- partial aggregates of a scored batch ---------------------------------------------------------------


def test_an_event_counts_once_for_each_of_its_keys() -> None:
    config = IndexConfig(windows_s=(60, 300))
    events = [
        Ev("e1", 10, 0.5, "bullish", ["AAPL", "0700.HK"], kind="news", source="reuters", offset=1),
        Ev("e2", 50, -0.5, "bearish", ["AAPL", "MSFT", "AAPL"], offset=2),
        Ev("e3", 70, 0.25, "neutral", [], offset=3),
        Ev("e4", 20, 0.75, "bullish", ["XYZQ"], offset=4),
        Ev("e1", 30, -1.0, "bearish", ["MSFT"], offset=5),  # a repeated id: the first row counts
    ]
    partials = partials_of(events, config)

    assert set(partials) == {
        "ticker:AAPL", "ticker:0700.HK", "ticker:MSFT", "ticker:XYZQ", "market:US", "market:HK", "market:all",
        "source:news", "source:news:reuters", "source:social", "source:social:x",
    }  # fmt: skip
    aapl = window(partials["ticker:AAPL"], 60, 0)
    assert (aapl.n, aapl.total, aapl.total_sq, aapl.bullish, aapl.bearish, aapl.neutral) == (2, 0.0, 0.5, 1, 1, 0)
    assert window(partials["ticker:MSFT"], 60, 0).n == 1
    assert window(partials["market:US"], 60, 0).n == 2  # e1 and e2, e2 once despite AAPL twice and MSFT
    assert window(partials["market:HK"], 60, 0).n == 1
    assert window(partials["market:all"], 60, 0).n == 3
    assert window(partials["market:all"], 60, 60).n == 1
    assert window(partials["market:all"], 300, 0).n == 4
    assert window(partials["source:social:x"], 60, 0).n == 2
    assert window(partials["source:news:reuters"], 60, 0).bullish == 1
    assert batch_of(events, config).progress == {"t.social.raw:0": to_ms(T0) + 70_000}
    assert partials["market:all"].raw_hw == {"t.social.raw:0": 4}
    assert partials["ticker:MSFT"].raw_hw == {"t.social.raw:0": 2}


def test_scores_are_rounded_to_float32_as_scored_events_stores_them() -> None:
    partials = partials_of([Ev("a", 1, 0.1)], IndexConfig(windows_s=(60,)))
    assert window(partials["market:all"], 60, 0).total == float(np.float32(0.1))


def test_each_window_names_its_most_negative_and_most_positive_events() -> None:
    scores = [-0.9, 0.8, -0.1, 0.0, 0.3, -0.7, 0.95, -0.5, 0.1, 0.6]
    events = [Ev(f"e{i}", i, s, text="x" * 1000) for i, s in enumerate(scores)]
    partial = partials_of(events, IndexConfig(windows_s=(60,)))["market:all"]
    ranked = sorted(events, key=lambda e: e.score)
    expected = {e.id for e in ranked[:TOP_EVENTS_PER_SIDE] + ranked[-TOP_EVENTS_PER_SIDE:]}
    assert set(window(partial, 60, 0).top) == expected
    assert set(partial.contributors) == expected
    assert all(len(c.text) == TOP_TEXT_CHARS for c in partial.contributors.values())
    assert partial.contributors["e0"].score == pytest.approx(-0.9)
    assert partial.contributors["e0"].source == "social:x"


# --- figures and z-scores ------------------------------------------------------------------------------


def test_figures_of_a_window() -> None:
    scores = [0.3, -0.1, 0.2, 0.0]
    agg = WindowAgg(0, n=4, total=sum(scores), total_sq=sum(s * s for s in scores), bullish=2, bearish=1, neutral=1)
    f = figures(agg)
    assert (f.buzz, f.net_sentiment, f.bullish_share, f.bearish_share, f.neutral_share) == (4, 0.25, 0.5, 0.25, 0.25)
    assert f.mean_score == pytest.approx(0.1)
    assert f.dispersion == pytest.approx(np.std(scores))
    assert figures(WindowAgg(0, late=3)) == type(f)(0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)


def test_z_scores_against_the_baseline() -> None:
    baseline = [WindowAgg(i * 60_000, n=n, total=n * m) for i, (n, m) in enumerate([(8, 0.1), (12, 0.3), (10, 0.2)])]
    z = z_scores(WindowAgg(240_000, n=30, total=30 * -0.4), baseline, min_baseline=3)
    buzz_std = np.std([8, 12, 10])  # 1.633 < sqrt(10): the Poisson floor applies
    assert z.buzz_z == pytest.approx((30 - 10) / math.sqrt(10))
    assert buzz_std < math.sqrt(10)
    assert z.sentiment_z == pytest.approx((-0.4 - 0.2) / np.std([0.1, 0.3, 0.2]))
    assert z.baseline == 3
    assert z_scores(WindowAgg(0, n=30, total=1.0), baseline[:2], min_baseline=3) == type(z)(None, None, 2)


def test_a_flat_baseline_gives_floored_z_scores_not_infinity() -> None:
    baseline = [WindowAgg(i * 60_000, n=4, total=0.0) for i in range(5)]
    z = z_scores(WindowAgg(300_000, n=8, total=0.8), baseline, min_baseline=3)
    assert z.buzz_z == pytest.approx((8 - 4) / 2)  # floor sqrt(mean buzz) = 2
    assert z.sentiment_z == pytest.approx(0.1 / 0.05)  # floor SENTIMENT_Z_FLOOR


# --- window state over batches -------------------------------------------------------------------------


def test_open_windows_update_once_per_batch_and_close_at_the_watermark() -> None:
    feeder = Feeder(IndexConfig(windows_s=(60,), allowed_lateness_ms=30_000))
    first = updates_by_window(feeder.batch([Ev("a", 10, 0.5, "bullish"), Ev("b", 20, -0.1)]), "market:all")
    assert set(first) == {(60, 0)}
    assert (first[(60, 0)].update.window.n, first[(60, 0)].update.closed) == (2, False)

    second = updates_by_window(feeder.batch([Ev("c", 89, 0.2)]), "market:all")  # watermark 59 s: still open
    assert set(second) == {(60, 60)}
    third = updates_by_window(feeder.batch([Ev("d", 91, 0.2)]), "market:all")  # watermark 61 s: closes [0, 60)
    assert third[(60, 0)].update.closed and third[(60, 0)].update.window.n == 2
    assert not third[(60, 60)].update.closed and third[(60, 60)].update.window.n == 2
    revisions = [first[(60, 0)].update.window.revision, third[(60, 0)].update.window.revision]
    assert revisions == [1, 2]


def test_a_late_event_is_counted_on_its_closed_window_not_merged() -> None:
    feeder = Feeder(IndexConfig(windows_s=(60, 300), allowed_lateness_ms=0))
    feeder.batch([Ev("a", 10, 0.5), Ev("b", 130, 0.5)])  # closes [0, 60) and [60, 120)
    late = updates_by_window(feeder.batch([Ev("late", 30, -0.9, "bearish")]), "market:all")
    assert set(late) == {(60, 0), (300, 0)}
    closed = late[(60, 0)].update
    assert (closed.closed, closed.window.n, closed.window.late, closed.window.bearish) == (True, 1, 1, 0)
    merged = late[(300, 0)].update  # still open at 300 s: on time there
    assert (merged.closed, merged.window.n, merged.window.late) == (False, 3, 0)
    assert feeder.indexer.late_totals() == (1, 0)


def test_a_late_event_of_a_window_that_never_opened_gets_a_record_of_its_own() -> None:
    feeder = Feeder(IndexConfig(windows_s=(60,), allowed_lateness_ms=0))
    feeder.batch([Ev("a", 10, 0.5, tickers=["AAPL"]), Ev("b", 130, 0.5, tickers=["AAPL"])])
    late = updates_by_window(feeder.batch([Ev("late", 70, 0.1, tickers=["AAPL"])]), "ticker:AAPL")
    record = to_opinion_index("ticker", "AAPL", late[(60, 60)].update, T0)
    assert (record.buzz, record.late_events, record.closed, record.buzz_z) == (0, 1, True, None)


def test_late_events_beyond_the_kept_history_are_handed_out_to_count_on_the_stored_record() -> None:
    feeder = Feeder(IndexConfig(windows_s=(60,), baseline_windows=2, min_baseline=2, allowed_lateness_ms=0))
    feeder.batch([Ev(f"e{i}", 60 * i + 1, 0.1) for i in range(6)] + [Ev("end", 400, 0.0)])
    outcome = feeder.batch([Ev("old", 5, 0.3), Ev("old2", 7, -0.3)])  # [0, 60) left the kept history
    assert updates_by_window(outcome, "market:all") == {}
    late = {(e.scope, e.key): e for e in outcome.late_beyond_history}
    assert (late[("market", "all")].window_s, late[("market", "all")].start_ms, late[("market", "all")].events) == (
        60, to_ms(T0), 2,
    )  # fmt: skip
    assert feeder.indexer.late_totals() == (2, 2)

    stored = to_opinion_index("market", "all", WindowUpdate(60, WindowAgg(to_ms(T0), n=1, total=0.1), True), T0)
    counted = with_late_events(stored, late[("market", "all")], T0 + timedelta(hours=1))
    assert (counted.buzz, counted.mean_score, counted.late_events, counted.closed) == (1, 0.1, 2, True)
    assert counted.updated_at == T0 + timedelta(hours=1)
    never_stored = with_late_events(None, late[("market", "all")], T0)
    assert (never_stored.buzz, never_stored.late_events, never_stored.window_end - never_stored.window_start) == (
        0, 2, timedelta(seconds=60),
    )  # fmt: skip
    assert late[("market", "all")].record_id() != late[("source", "social")].record_id()


def test_z_scores_of_closed_windows_use_the_previous_windows_with_events() -> None:
    config = IndexConfig(windows_s=(60,), baseline_windows=3, min_baseline=3, allowed_lateness_ms=0)
    feeder = Feeder(config)
    history = [(5, 0.9), (8, 0.1), (12, 0.3), (10, 0.2)]  # the first falls out of a 3-window baseline
    events = []
    for minute, (n, mean) in enumerate(history):
        events += [Ev(f"m{minute}-{i}", minute * 60 + 1 + i, mean) for i in range(n)]
    events += [Ev(f"shock-{i}", 5 * 60 + 1 + i * 0.1, -0.4) for i in range(30)]  # minute 4 has no events
    feeder.batch(events)
    closed = updates_by_window(feeder.tick(6 * 60), "market:all")[(60, 300)].update
    assert closed.closed and closed.window.baseline == 3
    assert closed.window.buzz_z == pytest.approx((30 - 10) / math.sqrt(10))
    assert closed.window.sentiment_z == pytest.approx((-0.4 - 0.2) / np.std([0.1, 0.3, 0.2]), rel=1e-5)
    state = feeder.indexer.states["market:all"].sizes[60]
    # the history keeps the last 3 windows with events: minutes 2, 3 and 5; minute 2 had 2 windows before it
    assert [(w.baseline, w.buzz_z is None) for w in state.closed] == [(2, True), (3, False), (3, False)]


def test_a_tick_closes_the_windows_of_keys_that_went_quiet() -> None:
    feeder = Feeder(IndexConfig(windows_s=(60,), allowed_lateness_ms=0))
    feeder.batch([Ev("a", 10, 0.5, tickers=["MSFT"])])
    closed = updates_by_window(feeder.tick(61), "ticker:MSFT")
    assert closed[(60, 0)].update.closed


def test_the_watermark_waits_for_a_raw_partition_with_a_backlog() -> None:
    feeder = Feeder(IndexConfig(windows_s=(60,), allowed_lateness_ms=0))
    p0 = "t.social.raw:0"
    # a backlog: partition 1 is read far ahead of partition 0, which still has unread messages
    feeder.batch([Ev("a0", 10, 0.1, partition=0), Ev("a1", 600, 0.1, partition=1)], behind=(p0,))
    assert feeder.indexer.watermark_ms(0) == to_ms(T0) + 10_000
    caught_up = feeder.batch([Ev("b0", 50, 0.1, partition=0)], behind=(p0,))  # not late: [0, 60) is open
    assert updates_by_window(caught_up, "market:all")[(60, 0)].update.window.n == 2
    assert feeder.indexer.late_totals() == (0, 0)
    # partition 0 has been read to its end: the watermark moves to the latest event of any partition
    done = feeder.tick(None, raw_tp=p0)
    assert feeder.indexer.watermark_ms(0) == to_ms(T0) + 600_000
    assert updates_by_window(done, "market:all")[(60, 0)].update.closed


def test_a_partition_with_a_backlog_of_unknown_time_holds_the_watermark() -> None:
    feeder = Feeder(IndexConfig(windows_s=(60,), allowed_lateness_ms=0))
    feeder.batch([Ev("a", 100, 0.1)])
    assert feeder.indexer.watermark_ms(0) == to_ms(T0) + 100_000
    feeder.tick(None, raw_tp="t.news.raw:0", caught_up=False)  # assigned, not read yet
    feeder.batch([Ev("b", 500, 0.1)])
    assert feeder.indexer.watermark_ms(0) == to_ms(T0) + 100_000


def test_the_watermark_never_goes_back() -> None:
    feeder = Feeder(IndexConfig(windows_s=(60,), allowed_lateness_ms=0))
    feeder.batch([Ev("a", 300, 0.1, partition=0)])
    feeder.batch([Ev("b", 100, 0.1, partition=1)], behind=("t.social.raw:1",))  # behind, but further back
    assert feeder.indexer.watermark_ms(0) == to_ms(T0) + 300_000
    assert feeder.indexer.late_totals() == (1, 0)


def test_updates_carry_the_top_contributors_collected_over_the_windows_batches() -> None:
    feeder = Feeder(IndexConfig(windows_s=(60,), allowed_lateness_ms=0))
    first = feeder.batch([Ev(f"a{i}", i, s) for i, s in enumerate([-0.9, -0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7])])
    (update,) = [u for u in first.updates if u.key == "all"]
    assert [c.event_id for c in update.contributors] == ["a0", "a1", "a2", "a5", "a6", "a7"]  # most negative first
    second = feeder.batch([Ev("b0", 20, -0.95), Ev("b1", 30, 0.99), Ev("late-enough", 61, 0.0)])
    (closed,) = [u for u in second.updates if u.key == "all" and u.update.closed]
    assert [c.event_id for c in closed.contributors] == ["b0", "a0", "a1", "a6", "a7", "b1"]
    assert closed.contributors[0].text == "text of b0" and closed.contributors[0].source == "social:x"


# --- exactly-once over redelivery ----------------------------------------------------------------------


def test_a_redelivered_partial_is_skipped() -> None:
    config = IndexConfig(windows_s=(60,))
    indexer = Indexer(config)
    partial = partials_of([Ev("a", 10, 0.5)], config)["market:all"]
    indexer.apply([("market:all", 0, 7, partial)], now_ms=1)
    outcome = indexer.apply([("market:all", 0, 7, partial)], now_ms=1)
    assert outcome.skipped == 1 and outcome.updates == []
    assert indexer.states["market:all"].sizes[60].open[to_ms(T0)].n == 1


def test_replayed_events_count_once_whether_or_not_their_first_attempt_was_applied() -> None:
    config = IndexConfig(windows_s=(60,))
    first = [Ev(f"e{i}", i, 0.1, offset=i) for i in range(4)]
    redelivered = first + [Ev(f"e{i}", i, 0.1, offset=i) for i in range(4, 6)]
    replayed = [True] * 4 + [False] * 2

    applied = Feeder(config)
    applied.batch(first)
    applied.batch(redelivered, replayed)
    assert applied.indexer.states["market:all"].sizes[60].open[to_ms(T0)].n == 6

    lost_before_publishing = Feeder(config)
    lost_before_publishing.batch(redelivered, replayed)
    assert lost_before_publishing.indexer.states["market:all"].sizes[60].open[to_ms(T0)].n == 6


def test_a_stored_event_is_replayed_from_the_same_message_and_repeated_from_another() -> None:
    batch = [Ev("e1", 1, 0.1, offset=1), Ev("e2", 2, 0.1, offset=7), Ev("e9", 9, 0.1, offset=8)]
    stored_at = {"e1": ("t.social.raw", 0, 1), "e2": ("t.social.raw", 0, 2)}  # e2 came first at offset 2
    replayed, repeated = stored_earlier_flags(columns(batch), stored_at)
    assert (replayed.tolist(), repeated.tolist()) == ([True, False, False], [False, True, False])


def test_an_event_its_feed_sent_twice_is_counted_once() -> None:
    config = IndexConfig(windows_s=(60,))
    feeder = Feeder(config)
    feeder.batch([Ev(f"e{i}", i, 0.1, offset=i) for i in range(4)])
    # e2 again, as a new message at offset 7: scored_events keeps its first copy, so must the index
    outcome = feeder.batch([Ev("e2", 2, 0.1, offset=7), Ev("e9", 9, 0.1, offset=8)], repeated=[True, False])
    assert feeder.indexer.states["market:all"].sizes[60].open[to_ms(T0)].n == 5
    assert outcome.updates  # the new event still moved the window


def test_state_survives_a_round_trip_through_the_table() -> None:
    feeder = Feeder(IndexConfig(windows_s=(60, 300), allowed_lateness_ms=0))
    feeder.batch([Ev("a", 10, 0.5, tickers=["AAPL"]), Ev("b", 130, -0.5, "bearish", tickers=["AAPL"])])
    feeder.batch([Ev("late", 20, 0.1, tickers=["AAPL"])])
    before = feeder.indexer.states["ticker:AAPL"]
    after = KeyState.from_json(before.to_json())
    assert after.to_json() == before.to_json()
    restored = Indexer(feeder.config)
    restored.load({key: KeyState.from_json(state.to_json()) for key, state in feeder.indexer.states.items()})
    assert restored.watermark_ms(0) == feeder.indexer.watermark_ms(0) == to_ms(T0) + 130_000


def test_record_ids_name_each_version_of_a_window() -> None:
    feeder = Feeder(IndexConfig(windows_s=(60,)))
    first = feeder.batch([Ev("a", 10, 0.5)]).updates[0]
    second = feeder.batch([Ev("b", 11, 0.5)]).updates[0]
    assert record_id(first.scope, first.key, first.update) != record_id(second.scope, second.key, second.update)
    assert record_id(second.scope, second.key, second.update).startswith(f"market:all/60/{to_ms(T0)}/1.")


# --- the whole path against a brute-force oracle -------------------------------------------------------


def test_closed_windows_match_a_brute_force_recount() -> None:
    config = IndexConfig(windows_s=(60, 300), baseline_windows=4, min_baseline=2, allowed_lateness_ms=20_000)
    rng = random.Random(11)
    tickers = ["AAPL", "MSFT", "0700.HK", "XYZQ"]
    events = []
    for i in range(600):
        at = i * 2.0 + rng.uniform(-1, 1) - (rng.uniform(30, 150) if rng.random() < 0.03 else 0)
        label = rng.choice(["bullish", "neutral", "bearish"])
        score = {"bullish": 0.6, "neutral": 0.0, "bearish": -0.6}[label] + rng.uniform(-0.3, 0.3)
        picked = rng.sample(tickers, rng.choice([0, 1, 1, 2]))
        events.append(Ev(f"e{i}", max(at, 0), score, label, picked, kind=rng.choice(["news", "social"]), offset=i))
    feeder = Feeder(config)
    late_ids: set[str] = set()
    for start in range(0, len(events), 40):
        batch = events[start : start + 40]
        watermark = feeder.indexer.watermark_ms(0)
        for e in batch:  # late for a size when its window had closed before this batch
            for w in config.windows_s:
                end = window_start_ms(to_ms(T0) + int(e.at_s * 1000), w) + w * 1000
                if watermark is not None and end <= watermark:
                    late_ids.add(f"{e.id}/{w}")
        feeder.batch(batch)

    recount: dict[tuple[str, int, int], list[Ev]] = defaultdict(list)
    late_count: dict[tuple[str, int, int], int] = defaultdict(int)
    for e in events:
        keys = {f"ticker:{t}" for t in e.tickers} | {f"market:{MARKETS[t]}" for t in e.tickers if t in MARKETS}
        keys |= {"market:all", f"source:{e.kind}", f"source:{e.kind}:{e.source}"}
        for w in config.windows_s:
            start = window_start_ms(to_ms(T0) + int(e.at_s * 1000), w)
            for key in keys:
                if f"{e.id}/{w}" in late_ids:
                    late_count[(key, w, start)] += 1
                else:
                    recount[(key, w, start)].append(e)

    starts_with_events: dict[tuple[str, int], list[int]] = defaultdict(list)
    for key, w, start in sorted(recount):
        starts_with_events[(key, w)].append(start)

    feeder.tick(events[-1].at_s + 10_000)  # close everything
    assert feeder.indexer.late_totals() == (len({i.split("/")[0] for i in late_ids if i.endswith("/60")}), 0)
    assert set(feeder.records) == set(recount) | set(late_count), "one record per window, with events or late ones"
    assert all(update.closed for update in feeder.records.values())
    checked = 0
    for (table_key, w, _), update in feeder.records.items():
        agg = update.window
        if agg.n == 0:
            assert agg.late == late_count[(table_key, w, agg.start_ms)]
            continue
        expected = recount[(table_key, w, agg.start_ms)]
        scores = np.array([e.score for e in expected], dtype=np.float32).astype(np.float64)
        f = figures(agg)
        assert f.buzz == len(expected)
        assert f.mean_score == pytest.approx(scores.mean(), abs=1e-12)
        assert f.dispersion == pytest.approx(scores.std(), abs=1e-9)
        assert f.net_sentiment == pytest.approx(
            (sum(e.label == "bullish" for e in expected) - sum(e.label == "bearish" for e in expected)) / len(expected)
        )
        assert agg.late == late_count[(table_key, w, agg.start_ms)]
        starts = starts_with_events[(table_key, w)]
        earlier = starts[: starts.index(agg.start_ms)][-config.baseline_windows :]
        if len(earlier) >= config.min_baseline:
            buzz = np.array([len(recount[(table_key, w, s)]) for s in earlier], dtype=float)
            means = np.array([
                np.array([e.score for e in recount[(table_key, w, s)]], dtype=np.float32).astype(float).mean()
                for s in earlier
            ])  # fmt: skip
            floor = max(buzz.std(), math.sqrt(max(buzz.mean(), 1)))
            assert agg.buzz_z == pytest.approx((agg.n - buzz.mean()) / floor)
            assert agg.sentiment_z == pytest.approx((agg.mean - means.mean()) / max(means.std(), 0.05))
            checked += 1
        else:
            assert agg.buzz_z is None and agg.baseline == len(earlier)
    assert checked > 50
    assert late_ids, "the scenario should have late events"


# --- decoding what workers exchange: a poison record is rejected with a reason, never applied ------------


def _aapl_partial() -> dict[str, object]:
    batch = batch_of([Ev("a", 10, 0.5, "bullish", tickers=["AAPL"]), Ev("b", 70, -0.5, "bearish")], IndexConfig())
    return json.loads(next(p for p in batch.keys if p.table_key == "ticker:AAPL").to_json())


def _encoded(document: object) -> bytes:
    return json.dumps(document).encode()


def _aapl_state() -> KeyState:
    feeder = Feeder(IndexConfig(windows_s=(60,), allowed_lateness_ms=0))
    feeder.batch([Ev("a", 10, 0.5, tickers=["AAPL"]), Ev("b", 130, -0.5, "bearish", tickers=["AAPL"])])
    return feeder.indexer.states["ticker:AAPL"]


def test_a_partials_message_decodes_to_its_partial_or_tick() -> None:
    document = _aapl_partial()
    partial = decode_partials_message(b"ticker:AAPL", _encoded(document))
    assert isinstance(partial, KeyPartial)
    assert json.loads(partial.to_json()) == document
    tick = decode_partials_message(b"~tick~0", b'{"tick": {"t.news.raw:0": [61000, true], "t.news.raw:1": [null, 0]}}')
    assert tick == {"t.news.raw:0": (61000, True), "t.news.raw:1": (None, False)}


def _with(**changes: object) -> dict[str, object]:
    return {**_aapl_partial(), **changes}


def _first_window(**changes: object) -> dict[str, object]:
    document = _aapl_partial()
    names = ["window_s", "start_ms", "n", "total", "total_sq", "bullish", "bearish", "neutral", "top"]
    row = dict(zip(names, document["w"][0], strict=True)) | changes
    document["w"][0] = list(row.values())
    return document


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        (b"ticker:AAPL", b"", "empty_value"),
        (b"ticker:AAPL", None, "empty_value"),
        (b"ticker:AAPL", b"\xff\xfe garbage", "invalid_json"),
        (b"ticker:AAPL", b'{"scope": "ticker", "key": "AAP', "invalid_json"),
        (b"ticker:AAPL", b"[1, 2, 3]", "invalid_json"),
        (b"ticker:AAPL", b"[" * 100_000 + b"]" * 100_000, "invalid_json"),
        (b"ticker:AAPL", _encoded({"scope": "ticker", "key": "AAPL"}), "invalid_partial"),
        (b"ticker:AAPL", _encoded(_with(scope="planet")), "invalid_partial"),
        (b"ticker:AAPL", _encoded(_with(hw={"t.social.raw:0": "many"})), "invalid_partial"),
        (b"ticker:AAPL", _encoded(_first_window(n="four")), "invalid_partial"),
        (b"ticker:AAPL", _encoded(_first_window(n=-3)), "invalid_partial"),
        (b"ticker:AAPL", _encoded(_first_window(window_s=0)), "invalid_partial"),
        (b"ticker:AAPL", _encoded(_first_window(start_ms=10**20)), "invalid_partial"),
        (b"ticker:AAPL", _encoded(_first_window(total=float("nan"))), "invalid_partial"),
        (b"ticker:AAPL", _encoded(_first_window(top=["never-described"])), "invalid_partial"),
        (b"ticker:AAPL", _encoded(_with(w=[[60, 0, 1]])), "invalid_partial"),
        (None, _encoded(_aapl_partial()), "invalid_key"),
        (b"\xff\xfe", _encoded(_aapl_partial()), "invalid_key"),
        (b"planet:AAPL", _encoded(_aapl_partial()), "invalid_key"),
        (b"ticker:MSFT", _encoded(_aapl_partial()), "key_mismatch"),
        (b"~tick~0", b'{"tick": "soon"}', "invalid_tick"),
        (b"~tick~0", b'{"tick": {"t.news.raw:0": [1e300, true]}}', "invalid_tick"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_a_poison_partials_message_is_rejected_with_its_reason(key: bytes | None, value: bytes | None, reason: str):
    with pytest.raises(UndecodableRecord) as rejected:
        decode_partials_message(key, value)
    assert rejected.value.reason == reason
    assert rejected.value.error


def test_a_table_row_decodes_to_the_state_it_holds() -> None:
    state = _aapl_state()
    assert decode_table_row(b"ticker:AAPL", state.to_json()).to_json() == state.to_json()


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        (b"ticker:AAPL", b"{corrupt", "invalid_json"),
        (b"ticker:AAPL", b"\x00\x01\x02", "invalid_json"),
        (b"ticker:AAPL", b'{"scope": "ticker", "key": "AAPL"}', "invalid_state"),
        (b"ticker:AAPL", _aapl_state().to_json().replace(b'"o":', b'"o":"x","_o":'), "invalid_state"),
        (b"ticker:MSFT", _aapl_state().to_json(), "key_mismatch"),
        (b"~end~0", _aapl_state().to_json(), "invalid_key"),
    ],
)
def test_a_corrupt_table_row_is_rejected_with_its_reason(key: bytes, value: bytes, reason: str) -> None:
    with pytest.raises(UndecodableRecord) as rejected:
        decode_table_row(key, value)
    assert rejected.value.reason == reason
