"""Rolling opinion indexes: window arithmetic, per-batch partial aggregates, window state and z-scores.

Pure logic (numpy, no Faust, no I/O); ``finpulse.streams.index_agent`` runs it in the worker and
``sinks/schema/0002_indexes.sql`` computes the same figures in SQL. Definitions both sides share:

* **Keys.** An event counts once for each distinct ticker it names (scope ``ticker``), for its kind and for
  ``kind:source`` (scope ``source``: ``news``, ``news:reuters``, ``social:x``…), for ``all`` and once for
  each distinct market of its tickers (scope ``market``; tickers the entity table does not know have none).
* **Windows.** Tumbling windows of event time aligned to the Unix epoch (UTC): an event at ``t`` ms is in
  the window of size ``w`` s that starts at ``t // (w·1000) · w·1000``. Times are truncated to the
  millisecond and scores rounded to Float32, exactly as ``scored_events`` stores them.
* **Figures.** buzz = events; mean score; net sentiment = (bullish − bearish) / buzz; label shares;
  dispersion = population standard deviation of score.
* **Closing.** The watermark is the largest event time seen minus the allowed lateness; a window closes
  once its end is at or before the watermark. An event for a closed window is *late*: it is not merged,
  it is counted in the window's ``late_events`` (the SQL index, built from ``scored_events``, counts it).
* **Z-scores.** Against the same key's previous closed windows of the same size that had events (the last
  ``baseline_windows`` of them), reported once at least ``min_baseline`` exist. Denominators have a floor
  so that a perfectly regular baseline (standard deviation 0) gives a finite, meaningful z instead of
  none or infinity: buzz uses ``max(std, sqrt(max(mean, 1)))`` (counts have at least Poisson noise) and
  mean score ``max(std, SENTIMENT_Z_FLOOR)``.

Example:
    >>> window_start_ms(125_000, 60)
    120000
    >>> agg = WindowAgg(start_ms=0, n=4, total=1.0, total_sq=1.0, bullish=2, bearish=1, neutral=1)
    >>> f = figures(agg); (f.mean_score, f.net_sentiment, round(f.dispersion, 4))
    (0.25, 0.25, 0.433)
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from itertools import chain
from typing import Annotated, Any, NotRequired

import numpy as np
from pydantic import Field, FiniteFloat, TypeAdapter, ValidationError
from typing_extensions import TypedDict  # pydantic needs this one before Python 3.12

from finpulse.schemas import OpinionIndex, Scope
from finpulse.settings import Settings

LABELS = ("bearish", "neutral", "bullish")
LABEL_CODES = {label: code for code, label in enumerate(LABELS)}
BEARISH, NEUTRAL, BULLISH = range(3)

SENTIMENT_Z_FLOOR = 0.05
"""Smallest denominator of the mean-score z-score (scores lie in [-1, 1])."""
TOP_EVENTS_PER_SIDE = 3
"""Most negative and most positive events kept per key and window as its top contributors."""
TOP_TEXT_CHARS = 280
"""Contributors' texts are cut to this many characters: enough for an alert, small on the topic."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
SCOPES: tuple[Scope, ...] = ("ticker", "source", "market")


def window_start_ms(event_ms: int, window_s: int) -> int:
    """Start (epoch ms) of the window of size ``window_s`` that holds ``event_ms``."""
    size = window_s * 1000
    return event_ms // size * size


def to_ms(moment: datetime) -> int:
    """Epoch milliseconds, truncated (as ClickHouse stores a DateTime64(3))."""
    return (moment - _EPOCH) // _MS


def from_ms(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)


def split_key(table_key: str) -> tuple[Scope, str]:
    """``"source:news:reuters"`` → ``("source", "news:reuters")``."""
    scope, _, key = table_key.partition(":")
    if scope not in SCOPES or not key:
        raise ValueError(f"not an index key: {table_key!r} (expected '<ticker|source|market>:<key>')")
    return scope, key  # type: ignore[return-value]


@dataclass(frozen=True)
class IndexConfig:
    """The index settings (``FINPULSE_INDEX_*``) the window logic needs."""

    windows_s: tuple[int, ...] = (60, 300, 3600, 86400)
    baseline_windows: int = 12
    min_baseline: int = 3
    allowed_lateness_ms: int = 60_000

    def __post_init__(self) -> None:
        if not self.windows_s or any(w <= 0 for w in self.windows_s) or len(set(self.windows_s)) != len(self.windows_s):
            raise ValueError(f"index windows must be distinct positive seconds, got {list(self.windows_s)}")
        if self.min_baseline < 2 or self.baseline_windows < 1 or self.allowed_lateness_ms < 0:
            raise ValueError(
                f"need min_baseline >= 2, baseline_windows >= 1, lateness >= 0; got {self.min_baseline}, "
                f"{self.baseline_windows}, {self.allowed_lateness_ms} ms"
            )

    @classmethod
    def from_settings(cls, settings: Settings) -> IndexConfig:
        return cls(
            windows_s=tuple(sorted(settings.index_windows_s)),
            baseline_windows=settings.index_baseline_windows,
            min_baseline=settings.index_min_baseline,
            allowed_lateness_ms=round(settings.index_allowed_lateness_s * 1000),
        )


# ---------------------------------------------------------------------------------------------------
# Scored side: one micro-batch → partial aggregates per key and window
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Contributor:
    """A scored event as a top contributor of a window: enough to show it in an alert."""

    event_id: str
    score: float
    label: str
    event_ms: int
    source: str
    text: str

    def as_list(self) -> list[object]:
        return [self.event_id, self.score, self.label, self.event_ms, self.source, self.text]

    @classmethod
    def from_list(cls, values: Sequence[object]) -> Contributor:
        event_id, score, label, event_ms, source, text = values
        return cls(str(event_id), float(score), str(label), int(event_ms), str(source), str(text))


@dataclass(frozen=True, slots=True)
class WindowPartial:
    """What one batch adds to one window of one key."""

    window_s: int
    start_ms: int
    n: int
    total: float
    total_sq: float
    bullish: int
    bearish: int
    neutral: int
    top: tuple[str, ...] = ()  # event ids of the window's most negative and most positive events

    def as_list(self) -> list[object]:
        return [
            self.window_s, self.start_ms, self.n, self.total, self.total_sq, self.bullish, self.bearish,
            self.neutral, list(self.top),
        ]  # fmt: skip

    @classmethod
    def from_list(cls, values: Sequence[object]) -> WindowPartial:
        w, start, n, total, total_sq, bullish, bearish, neutral, top = values
        return cls(int(w), int(start), int(n), float(total), float(total_sq), int(bullish), int(bearish),
                   int(neutral), tuple(top))  # fmt: skip


@dataclass(frozen=True, slots=True)
class ReplayedEvent:
    """An event stored by an earlier attempt of its batch, which may or may not have published it.

    The index state drops it if its raw offset is at or below the key's high-water offset for that raw
    topic-partition (it was applied already), and applies it otherwise.
    """

    raw_tp: str
    offset: int
    event_ms: int
    score: float
    label: int
    event_id: str


@dataclass
class KeyPartial:
    """One index message of a batch: everything the batch adds to one ``scope:key``."""

    scope: Scope
    key: str
    windows: list[WindowPartial] = field(default_factory=list)
    raw_hw: dict[str, int] = field(default_factory=dict)
    replayed: list[ReplayedEvent] = field(default_factory=list)
    contributors: dict[str, Contributor] = field(default_factory=dict)

    @property
    def table_key(self) -> str:
        return f"{self.scope}:{self.key}"

    def to_json(self) -> bytes:
        document = {
            "scope": self.scope,
            "key": self.key,
            "w": [w.as_list() for w in self.windows],
            "hw": self.raw_hw,
            "replay": [[r.raw_tp, r.offset, r.event_ms, r.score, r.label, r.event_id] for r in self.replayed],
            "ev": [c.as_list() for c in self.contributors.values()],
        }
        return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()

    @classmethod
    def from_document(cls, document: Mapping[str, object]) -> KeyPartial:
        """The partial of a decoded JSON document; ``UndecodableRecord`` if it is not one."""
        checked = _validated(_PARTIAL, document, "invalid_partial")
        contributors = {values[0]: Contributor.from_list(values) for values in checked.get("ev", ())}
        windows = [WindowPartial.from_list(values) for values in checked["w"]]
        missing = sorted({event_id for w in windows for event_id in w.top} - contributors.keys())
        if missing:
            raise UndecodableRecord("invalid_partial", f"top events without a contributor entry: {missing[:3]}")
        return cls(
            scope=checked["scope"],
            key=checked["key"],
            windows=windows,
            raw_hw=dict(checked["hw"]),
            replayed=[ReplayedEvent(*values) for values in checked.get("replay", ())],
            contributors=contributors,
        )


@dataclass(frozen=True)
class BatchPartials:
    """The partial aggregates of one scored batch, one ``KeyPartial`` per key it touched, and per raw
    topic-partition it holds the latest event time (what the watermark advances on) and the last offset."""

    events: int
    progress: dict[str, int]
    keys: list[KeyPartial]
    last_offsets: dict[str, int] = field(default_factory=dict)


def _first_occurrences(ids: Sequence[str]) -> np.ndarray:
    # dict keeps the last index written per key: feeding it reversed makes the first occurrence win
    n = len(ids)
    first = dict(zip(reversed(ids), range(n - 1, -1, -1), strict=True))
    if len(first) == n:
        return np.arange(n)
    return np.sort(np.fromiter(first.values(), dtype=np.int64, count=len(first)))


def _take(values: Sequence[object], rows: np.ndarray | None) -> list:
    return list(values) if rows is None else [values[i] for i in rows]


@dataclass
class _KeyRows:
    """Contribution rows: one per distinct (event, key), as event indexes and key codes."""

    names: list[tuple[Scope, str]]
    event: np.ndarray
    key: np.ndarray


def _key_rows(
    kinds: list[str], sources: list[str], tickers: list[list[str]], market_of: Callable[[str], str | None]
) -> _KeyRows:
    n = len(kinds)
    events = np.arange(n)
    names: list[tuple[Scope, str]] = []
    row_events: list[np.ndarray] = []
    row_keys: list[np.ndarray] = []

    def add(scope: Scope, labels: np.ndarray, on_events: np.ndarray) -> None:
        distinct, codes = np.unique(labels, return_inverse=True)
        row_events.append(on_events)
        row_keys.append(codes.reshape(-1) + len(names))
        names.extend((scope, str(label)) for label in distinct)

    lengths = np.fromiter(map(len, tickers), dtype=np.int64, count=n)
    flat = np.array(list(chain.from_iterable(tickers)), dtype=object)
    ticker_events = np.repeat(events, lengths)
    if len(flat):
        add("ticker", flat, ticker_events)
        distinct = np.unique(flat)
        market_by_ticker = {t: market_of(t) or "" for t in distinct.tolist()}
        markets = np.array([market_by_ticker[t] for t in flat.tolist()], dtype=object)
        known = markets != ""
        if known.any():
            add("market", markets[known], ticker_events[known])
    kind_array = np.array(kinds, dtype=object)
    add("source", kind_array, events)
    add("source", kind_array + ":" + np.array(sources, dtype=object), events)
    add("market", np.full(n, "all", dtype=object), events)

    event = np.concatenate(row_events)
    key = np.concatenate(row_keys)
    # an event names a ticker twice, or two tickers of one market: it still counts once per key
    pairs = np.unique(event * len(names) + key)
    return _KeyRows(names=names, event=pairs // len(names), key=pairs % len(names))


def batch_partials(
    columns: Mapping[str, Sequence[object]],
    config: IndexConfig,
    market_of: Callable[[str], str | None],
    replayed: np.ndarray | None = None,
    repeated: np.ndarray | None = None,
) -> BatchPartials:
    """Partial aggregates of one scored batch (``scored_event_columns`` layout), grouped per key and window.

    ``replayed`` flags events that an earlier attempt of this batch had stored already; they travel as
    single events (``KeyPartial.replayed``) so the index state can tell whether they were applied.
    ``repeated`` flags events stored earlier from another message (their feed sent them twice): they are
    not counted again. An id twice in the batch counts once (its first row), as in ``scored_events``.
    """
    ids = list(columns["event_id"])
    if not ids:
        return BatchPartials(events=0, progress={}, keys=[])
    keep = _first_occurrences(ids)
    rows = None if len(keep) == len(ids) else keep
    ids = _take(ids, rows)
    n = len(ids)
    event_ms = np.fromiter(map(to_ms, _take(columns["event_time"], rows)), dtype=np.int64, count=n)
    scores = np.asarray(_take(columns["score"], rows), dtype=np.float32).astype(np.float64)
    labels = np.fromiter(map(LABEL_CODES.__getitem__, _take(columns["label"], rows)), dtype=np.int8, count=n)
    kinds = _take(columns["kind"], rows)
    sources = _take(columns["source"], rows)
    raw_tps = np.array(
        [f"{topic}:{partition}" for topic, partition in zip(
            _take(columns["source_topic"], rows), _take(columns["partition"], rows), strict=True)],
        dtype=object,
    )  # fmt: skip
    offsets = np.asarray(_take(columns["offset"], rows), dtype=np.int64)
    was_replayed = np.zeros(n, dtype=bool) if replayed is None else np.asarray(replayed, dtype=bool)[keep]
    was_repeated = np.zeros(n, dtype=bool) if repeated is None else np.asarray(repeated, dtype=bool)[keep]

    events = _Events(ids, event_ms, scores, labels, kinds, sources, _take(columns["text"], rows))
    key_rows = _key_rows(kinds, sources, _take(columns["tickers"], rows), market_of)
    partials = [KeyPartial(scope=scope, key=key) for scope, key in key_rows.names]
    _add_raw_high_water(partials, key_rows, raw_tps, offsets)
    fresh = ~(was_replayed | was_repeated)[key_rows.event]
    _add_windows(partials, key_rows, fresh, events, config.windows_s)
    single = was_replayed[key_rows.event]
    for event, key in zip(key_rows.event[single].tolist(), key_rows.key[single].tolist(), strict=True):
        partials[key].replayed.append(ReplayedEvent(
            str(raw_tps[event]), int(offsets[event]), int(event_ms[event]), float(scores[event]),
            int(labels[event]), ids[event],
        ))  # fmt: skip
    tp_names, tp_codes = np.unique(raw_tps, return_inverse=True)
    tp_codes = tp_codes.reshape(-1)
    latest = np.full(len(tp_names), np.iinfo(np.int64).min)
    np.maximum.at(latest, tp_codes, event_ms)
    last = np.full(len(tp_names), -1, dtype=np.int64)
    np.maximum.at(last, tp_codes, offsets)
    names = [str(name) for name in tp_names]
    return BatchPartials(
        events=n,
        progress=dict(zip(names, latest.tolist(), strict=True)),
        keys=partials,
        last_offsets=dict(zip(names, last.tolist(), strict=True)),
    )


def _group_bounds(*sorted_keys: np.ndarray) -> np.ndarray:
    """Start index of each run of equal consecutive rows (keys already sorted)."""
    size = len(sorted_keys[0])
    change = np.zeros(size, dtype=bool)
    change[0] = True
    for values in sorted_keys:
        change[1:] |= values[1:] != values[:-1]
    return np.flatnonzero(change)


def _add_raw_high_water(
    partials: list[KeyPartial], key_rows: _KeyRows, raw_tps: np.ndarray, offsets: np.ndarray
) -> None:
    tp_names, tp_codes = np.unique(raw_tps, return_inverse=True)
    tp_codes = tp_codes.reshape(-1)[key_rows.event]
    row_offsets = offsets[key_rows.event]
    order = np.lexsort((tp_codes, key_rows.key))
    keys, tps, sorted_offsets = key_rows.key[order], tp_codes[order], row_offsets[order]
    starts = _group_bounds(keys, tps)
    highest = np.maximum.reduceat(sorted_offsets, starts)
    for key, tp, offset in zip(keys[starts].tolist(), tps[starts].tolist(), highest.tolist(), strict=True):
        partials[key].raw_hw[str(tp_names[tp])] = offset


@dataclass(frozen=True)
class _Events:
    """The batch's events in columns (after in-batch deduplication), as the partials need them."""

    ids: list[str]
    event_ms: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    kinds: list[str]
    sources: list[str]
    texts: list[str]

    def contributor(self, event: int) -> Contributor:
        return Contributor(
            self.ids[event], float(self.scores[event]), LABELS[self.labels[event]], int(self.event_ms[event]),
            f"{self.kinds[event]}:{self.sources[event]}", str(self.texts[event])[:TOP_TEXT_CHARS],
        )  # fmt: skip


def _add_windows(
    partials: list[KeyPartial], key_rows: _KeyRows, fresh: np.ndarray, events: _Events, windows_s: Sequence[int]
) -> None:
    """Aggregate the fresh rows per (key, window size, window start), with each group's top events."""
    row_event, row_key = key_rows.event[fresh], key_rows.key[fresh]
    if not len(row_event):
        return
    sizes = np.asarray(windows_s, dtype=np.int64)
    # one row per (event, key, window size); all sizes grouped by one sort, by score inside each group
    row_event = np.tile(row_event, len(sizes))
    row_key = np.tile(row_key, len(sizes))
    row_size = np.repeat(sizes, len(key_rows.event[fresh]))
    row_start = events.event_ms[row_event] // (row_size * 1000) * (row_size * 1000)
    row_score = events.scores[row_event]
    order = np.lexsort((row_score, row_start, row_size, row_key))
    row_event, row_key, row_size, row_start, row_score = (
        row_event[order],
        row_key[order],
        row_size[order],
        row_start[order],
        row_score[order],
    )
    row_label = events.labels[row_event]
    starts = _group_bounds(row_key, row_size, row_start)
    counts = np.diff(np.append(starts, len(row_key)))
    totals = np.add.reduceat(row_score, starts)
    totals_sq = np.add.reduceat(row_score * row_score, starts)
    bullish, bearish, neutral = (
        np.add.reduceat((row_label == code).astype(np.int64), starts) for code in (BULLISH, BEARISH, NEUTRAL)
    )

    # sorted by score inside each group: the first and last few rows are its most negative and positive
    group_of_row = np.repeat(np.arange(len(starts)), counts)
    rank = np.arange(len(row_key)) - starts[group_of_row]
    k = TOP_EVENTS_PER_SIDE
    is_top = (rank < k) | (rank >= counts[group_of_row] - k)
    top_per_group = np.minimum(counts, 2 * k)
    top_events = np.split(row_event[is_top], np.cumsum(top_per_group)[:-1])

    groups = zip(
        row_key[starts].tolist(), row_size[starts].tolist(), row_start[starts].tolist(), counts.tolist(),
        totals.tolist(), totals_sq.tolist(), bullish.tolist(), bearish.tolist(), neutral.tolist(), top_events,
        strict=True,
    )  # fmt: skip
    ids = events.ids
    for key, size, start, n, total, total_sq, bull, bear, neut, top in groups:
        partial = partials[key]
        top_ids = tuple(ids[e] for e in top.tolist())
        partial.windows.append(WindowPartial(size, start, n, total, total_sq, bull, bear, neut, top_ids))
        for event_id, event in zip(top_ids, top.tolist(), strict=True):
            if event_id not in partial.contributors:
                partial.contributors[event_id] = events.contributor(event)


# ---------------------------------------------------------------------------------------------------
# Index side: window state per key, merged per batch
# ---------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class WindowAgg:
    """Running aggregates of one window of one key, plus its record-keeping."""

    start_ms: int
    n: int = 0
    total: float = 0.0
    total_sq: float = 0.0
    bullish: int = 0
    bearish: int = 0
    neutral: int = 0
    late: int = 0
    created_ms: int = 0
    revision: int = 0
    # set when the window closes
    buzz_z: float | None = None
    sentiment_z: float | None = None
    baseline: int = 0

    def add(self, n: int, total: float, total_sq: float, bullish: int, bearish: int, neutral: int) -> None:
        self.n += n
        self.total += total
        self.total_sq += total_sq
        self.bullish += bullish
        self.bearish += bearish
        self.neutral += neutral

    @property
    def mean(self) -> float:
        return self.total / self.n if self.n else 0.0

    def copy(self) -> WindowAgg:
        return WindowAgg(*self.as_list())  # type: ignore[arg-type]

    def as_list(self) -> list[object]:
        return [
            self.start_ms, self.n, self.total, self.total_sq, self.bullish, self.bearish, self.neutral,
            self.late, self.created_ms, self.revision, self.buzz_z, self.sentiment_z, self.baseline,
        ]  # fmt: skip

    @classmethod
    def from_list(cls, values: Sequence[object]) -> WindowAgg:
        return cls(*values)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Figures:
    buzz: int
    mean_score: float
    net_sentiment: float
    bullish_share: float
    neutral_share: float
    bearish_share: float
    dispersion: float


def figures(agg: WindowAgg) -> Figures:
    """The window's index figures; all zero for a window that only holds late events."""
    n = agg.n
    if n == 0:
        return Figures(0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    mean = agg.total / n
    variance = max(agg.total_sq / n - mean * mean, 0.0)
    return Figures(
        buzz=n,
        mean_score=mean,
        net_sentiment=(agg.bullish - agg.bearish) / n,
        bullish_share=agg.bullish / n,
        neutral_share=agg.neutral / n,
        bearish_share=agg.bearish / n,
        dispersion=math.sqrt(variance),
    )


@dataclass(frozen=True, slots=True)
class ZScores:
    buzz_z: float | None
    sentiment_z: float | None
    baseline: int


def _mean_and_std(values: list[float]) -> tuple[float, float]:
    """Population mean and standard deviation (two passes: the values may sit close together)."""
    mean = math.fsum(values) / len(values)
    return mean, math.sqrt(math.fsum([(v - mean) ** 2 for v in values]) / len(values))


def z_scores(agg: WindowAgg, baseline: Sequence[WindowAgg], min_baseline: int) -> ZScores:
    """Buzz and mean-score z-scores of ``agg`` against ``baseline`` (earlier closed windows with events).

    Example:
        >>> past = [WindowAgg(start * 60_000, n=10, total=float(start + 1)) for start in range(3)]
        >>> z = z_scores(WindowAgg(180_000, n=30, total=-6.0), past, min_baseline=3)
        >>> round(z.buzz_z, 3), round(z.sentiment_z, 3), z.baseline
        (6.325, -4.899, 3)
    """
    m = len(baseline)
    if m < min_baseline:
        return ZScores(None, None, m)
    buzz_mean, buzz_std = _mean_and_std([float(b.n) for b in baseline])
    buzz_std = max(buzz_std, math.sqrt(max(buzz_mean, 1.0)))
    mean_mean, mean_std = _mean_and_std([b.mean for b in baseline])
    mean_std = max(mean_std, SENTIMENT_Z_FLOOR)
    buzz_z = (agg.n - buzz_mean) / buzz_std
    sentiment_z = (agg.mean - mean_mean) / mean_std if agg.n else None
    return ZScores(buzz_z, sentiment_z, m)


@dataclass
class SizeState:
    """The windows of one key and one window size: open ones, and the closed ones kept for the baseline."""

    open: dict[int, WindowAgg] = field(default_factory=dict)
    closed: list[WindowAgg] = field(default_factory=list)  # by start; the last ``baseline_windows`` with events
    trimmed_before: int | None = None  # windows starting at or before this were dropped from ``closed``
    late_untracked: int = 0  # late events of windows older than ``closed`` keeps (see LateBeyondHistory)

    def baseline(self, start_ms: int, size: int) -> list[WindowAgg]:
        """The last ``size`` closed windows with events that start before ``start_ms``, oldest first."""
        earlier: list[WindowAgg] = []
        for window in reversed(self.closed):
            if window.start_ms < start_ms and window.n > 0:
                earlier.append(window)
                if len(earlier) == size:
                    break
        earlier.reverse()
        return earlier

    def closed_window(self, start_ms: int) -> WindowAgg | None:
        for window in reversed(self.closed):
            if window.start_ms == start_ms:
                return window
        return None

    def trim(self, keep: int) -> None:
        with_events = [w for w in self.closed if w.n > 0]
        if len(with_events) <= keep:
            return
        oldest_kept = with_events[-keep].start_ms
        dropped = [w for w in self.closed if w.start_ms < oldest_kept]
        self.closed = [w for w in self.closed if w.start_ms >= oldest_kept]
        newest_dropped = dropped[-1].start_ms
        if self.trimmed_before is None or newest_dropped > self.trimmed_before:
            self.trimmed_before = newest_dropped

    def as_document(self) -> dict[str, object]:
        return {
            "open": [w.as_list() for w in self.open.values()],
            "closed": [w.as_list() for w in self.closed],
            "tb": self.trimmed_before,
            "lu": self.late_untracked,
        }

    @classmethod
    def from_document(cls, document: Mapping[str, object]) -> SizeState:
        open_windows = [WindowAgg.from_list(values) for values in document["open"]]  # type: ignore[union-attr]
        return cls(
            open={w.start_ms: w for w in open_windows},
            closed=[WindowAgg.from_list(values) for values in document["closed"]],  # type: ignore[union-attr]
            trimmed_before=document.get("tb"),  # type: ignore[arg-type]
            late_untracked=int(document.get("lu", 0)),  # type: ignore[arg-type]
        )


@dataclass(frozen=True, slots=True)
class WindowUpdate:
    """A window whose record changed in this batch."""

    window_s: int
    window: WindowAgg
    closed: bool


@dataclass
class KeyState:
    """All index state of one ``scope:key``: the value of one Faust table row.

    ``partials_offset`` is the offset (in the partials topic partition that carries this key) of the
    last partial applied: a partial redelivered after a crash is skipped, so the state counts each
    partial once. ``raw_hw`` holds, per raw topic-partition, the highest raw offset applied to this key:
    replayed events at or below it were counted already. ``partition`` (of the partials topic) and
    ``watermark_ms`` (that partition's watermark when the state was written) let a restarted worker
    resume the watermark where it was.
    """

    scope: Scope
    key: str
    partials_offset: int = -1
    raw_hw: dict[str, int] = field(default_factory=dict)
    partition: int = -1
    watermark_ms: int | None = None
    sizes: dict[int, SizeState] = field(default_factory=dict)
    dirty: set[tuple[int, int]] = field(default_factory=set, repr=False)  # (window size, start) changed
    late_events: dict[int, int] = field(default_factory=dict, repr=False)  # per size, seen by this process
    # late events of windows too old for ``closed``, as (window size, start, events), until the caller takes them
    late_beyond_history: list[tuple[int, int, int]] = field(default_factory=list, repr=False)

    def size(self, window_s: int) -> SizeState:
        state = self.sizes.get(window_s)
        if state is None:
            state = self.sizes[window_s] = SizeState()
        return state

    def next_close_ms(self) -> int | None:
        """Earliest end among the open windows (the watermark that closes something here)."""
        ends = [start + size * 1000 for size, state in self.sizes.items() for start in state.open]
        return min(ends) if ends else None

    def apply(
        self, partial: KeyPartial, offset: int, watermark_ms: int | None, config: IndexConfig, now_ms: int
    ) -> bool:
        """Merge one partial (at ``offset`` of the partials topic); False if it was applied before."""
        if offset <= self.partials_offset:
            return False
        self.partials_offset = offset
        wanted = set(config.windows_s)
        for window in partial.windows:
            if window.window_s in wanted:
                self._merge(window, watermark_ms, config, now_ms)
        for window in _replayed_windows(partial.replayed, self.raw_hw, config.windows_s):
            self._merge(window, watermark_ms, config, now_ms)
        for tp, high in partial.raw_hw.items():
            self.raw_hw[tp] = max(self.raw_hw.get(tp, -1), high)
        return True

    def _merge(self, part: WindowPartial, watermark_ms: int | None, config: IndexConfig, now_ms: int) -> None:
        state = self.size(part.window_s)
        window = state.open.get(part.start_ms)
        if window is not None:
            window.add(part.n, part.total, part.total_sq, part.bullish, part.bearish, part.neutral)
            self.dirty.add((part.window_s, part.start_ms))
            return
        end = part.start_ms + part.window_s * 1000
        if watermark_ms is None or end > watermark_ms:
            window = state.open[part.start_ms] = WindowAgg(part.start_ms, created_ms=now_ms)
            window.add(part.n, part.total, part.total_sq, part.bullish, part.bearish, part.neutral)
            self.dirty.add((part.window_s, part.start_ms))
            return
        # the window is closed: its events are late
        self.late_events[part.window_s] = self.late_events.get(part.window_s, 0) + part.n
        closed = state.closed_window(part.start_ms)
        if closed is None and (state.trimmed_before is None or part.start_ms > state.trimmed_before):
            # never had an on-time event, but newer than anything trimmed: a record that only counts late events
            closed = WindowAgg(part.start_ms, created_ms=now_ms)
            state.closed.append(closed)
            state.closed.sort(key=lambda w: w.start_ms)
        if closed is None:
            state.late_untracked += part.n
            self.late_beyond_history.append((part.window_s, part.start_ms, part.n))
            return
        closed.late += part.n
        self.dirty.add((part.window_s, part.start_ms))

    def close(self, watermark_ms: int, config: IndexConfig) -> int:
        """Close every open window that ends at or before the watermark; returns how many closed."""
        closed = 0
        for window_s, state in self.sizes.items():
            size_ms = window_s * 1000
            ending = sorted(start for start in state.open if start + size_ms <= watermark_ms)
            for start in ending:
                window = state.open.pop(start)
                z = z_scores(window, state.baseline(start, config.baseline_windows), config.min_baseline)
                window.buzz_z, window.sentiment_z, window.baseline = z.buzz_z, z.sentiment_z, z.baseline
                state.closed.append(window)
                state.closed.sort(key=lambda w: w.start_ms)
                self.dirty.add((window_s, start))
                closed += 1
        return closed

    def take_updates(self, config: IndexConfig) -> list[WindowUpdate]:
        """The windows changed since the last call, each with its revision bumped; then trims the history.

        Trimming waits until here: in a replay of history many windows close in one batch, and each must
        be reported closed before it may leave the baseline history.
        """
        updates = []
        for window_s, start in sorted(self.dirty):
            state = self.sizes[window_s]
            window = state.open.get(start)
            closed = window is None
            if window is None:
                window = state.closed_window(start)
            assert window is not None, f"changed window {window_s}s@{start} is neither open nor closed"
            if not closed:
                z = z_scores(window, state.baseline(start, config.baseline_windows), config.min_baseline)
                window.buzz_z, window.sentiment_z, window.baseline = z.buzz_z, z.sentiment_z, z.baseline
            window.revision += 1
            updates.append(WindowUpdate(window_s, window.copy(), closed))  # a snapshot: the state moves on
        self.dirty.clear()
        for state in self.sizes.values():
            state.trim(config.baseline_windows)
        return updates

    def to_json(self) -> bytes:
        document = {
            "scope": self.scope,
            "key": self.key,
            "o": self.partials_offset,
            "hw": self.raw_hw,
            "p": self.partition,
            "wm": self.watermark_ms,
            "s": {str(size): state.as_document() for size, state in self.sizes.items()},
        }
        return json.dumps(document, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes | None) -> KeyState:
        """The state ``to_json`` wrote; ``UndecodableRecord`` if ``data`` is anything else."""
        document = _validated(_STATE, _json_object(data), "invalid_state")
        return cls(
            scope=document["scope"],
            key=document["key"],
            partials_offset=document["o"],
            raw_hw=dict(document["hw"]),
            partition=document["p"],
            watermark_ms=document["wm"],
            sizes={size: SizeState.from_document(state) for size, state in document["s"].items()},
        )


def _replayed_windows(
    replayed: Iterable[ReplayedEvent], raw_hw: Mapping[str, int], windows_s: Sequence[int]
) -> list[WindowPartial]:
    """Window partials of the replayed events this key has not applied yet (rare: only after a crash)."""
    pending = [r for r in replayed if r.offset > raw_hw.get(r.raw_tp, -1)]
    grouped: dict[tuple[int, int], WindowAgg] = {}
    for event in pending:
        score = float(np.float32(event.score))
        for window_s in windows_s:
            start = window_start_ms(event.event_ms, window_s)
            agg = grouped.setdefault((window_s, start), WindowAgg(start))
            agg.add(1, score, score * score, int(event.label == BULLISH), int(event.label == BEARISH),
                    int(event.label == NEUTRAL))  # fmt: skip
    return [
        WindowPartial(w, start, a.n, a.total, a.total_sq, a.bullish, a.bearish, a.neutral)
        for (w, start), a in grouped.items()
    ]


# ---------------------------------------------------------------------------------------------------
# Decoding what workers exchange: partials messages and table rows are checked before they are applied
# ---------------------------------------------------------------------------------------------------
# Both travel on topics anyone with broker access can write to. A record that is not what the index
# stage writes must be rejected on its own (to the DLQ, with a reason) rather than crash the agent:
# the crash would not commit, so the next worker would read the same record and crash too.


class UndecodableRecord(ValueError):
    """A partials message or table row that the index stage cannot apply; ``reason`` names why."""

    def __init__(self, reason: str, error: str) -> None:
        super().__init__(f"{reason}: {error}")
        self.reason = reason
        self.error = error


# Bounds that keep every derived time (window ends included) within what ``from_ms`` can represent.
MIN_MS = -30_610_224_000_000  # 1000-01-01
MAX_MS = 221_845_392_000_000  # 9000-01-01
_Ms = Annotated[int, Field(ge=MIN_MS, le=MAX_MS)]
_WindowSize = Annotated[int, Field(gt=0, le=100 * 366 * 86_400)]
_Count = Annotated[int, Field(ge=0)]
_Offset = Annotated[int, Field(ge=-1)]
_Key = Annotated[str, Field(min_length=1)]
_Label = Annotated[int, Field(ge=0, le=len(LABELS) - 1)]

_WindowPartialRow = tuple[_WindowSize, _Ms, _Count, FiniteFloat, FiniteFloat, _Count, _Count, _Count, list[str]]
_ReplayRow = tuple[str, _Count, _Ms, FiniteFloat, _Label, str]
_ContributorRow = tuple[str, FiniteFloat, str, _Ms, str, str]
_WindowAggRow = tuple[
    _Ms, _Count, FiniteFloat, FiniteFloat, _Count, _Count, _Count, _Count, int, _Count,
    FiniteFloat | None, FiniteFloat | None, _Count,
]  # fmt: skip


class _PartialDocument(TypedDict):
    scope: Scope
    key: _Key
    w: list[_WindowPartialRow]
    hw: dict[str, _Offset]
    replay: NotRequired[list[_ReplayRow]]
    ev: NotRequired[list[_ContributorRow]]


class _TickDocument(TypedDict):
    tick: dict[str, tuple[_Ms | None, bool]]


class _SizeDocument(TypedDict):
    open: list[_WindowAggRow]
    closed: list[_WindowAggRow]
    tb: NotRequired[_Ms | None]
    lu: NotRequired[_Count]


class _StateDocument(TypedDict):
    scope: Scope
    key: _Key
    o: _Offset
    hw: dict[str, _Offset]
    p: _Offset
    wm: _Ms | None
    s: dict[_WindowSize, _SizeDocument]


_PARTIAL = TypeAdapter(_PartialDocument)
_TICK = TypeAdapter(_TickDocument)
_STATE = TypeAdapter(_StateDocument)

Progress = dict[str, tuple[int | None, bool]]
"""A watermark tick: per raw topic-partition, (latest event ms consumed or None, caught up)."""


def _json_object(value: bytes | None) -> dict[str, Any]:
    if not value:
        raise UndecodableRecord("empty_value", "the record has no value")
    try:
        document = json.loads(value)
    except (ValueError, RecursionError) as err:  # bad UTF-8 and bad JSON are ValueErrors
        raise UndecodableRecord("invalid_json", str(err)[:200]) from None
    if not isinstance(document, dict):
        raise UndecodableRecord("invalid_json", f"a JSON {type(document).__name__}, not an object")
    return document


def _validated(adapter: TypeAdapter[Any], document: object, reason: str) -> Any:
    try:
        return adapter.validate_python(document)
    except ValidationError as err:
        details = err.errors(include_url=False, include_input=False)
        summary = "; ".join(f"{'.'.join(str(p) for p in d['loc']) or '<root>'}: {d['msg']}" for d in details[:3])
        raise UndecodableRecord(reason, summary) from None


def _table_key(key: bytes | None) -> str:
    """The ``scope:key`` a record's Kafka key names."""
    if key is None:
        raise UndecodableRecord("invalid_key", "the record has no key")
    try:
        table_key = key.decode()
        split_key(table_key)
    except ValueError as err:  # UnicodeDecodeError is one
        raise UndecodableRecord("invalid_key", str(err)[:200]) from None
    return table_key


def decode_partials_message(key: bytes | None, value: bytes | None) -> KeyPartial | Progress:
    """A message of the partials topic: a ``KeyPartial`` (keyed by its ``scope:key``) or a watermark tick.

    Raises ``UndecodableRecord`` for anything else.

    Example:
        >>> decode_partials_message(None, b'{"tick": {"news.raw:0": [61000, true]}}')
        {'news.raw:0': (61000, True)}
        >>> try:
        ...     decode_partials_message(b"market:all", b'{"scope": "market", "key": "all"}')
        ... except UndecodableRecord as err:
        ...     print(err.reason)
        invalid_partial
    """
    document = _json_object(value)
    if "tick" in document:
        progress = _validated(_TICK, document, "invalid_tick")["tick"]
        return {tp: (latest, caught_up) for tp, (latest, caught_up) in progress.items()}
    table_key = _table_key(key)
    partial = KeyPartial.from_document(document)
    if partial.table_key != table_key:
        raise UndecodableRecord("key_mismatch", f"message key {table_key!r} holds a partial of {partial.table_key!r}")
    return partial


def decode_table_row(key: bytes | None, value: bytes | None) -> KeyState:
    """A row of the ``opinion-index`` table (as recovered from its changelog); ``UndecodableRecord`` if not."""
    table_key = _table_key(key)
    state = KeyState.from_json(value)
    if f"{state.scope}:{state.key}" != table_key:
        raise UndecodableRecord("key_mismatch", f"row key {table_key!r} holds the state of {state.scope}:{state.key}")
    return state


@dataclass(frozen=True, slots=True)
class IndexedUpdate:
    """A changed window of one key, with its top contributing events (most negative first)."""

    scope: Scope
    key: str
    update: WindowUpdate
    contributors: tuple[Contributor, ...] = ()


@dataclass(frozen=True, slots=True)
class LateBeyondHistory:
    """Late events of a window that closed so long ago that the state no longer holds it.

    Its record is in ``opinion_index``: the caller reads it there and writes it back with ``events`` more
    late events (``with_late_events``). ``offset`` (of the partial that brought them) names that version.
    """

    scope: Scope
    key: str
    window_s: int
    start_ms: int
    events: int
    offset: int

    def record_id(self) -> str:
        return f"{self.scope}:{self.key}/{self.window_s}/{self.start_ms}/late@{self.offset}"


@dataclass(frozen=True)
class BatchOutcome:
    updates: list[IndexedUpdate]
    changed: set[str]  # table keys whose state changed (to be written back)
    skipped: int  # partials applied before (redelivered)
    closed: int
    late_beyond_history: list[LateBeyondHistory] = field(default_factory=list)


class Indexer:
    """The index state of the keys one worker owns, merged one batch of partials at a time.

    ``states`` maps ``scope:key`` to its ``KeyState`` (the Faust table's rows, decoded).

    Watermarks are kept per partition of the partials topic. Each scored batch sends every partition,
    after its partials, a tick that says for each raw topic-partition of the scoring worker the latest
    event time consumed so far in this batch (or none) and whether the worker has caught up with it (no
    unread messages). A partition's watermark is the smallest latest time over the raw partitions with a
    backlog (or, when none has one, the largest over all), minus the allowed lateness, and never goes
    back. So a raw partition consumed behind the others (a backlog, a replay, a slow fetch) holds the
    watermark instead of making the others' events late, and a quiet one does not hold it. Per
    partition, a tick follows the partials of its batch, so no key sees a watermark its own partials
    have not reached. Events that arrive later than the allowed lateness behind the watermark of a
    caught-up stream (a delayed article, a partition added later) are late.

    Example:
        >>> indexer = Indexer(IndexConfig(windows_s=(60,), allowed_lateness_ms=0))
        >>> window = WindowPartial(60, 0, n=2, total=1.0, total_sq=0.5, bullish=2, bearish=0, neutral=0)
        >>> outcome = indexer.apply([("market:all", 0, 0, KeyPartial("market", "all", [window]))], now_ms=0,
        ...                         ticks=[(0, {"news.raw:0": (61_000, True)})])
        >>> [(u.update.window.start_ms, u.update.window.n, u.update.closed) for u in outcome.updates]
        [(0, 2, True)]
    """

    def __init__(self, config: IndexConfig) -> None:
        self.config = config
        self.states: dict[str, KeyState] = {}
        # partition → raw topic-partition → (latest event ms consumed, caught up)
        self._progress: dict[int, dict[str, tuple[int | None, bool]]] = {}
        self._floor: dict[int, int] = {}  # partition → watermark so far
        self._top: dict[tuple[str, int, int], dict[str, Contributor]] = {}

    def load(self, states: Mapping[str, KeyState]) -> None:
        """Replace the state (after a restart or a rebalance) with what the table holds."""
        self.states = dict(states)
        for state in self.states.values():
            if state.watermark_ms is not None:
                known = self._floor.get(state.partition)
                self._floor[state.partition] = max(known, state.watermark_ms) if known else state.watermark_ms
        self._top = {ref: top for ref, top in self._top.items() if ref[0] in self.states}

    def watermark_ms(self, partition: int) -> int | None:
        floor = self._floor.get(partition)
        progress = self._progress.get(partition, {})
        behind = [latest for latest, caught_up in progress.values() if not caught_up]
        known = [latest for latest, _ in progress.values() if latest is not None]
        if None in behind or not known:
            return floor  # a raw partition with a backlog of unknown time: wait
        basis = min(behind) if behind else max(known)
        watermark = basis - self.config.allowed_lateness_ms
        floor = watermark if floor is None else max(floor, watermark)
        self._floor[partition] = floor
        return floor

    def state(self, table_key: str) -> KeyState:
        state = self.states.get(table_key)
        if state is None:
            scope, key = split_key(table_key)
            state = self.states[table_key] = KeyState(scope, key)
        return state

    def apply(
        self,
        partials: Sequence[tuple[str, int, int, KeyPartial]],
        now_ms: int,
        ticks: Iterable[tuple[int, Mapping[str, tuple[int | None, bool]]]] = (),
    ) -> BatchOutcome:
        """Merge a batch of ``(table key, partition, offset, partial)`` and ticks ``(partition, {raw tp:
        (latest event ms or None, caught up)})``; then close every window its partition's watermark passed."""
        before = {p: self.watermark_ms(p) for p in {p for _, p, _, _ in partials}}
        changed: set[str] = set()
        beyond: list[LateBeyondHistory] = []
        skipped = closed = 0
        for table_key, partition, offset, partial in sorted(partials, key=lambda item: (item[0], item[2])):
            state = self.state(table_key)
            state.partition = partition
            watermark = before[partition]
            if watermark is not None:
                closed += state.close(watermark, self.config)
            if state.apply(partial, offset, watermark, self.config, now_ms):
                self._collect_top(table_key, state, partial)
                changed.add(table_key)
                beyond += [
                    LateBeyondHistory(state.scope, state.key, window_s, start, n, offset)
                    for window_s, start, n in state.late_beyond_history
                ]
                state.late_beyond_history.clear()
            else:
                skipped += 1
        for partition, progress in ticks:
            known = self._progress.setdefault(partition, {})
            for raw_tp, (latest, caught_up) in progress.items():
                previous = known.get(raw_tp, (None, False))[0]
                if previous is not None and (latest is None or latest < previous):
                    latest = previous
                known[raw_tp] = (latest, caught_up)
        after = {p: self.watermark_ms(p) for p in set(self._progress) | set(self._floor)}
        for table_key, state in self.states.items():
            watermark = after.get(state.partition)
            next_close = state.next_close_ms()
            if watermark is not None and next_close is not None and next_close <= watermark:
                closed += state.close(watermark, self.config)
                changed.add(table_key)
        updates = [update for table_key in sorted(changed) for update in self._take_updates(table_key)]
        for table_key in changed:
            state = self.states[table_key]
            state.watermark_ms = after.get(state.partition, state.watermark_ms)
        return BatchOutcome(updates, changed, skipped, closed, _merge_late(beyond))

    def late_totals(self) -> tuple[int, int]:
        """Late events seen by this process, and how many of them were of windows beyond the kept history.

        Read on ``market:all`` (every event counts there) at the smallest window size (an event late for
        any window is late for the smallest one that holds it, which ends no later).
        """
        state = self.states.get("market:all")
        if state is None:
            return 0, 0
        smallest = min(self.config.windows_s)
        size = state.sizes.get(smallest)
        return state.late_events.get(smallest, 0), size.late_untracked if size else 0

    def _collect_top(self, table_key: str, state: KeyState, partial: KeyPartial) -> None:
        for window in partial.windows:
            size = state.sizes.get(window.window_s)
            if size is None or window.start_ms not in size.open or not window.top:
                continue  # late: the window's contributors were reported when it closed
            top = self._top.setdefault((table_key, window.window_s, window.start_ms), {})
            for event_id in window.top:
                top[event_id] = partial.contributors[event_id]
            if len(top) > 2 * TOP_EVENTS_PER_SIDE:
                ranked = sorted(top.values(), key=lambda c: c.score)
                top.clear()
                top.update((c.event_id, c) for c in ranked[:TOP_EVENTS_PER_SIDE] + ranked[-TOP_EVENTS_PER_SIDE:])

    def _take_updates(self, table_key: str) -> list[IndexedUpdate]:
        state = self.states[table_key]
        updates = []
        for update in state.take_updates(self.config):
            ref = (table_key, update.window_s, update.window.start_ms)
            top = self._top.pop(ref, None) if update.closed else self._top.get(ref)
            ranked = tuple(sorted(top.values(), key=lambda c: c.score)) if top else ()
            updates.append(IndexedUpdate(state.scope, state.key, update, ranked))
        return updates


def _merge_late(late: list[LateBeyondHistory]) -> list[LateBeyondHistory]:
    """One entry per window: a batch may bring late events of one window in several partials."""
    merged: dict[tuple[str, str, int, int], LateBeyondHistory] = {}
    for entry in late:
        ref = (entry.scope, entry.key, entry.window_s, entry.start_ms)
        known = merged.get(ref)
        merged[ref] = (
            entry
            if known is None
            else replace(known, events=known.events + entry.events, offset=max(known.offset, entry.offset))
        )
    return list(merged.values())


def with_late_events(record: OpinionIndex | None, late: LateBeyondHistory, updated_at: datetime) -> OpinionIndex:
    """The stored record of a window with ``late.events`` more late events (a record of its own if none)."""
    if record is None:
        record = OpinionIndex(
            scope=late.scope, key=late.key, window_s=late.window_s, window_start=from_ms(late.start_ms),
            window_end=from_ms(late.start_ms + late.window_s * 1000), buzz=0, mean_score=0.0, net_sentiment=0.0,
            bullish_share=0.0, neutral_share=0.0, bearish_share=0.0, dispersion=0.0, closed=True,
            updated_at=updated_at,
        )  # fmt: skip
    return record.model_copy(
        update={"late_events": record.late_events + late.events, "closed": True, "updated_at": updated_at}
    )


def to_opinion_index(scope: Scope, key: str, update: WindowUpdate, updated_at: datetime) -> OpinionIndex:
    window = update.window
    f = figures(window)
    return OpinionIndex(
        scope=scope,
        key=key,
        window_s=update.window_s,
        window_start=from_ms(window.start_ms),
        window_end=from_ms(window.start_ms + update.window_s * 1000),
        buzz=f.buzz,
        mean_score=f.mean_score,
        net_sentiment=f.net_sentiment,
        bullish_share=f.bullish_share,
        neutral_share=f.neutral_share,
        bearish_share=f.bearish_share,
        dispersion=f.dispersion,
        buzz_z=window.buzz_z,
        sentiment_z=window.sentiment_z,
        baseline_windows=window.baseline,
        late_events=window.late,
        closed=update.closed,
        updated_at=updated_at,
    )


def record_id(scope: Scope, key: str, update: WindowUpdate) -> str:
    """Id of one version of a window's record: stable when a batch is reprocessed, new for each change."""
    w = update.window
    return f"{scope}:{key}/{update.window_s}/{w.start_ms}/{w.created_ms}.{w.revision}"
