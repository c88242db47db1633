"""The opinion report: what a risk desk reads before deciding, as Markdown and self-contained HTML.

Four steps that read top to bottom: ``gather`` runs a handful of queries through
``finpulse.query.query`` (the dashboard views of ``sinks/schema/0004_dashboards.sql``, so the report and
Grafana show the same figures), ``summarize`` turns them into the executive summary, ``draw_charts``
renders matplotlib PNGs, and ``render_markdown``/``render_html`` write the document.

The range is one of event time and ends at the newest stored event ("as of"), not at the wall clock:
replayed files and the demo's simulated feed carry event times that end before now, and a report on
them should not come out empty. The header gives the age of that newest event, and the summary warns
when it is old (a stalled feed, or replayed data). ``--since`` is a duration back from there (``90m``,
``24h``, ``7d``) or an ISO 8601 start time.

The index series and the movers use one of the configured window sizes (``FINPULSE_INDEX_WINDOWS_S``),
picked by ``pick_window_s``: 5 minutes from about an hour to a day, 1 hour for a week, 1 minute for
shorter ranges.

Example:
    >>> until = datetime(2025, 3, 3, 15, tzinfo=UTC)
    >>> parse_since("6h", until=until).isoformat()
    '2025-03-03T09:00:00+00:00'
    >>> [pick_window_s([60, 300, 3600, 86400], span=timedelta(hours=h)) for h in (0.5, 3, 24, 168)]
    [60, 300, 300, 3600]
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

from finpulse.settings import Settings
from finpulse.sinks.sql import QueryResult

__all__ = [
    "MAX_POINTS", "MIN_POINTS", "Chart", "ReportData", "ReportError", "ReportFiles", "draw_charts", "gather",
    "normalize_ticker", "parse_since", "pick_window_s", "plain", "records", "render_html", "render_markdown",
    "summarize", "weighted_net", "write_report",
]  # fmt: skip

MAX_POINTS = 300
MIN_POINTS = 12
PREFERRED_MIN_WINDOW_S = 300
MARKET_KEY = "all"
TOP_MOVERS = 10
MIN_MOVER_BUZZ = 10  # events a window needs before its z-score can make a ticker a mover
TOP_SOURCES = 12
MAX_ALERTS = 200
STALE_AFTER = timedelta(hours=2)
LAST_HOUR = timedelta(hours=1)

_DURATION = re.compile(
    r"^\s*(\d+(?:\.\d+)?)\s*(s|secs?|seconds?|m|mins?|minutes?|h|hrs?|hours?|d|days?|w|weeks?)\s*$", re.IGNORECASE
)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}  # by the unit's first letter
_TICKER = re.compile(r"^[A-Z0-9][A-Z0-9.\-_^=:]{0,31}$")

Rows = list[dict[str, Any]]
Query = Callable[[str], QueryResult]


class ReportError(RuntimeError):
    """Nothing to report in the range, or an unusable option; the message says which and what to try."""


# ---- options ---------------------------------------------------------------------------------------


def parse_since(text: str, *, until: datetime) -> datetime:
    """The start of the range: ``until`` minus a duration (``30m``, ``24h``, ``7d``), or an ISO time."""
    match = _DURATION.match(text)
    if match:
        seconds = float(match[1]) * _UNIT_SECONDS[match[2][0].lower()]
        if seconds <= 0:
            raise ReportError(f"--since {text!r}: the duration must be positive")
        return until - timedelta(seconds=seconds)
    try:
        start = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ReportError(
            f"--since {text!r} is neither a duration (30m, 6h, 24h, 7d, 2w) nor an ISO 8601 time (2025-03-03T09:00:00Z)"
        ) from None
    start = start.replace(tzinfo=UTC) if start.tzinfo is None else start.astimezone(UTC)
    if start >= until:
        raise ReportError(f"--since {text!r} is not before the newest event ({_when(until)})")
    return start


def normalize_ticker(ticker: str | None) -> str | None:
    if ticker is None or not ticker.strip():
        return None
    symbol = ticker.strip().lstrip("$").upper()
    if not _TICKER.match(symbol):
        raise ReportError(f"--ticker {ticker!r} is not a ticker symbol (letters, digits and . - _ ^ = :)")
    return symbol


def pick_window_s(windows_s: Sequence[int], *, span: timedelta) -> int:
    """The window size the report charts and ranks movers by.

    The smallest size of at least ``PREFERRED_MIN_WINDOW_S`` that cuts ``span`` into ``MIN_POINTS`` to
    ``MAX_POINTS`` windows; else the smallest size that does; else the smallest size for a short span
    and the largest for a long one. One-minute windows hold too few events per ticker to chart opinion
    unless the range is short.
    """
    sizes = sorted(windows_s)
    fitting = [size for size in sizes if MIN_POINTS <= span.total_seconds() / size <= MAX_POINTS]
    preferred = [size for size in fitting if size >= PREFERRED_MIN_WINDOW_S]
    if preferred or fitting:
        return (preferred or fitting)[0]
    return sizes[0] if span.total_seconds() / sizes[0] < MIN_POINTS else sizes[-1]


# ---- data ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReportData:
    """Everything the report shows, as queried. Rows are dicts keyed by column name."""

    ticker: str | None
    since: datetime
    as_of: datetime
    generated_at: datetime
    window_s: int
    totals: dict[str, Any]
    series: Rows
    market_series: Rows = field(default_factory=list)
    movers: Rows = field(default_factory=list)
    sources: Rows = field(default_factory=list)
    alerts: Rows = field(default_factory=list)

    @property
    def subject(self) -> str:
        return self.ticker or "the market"

    @property
    def recent_span(self) -> timedelta:
        """What the summary calls "now": the last hour of data, or the last window if windows are longer."""
        return max(LAST_HOUR, timedelta(seconds=self.window_s))

    @property
    def first_event(self) -> datetime:
        """The first event in the range: where the time axes start."""
        return max(self.since, self.totals["first_event"])


def gather(settings: Settings, *, ticker: str | None = None, since: str = "24h") -> ReportData:
    """Query what the report shows, through ``finpulse.query.query`` (the worker, or chDB directly).

    Raises:
        ReportError: no scored events (about the ticker) in the range, or a bad option.
        finpulse.query.QueryError: ClickHouse could not be queried.
    """
    from finpulse.query import query

    run: Query = partial(query, settings)
    ticker = normalize_ticker(ticker)
    generated_at = datetime.now(UTC)
    about = f"has(tickers, {_literal(ticker)})" if ticker else "1"

    # The range ends at the newest event of all, so that a ticker gone quiet shows as quiet.
    (coverage,) = records(run(
        f"SELECT count() AS events, max(event_time) AS newest, countIf({about}) AS about, "
        f"minIf(event_time, {about}) AS first_about, maxIf(event_time, {about}) AS last_about "
        "FROM scored_events"
    ))  # fmt: skip
    if coverage["events"] == 0:
        raise ReportError("ClickHouse holds no scored events yet: run `finpulse demo`, or start a worker")
    if coverage["about"] == 0:
        raise ReportError(f"no scored events about {ticker}; the most discussed tickers: {_top_tickers(run)}")
    as_of = min(coverage["newest"], generated_at)
    start = parse_since(since, until=as_of)
    until = as_of + timedelta(milliseconds=1)  # ranges are half-open; the newest event belongs in
    in_range = f"event_time >= {_time(start)} AND event_time < {_time(until)}"

    (totals,) = records(run(
        "SELECT count() AS events, countIf(kind = 'news') AS news, countIf(kind = 'social') AS social, "
        "length(groupUniqArrayArray(tickers)) AS ticker_count, uniqExact(source) AS source_count, "
        "min(event_time) AS first_event, arraySort(groupUniqArray(model_version)) AS model_versions "
        f"FROM scored_events WHERE {about} AND {in_range}"
    ))  # fmt: skip
    if totals["events"] == 0:
        what = f" about {ticker}" if ticker else ""
        raise ReportError(
            f"no scored events{what} between {_when(start)} and {_when(as_of)}; the stored events{what} "
            f"span {_when(coverage['first_about'])} to {_when(coverage['last_about'])}: widen --since"
        )

    window_s = pick_window_s(settings.index_windows_s, span=as_of - max(start, totals["first_event"]))
    in_windows = f"window_s = {window_s} AND window_start >= {_time(start)} AND window_start < {_time(until)}"
    keys = [("market", MARKET_KEY)] + ([("ticker", ticker)] if ticker else [])
    series = records(run(
        "SELECT scope, window_start, buzz, mean_score, net_sentiment, bullish_share, bearish_share, "
        "sentiment_z, buzz_z, closed FROM opinion_index_final "
        f"WHERE (scope, key) IN ({', '.join(f'({_literal(s)}, {_literal(k)})' for s, k in keys)}) "
        f"AND {in_windows} ORDER BY window_start"
    ))  # fmt: skip
    market_series = [row for row in series if row["scope"] == "market"]
    subject_series = [row for row in series if row["scope"] == "ticker"] if ticker else market_series

    movers = records(run(
        f"SELECT * FROM v_top_movers(since = {_time(start)}, until = {_time(until)}, window_s = {window_s}, "
        f"min_buzz = {MIN_MOVER_BUZZ}) LIMIT {TOP_MOVERS}"
    ))  # fmt: skip
    sources = records(run(
        f"SELECT * FROM v_source_breakdown(since = {_time(start)}, until = {_time(until)}, "
        f"ticker = {_literal(ticker or '')})"
    ))  # fmt: skip
    alert_filter = f"AND scope = 'ticker' AND key = {_literal(ticker)}" if ticker else ""
    alerts = records(run(
        "SELECT alert_id, rule, state, severity, scope, key, window_s, window_start, fired_at, message, "
        "top_event_texts, still_firing FROM v_alerts "
        f"WHERE window_start >= {_time(start)} AND window_start < {_time(until)} {alert_filter} "
        f"ORDER BY fired_at DESC, alert_id LIMIT {MAX_ALERTS}"
    ))  # fmt: skip
    alerts.reverse()

    return ReportData(
        ticker=ticker, since=start, as_of=as_of, generated_at=generated_at, window_s=window_s,
        totals=totals, series=subject_series, market_series=market_series if ticker else [],
        movers=movers, sources=sources, alerts=alerts,
    )  # fmt: skip


def _top_tickers(run: Query, limit: int = 8) -> str:
    rows = run(
        "SELECT arrayJoin(tickers) AS ticker FROM scored_events GROUP BY ticker "
        f"ORDER BY count() DESC, ticker LIMIT {limit}"
    ).rows
    return ", ".join(str(ticker) for (ticker,) in rows)


def records(result: QueryResult) -> Rows:
    """Rows as dicts, with DateTime columns as aware datetimes whichever way the query travelled."""
    times = {name for name, kind in zip(result.columns, result.types, strict=True) if "DateTime" in kind}
    return [
        {name: _as_datetime(value) if name in times else value for name, value in zip(result.columns, row, strict=True)}
        for row in result.rows
    ]  # fmt: skip


def _as_datetime(value: Any) -> Any:
    if isinstance(value, str):  # through the worker's HTTP endpoint, as ISO 8601
        value = datetime.fromisoformat(value)
    if isinstance(value, datetime) and value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value


def _literal(text: str | None) -> str:
    escaped = (text or "").replace("\\", "\\\\").replace("'", "\\'")
    return f"'{escaped}'"


def _time(moment: datetime) -> str:
    return f"toDateTime64('{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S.%f}', 6, 'UTC')"


# ---- executive summary -----------------------------------------------------------------------------


def weighted_net(rows: Rows) -> tuple[float | None, int]:
    """Net sentiment of several windows together (each weighted by its buzz), and their total buzz."""
    buzz = sum(int(row["buzz"]) for row in rows)
    if buzz == 0:
        return None, 0
    return sum(float(row["net_sentiment"]) * int(row["buzz"]) for row in rows) / buzz, buzz


def summarize(data: ReportData) -> list[str]:
    """The executive summary: one Markdown sentence per finding, most decision-relevant first."""
    lines = []
    age = data.generated_at - data.as_of
    if age > STALE_AFTER:
        lines.append(
            f"**The newest event is {_duration(age)} old** ({_when(data.as_of)}): the feed may be stalled, "
            "or this is replayed or simulated data. Figures describe the range below, not the present."
        )
    lines.append(_sentiment_finding(data))
    if data.movers:
        described = ", ".join(
            f"**{_md(row['ticker'])}** z {_signed(row['peak_sentiment_z'])} at {_clock(row['peak_window_start'])}"
            f" (net {_signed(row['peak_net_sentiment'])}, {_count(row['peak_buzz'], 'event')})"
            for row in data.movers[:3]
        )
        lines.append(f"Biggest movers by {_window_name(data.window_s)} sentiment z-score: {described}.")
    else:
        lines.append("No ticker has a sentiment z-score in the range yet (baselines still filling).")
    lines.append(_alert_finding(data.alerts))
    return lines


def _sentiment_finding(data: ReportData) -> str:
    if not data.series:
        return (
            f"The opinion index has no {_window_name(data.window_s)} windows for {_md(data.subject)} in the range: "
            "is the worker's index stage running?"
        )
    recent_span = data.recent_span
    cut = data.as_of - recent_span
    recent = [row for row in data.series if row["window_start"] >= cut]
    earlier = [row for row in data.series if row["window_start"] < cut]
    now_net, now_buzz = weighted_net(recent)
    base_net, base_buzz = weighted_net(earlier)
    subject = _md(data.subject).capitalize() if data.ticker is None else f"**{_md(data.subject)}**"
    if now_net is None:
        period = f"last {_span_name(recent_span)} of data ({_when(cut)} to {_when(data.as_of)})"
        return f"{subject}: no events in the {period}."
    text = (
        f"{subject}: net sentiment {_signed(now_net)} over the last {_span_name(recent_span)} of data "
        f"({_count(now_buzz, 'event')})"
    )
    if base_net is not None:
        hours = max((cut - data.series[0]["window_start"]).total_seconds() / 3600, 1e-9)
        text += (
            f", against {_signed(base_net)} earlier in the range (change {_signed(now_net - base_net)}; "
            f"buzz {now_buzz / (base_buzz / hours):.1f}× the earlier hourly rate)"
        )
    latest_z = next((row["sentiment_z"] for row in reversed(data.series) if row["sentiment_z"] is not None), None)
    if latest_z is not None:
        text += f"; latest {_window_name(data.window_s)} sentiment z-score {_signed(latest_z)}"
    return text + "."


def _alert_finding(alerts: Rows) -> str:
    fired = [row for row in alerts if row["state"] == "firing"]
    if not fired:
        return "No alerts fired in the range."
    rules = sorted({row["rule"] for row in fired})
    keys = sorted({row["key"] for row in fired})
    text = f"{_count(len(fired), 'alert')} fired ({_md(', '.join(rules))}) about {_md(', '.join(keys))}"
    still = [row for row in fired if row["still_firing"]]
    if still:
        text += "; still firing: " + ", ".join(f"{_md(row['rule'])} for **{_md(row['key'])}**" for row in still)
    else:
        text += "; all have since resolved"
    return text + "."


# ---- charts ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Chart:
    name: str  # file name, e.g. sentiment.png
    title: str
    png: bytes


_BEARISH, _NEUTRAL, _BULLISH, _MARKET = "#c0392b", "#95a5a6", "#27ae60", "#7f8c8d"


def draw_charts(data: ReportData) -> list[Chart]:
    """The report's PNG charts; a chart without data is left out."""
    charts = []
    if data.series:
        charts.append(Chart("sentiment.png", f"Sentiment and buzz: {data.subject}", _sentiment_chart(data)))
    if data.movers:
        charts.append(Chart("movers.png", "Top movers", _movers_chart(data)))
    if data.sources:
        charts.append(Chart("sources.png", "Source mix", _sources_chart(data)))
    if data.alerts:
        charts.append(Chart("alerts.png", "Alerts timeline", _alerts_chart(data)))
    return charts


def _figure(height: float, rows: int = 1, **kwargs: Any) -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    # fixed margins: a layout engine would double the drawing time
    height = max(height, 2.2)
    figure = Figure(figsize=(10, height))
    figure.subplots_adjust(left=0.17, right=0.97, top=1 - 0.45 / height, bottom=0.55 / height, hspace=0.08)
    return figure, figure.subplots(rows, 1, **kwargs)


def _png(figure: Any) -> bytes:
    import io

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def _time_axis(axis: Any) -> None:
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter

    locator = AutoDateLocator(tz=UTC)
    axis.xaxis.set_major_locator(locator)
    axis.xaxis.set_major_formatter(ConciseDateFormatter(locator, tz=UTC))


def _sentiment_chart(data: ReportData) -> bytes:
    figure, (sentiment, buzz) = _figure(5.5, 2, sharex=True, height_ratios=(3, 2))
    half = timedelta(seconds=data.window_s / 2)  # a window's value belongs to its middle
    times = [row["window_start"] for row in data.series]
    sentiment.axhline(0, color="black", linewidth=0.6)
    if data.market_series:
        sentiment.plot(
            [row["window_start"] + half for row in data.market_series],
            [row["net_sentiment"] for row in data.market_series],
            color=_MARKET, linestyle="--", linewidth=1, label="market",
        )  # fmt: skip
    sentiment.plot(
        [time + half for time in times], [row["net_sentiment"] for row in data.series],
        color="#2c3e50", linewidth=1.6, label=data.ticker or "market",
    )  # fmt: skip
    for alert in data.alerts:
        if alert["state"] == "firing" and (data.ticker is None or alert["key"] == data.ticker):
            sentiment.axvline(alert["window_start"], color=_BEARISH, alpha=0.35, linewidth=1)
    sentiment.set_ylim(-1.05, 1.05)
    sentiment.set_ylabel("net sentiment")
    sentiment.set_title(f"{data.subject}: net sentiment and buzz per {_window_name(data.window_s)} window (UTC)",
                        loc="left", fontsize=11)  # fmt: skip
    sentiment.legend(loc="lower left", fontsize=8)
    sentiment.grid(alpha=0.3)

    width = timedelta(seconds=data.window_s) * 0.9
    buzz.bar(times, [row["buzz"] for row in data.series], width=width, align="edge", color="#3498db")
    buzz.set_ylabel("events")
    buzz.set_xlim(min(data.first_event, times[0]), data.as_of + 2 * half)
    buzz.grid(alpha=0.3)
    _time_axis(buzz)
    return _png(figure)


def _movers_chart(data: ReportData) -> bytes:
    rows = list(reversed(data.movers))  # largest at the top
    figure, axis = _figure(0.6 + 0.38 * len(rows))
    values = [float(row["peak_sentiment_z"]) for row in rows]
    axis.barh([row["ticker"] for row in rows], values, color=[_BEARISH if v < 0 else _BULLISH for v in values])
    axis.axvline(0, color="black", linewidth=0.6)
    for guide in (-3, 3):
        axis.axvline(guide, color="gray", linestyle=":", linewidth=0.8)
    axis.set_xlabel(f"peak {_window_name(data.window_s)} sentiment z-score in range (dotted: ±3)")
    axis.grid(axis="x", alpha=0.3)
    return _png(figure)


def _sources_chart(data: ReportData) -> bytes:
    rows = list(reversed(data.sources[:TOP_SOURCES]))
    figure, axis = _figure(0.6 + 0.38 * len(rows))
    names = [f"{row['kind']}: {row['source']}" for row in rows]
    left = [0.0] * len(rows)
    for column, color, label in (("bearish_share", _BEARISH, "bearish"), ("neutral_share", _NEUTRAL, "neutral"),
                                 ("bullish_share", _BULLISH, "bullish")):  # fmt: skip
        shares = [float(row[column]) for row in rows]
        axis.barh(names, shares, left=left, color=color, label=label)
        left = [a + b for a, b in zip(left, shares, strict=True)]
    for y, row in enumerate(rows):
        axis.text(1.01, y, f"{row['events']:,}", va="center", fontsize=8)
    axis.set_xlim(0, 1.12)
    axis.set_xlabel("share of the source's events by label (right: events)")
    axis.legend(loc="lower right", fontsize=8, ncols=3, bbox_to_anchor=(1.0, 1.0))
    return _png(figure)


def _alerts_chart(data: ReportData) -> bytes:
    lanes = sorted({(row["rule"], row["key"]) for row in data.alerts})
    figure, axis = _figure(1.0 + 0.4 * len(lanes))
    colors = {"critical": _BEARISH, "warning": "#e67e22", "info": "#2980b9"}
    for row in data.alerts:
        y = lanes.index((row["rule"], row["key"]))
        firing = row["state"] == "firing"
        color = colors.get(row["severity"], "black")
        axis.scatter([row["window_start"]], [y], marker="v" if firing else "o", s=60 if firing else 40,
                     edgecolors=color, facecolors=color if firing else "none")  # fmt: skip
    axis.set_yticks(range(len(lanes)), [f"{rule}: {key}" for rule, key in lanes])
    pad = (data.as_of - data.first_event) * 0.02 + timedelta(minutes=1)
    axis.set_xlim(min(data.first_event, *(row["window_start"] for row in data.alerts)) - pad, data.as_of + pad)
    axis.set_ylim(-0.6, len(lanes) - 0.4)
    axis.set_title("alerts by window start (▼ firing, ○ resolved; red critical, orange warning, blue info)",
                   loc="left", fontsize=10)  # fmt: skip
    axis.grid(alpha=0.3)
    _time_axis(axis)
    return _png(figure)


# ---- the document ----------------------------------------------------------------------------------


def render_markdown(data: ReportData, charts: Sequence[Chart], *,
                    image_link: Callable[[Chart], str] = lambda chart: chart.name) -> str:  # fmt: skip
    """The report in Markdown; ``image_link`` says where each chart is (a file name, or a data: URI)."""
    images = {chart.name: f"![{chart.title}]({image_link(chart)})" for chart in charts}
    parts = [
        f"# Opinion report: {_md(data.subject)}",
        f"*{_when(data.since)} to {_when(data.as_of)} (event time; first event in range "
        f"{_when(data.first_event)}) · newest event {_duration(data.generated_at - data.as_of)} before "
        f"this report · generated {_when(data.generated_at)}*",
        "## Summary",
        "\n".join(f"- {line}" for line in summarize(data)),
        "## Sentiment and buzz",
        images.get("sentiment.png", "No opinion index windows in the range."),
        f"## Top movers\n\nTickers ranked by their largest {_window_name(data.window_s)} sentiment z-score "
        f"(against each ticker's own previous windows; windows of at least {MIN_MOVER_BUZZ} events) in the range.",
        images.get("movers.png", ""),
        _movers_table(data.movers),
        f"## Source mix\n\nEvents{' about ' + _md(data.ticker) if data.ticker else ''} by outlet and platform.",
        images.get("sources.png", ""),
        _sources_table(data.sources),
        "## Alerts",
        images.get("alerts.png", ""),
        _alerts_table(data.alerts),
        _alert_evidence(data.alerts),
        "## Data and method",
        _method(data),
    ]
    return "\n\n".join(part for part in parts if part) + "\n"


def _movers_table(movers: Rows) -> str:
    return _table(
        ["Ticker", "Peak z", "Window (UTC)", "Net then", "Events then", "Net in range", "Events in range"],
        [
            [
                row["ticker"],
                _signed(row["peak_sentiment_z"]),
                _when(row["peak_window_start"]),
                _signed(row["peak_net_sentiment"]),
                f"{row['peak_buzz']:,}",
                _signed(row["range_net_sentiment"]),
                f"{row['range_buzz']:,}",
            ]
            for row in movers
        ],
        empty="No ticker has a sentiment z-score in the range yet.",
    )


def _sources_table(sources: Rows) -> str:
    return _table(
        ["Kind", "Source", "Events", "Share", "Net sentiment", "Bullish", "Neutral", "Bearish"],
        [
            [
                row["kind"],
                row["source"],
                f"{row['events']:,}",
                _percent(row["share_of_events"]),
                _signed(row["net_sentiment"]),
                _percent(row["bullish_share"]),
                _percent(row["neutral_share"]),
                _percent(row["bearish_share"]),
            ]
            for row in sources
        ],
        empty="No events in the range.",
    )


def _alerts_table(alerts: Rows) -> str:
    return _table(
        ["Window (UTC)", "Fired at", "Rule", "Entity", "State", "Severity", "Message"],
        [
            [
                _when(row["window_start"]),
                _when(row["fired_at"]),
                row["rule"],
                f"{row['scope']} {row['key']}",
                row["state"] + (" (still firing)" if row["still_firing"] else ""),
                row["severity"],
                row["message"],
            ]
            for row in alerts
        ],
        empty="No alerts in the range.",
    )


def _alert_evidence(alerts: Rows) -> str:
    firing = [row for row in alerts if row["state"] == "firing" and row["top_event_texts"]][-5:]
    if not firing:
        return ""
    blocks = ["Top contributing events of the latest firings:"]
    for row in firing:
        texts = "\n".join(f"  - {_md(_shorten(text, 200))}" for text in row["top_event_texts"][:3])
        blocks.append(f"- {_md(row['rule'])}, **{_md(row['key'])}**, window {_when(row['window_start'])}:\n{texts}")
    return "\n".join(blocks)


def _method(data: ReportData) -> str:
    totals = data.totals
    return "\n".join([
        f"- {totals['events']:,} scored events in the range ({totals['news']:,} news, {totals['social']:,} social) "
        f"about {totals['ticker_count']:,} tickers from {totals['source_count']:,} sources; model "
        f"{_md(', '.join(totals['model_versions']))}.",
        f"- Index: `opinion_index` {_window_name(data.window_s)} windows of event time (the smallest configured "
        f"size of at least 5 minutes giving {MIN_POINTS} to {MAX_POINTS} windows over the range). Net sentiment = "
        "(bullish − bearish) / events; z-scores compare a window with the same key's previous closed windows.",
        f"- \"Last {_span_name(data.recent_span)}\" ends at the newest event ({_when(data.as_of)}), not at now.",
        "- Queries: `opinion_index_final`, `v_top_movers`, `v_source_breakdown`, `v_alerts` (README, Dashboards).",
    ])  # fmt: skip


def render_html(data: ReportData, charts: Sequence[Chart]) -> str:
    """One self-contained HTML file: the Markdown rendered, charts embedded as base64 PNGs."""
    from markdown_it import MarkdownIt

    def embedded(chart: Chart) -> str:
        return "data:image/png;base64," + base64.b64encode(chart.png).decode("ascii")

    # html=False: event texts and alert messages are data, never markup
    body = (
        MarkdownIt("commonmark", {"html": False})
        .enable("table")
        .render(render_markdown(data, charts, image_link=embedded))
    )
    return _HTML.format(title=html.escape(f"Opinion report: {data.subject}"), body=body)


_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1040px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }}
h1 {{ margin-bottom: 0.2em; }} h2 {{ border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 1.6em; }}
table {{ border-collapse: collapse; font-size: 0.9em; margin: 0.8em 0; }}
th, td {{ border: 1px solid #ddd; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }}
th {{ background: #f4f6f8; }} img {{ max-width: 100%; }} code {{ background: #f4f6f8; padding: 0 0.2em; }}
</style>
</head>
<body>
{body}
</body>
</html>
"""


def _table(header: list[str], rows: list[list[Any]], *, empty: str) -> str:
    if not rows:
        return empty
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_md(str(cell)) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


# Inline and in table cells, these are the characters Markdown would read as markup.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>|~])")


def _md(text: str) -> str:
    """Text from the data, safe inside a Markdown line or table cell."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", " ".join(str(text).split()))


def _shorten(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _count(number: int, noun: str) -> str:
    return f"{number:,} {noun}{'s' * (number != 1)}"


def plain(line: str) -> str:
    """A summary line without its Markdown, for a terminal."""
    return re.sub(r"\\(.)", r"\1", line.replace("**", ""))


def _signed(value: float | None) -> str:
    return "n/a" if value is None else f"{float(value):+.2f}"


def _percent(value: float) -> str:
    return f"{float(value):.0%}"


def _when(moment: datetime) -> str:
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M} UTC"


def _clock(moment: datetime) -> str:
    return f"{moment.astimezone(UTC):%H:%M}"


def _duration(delta: timedelta) -> str:
    minutes = max(int(delta.total_seconds() // 60), 0)
    if minutes < 120:
        return f"{minutes} min"
    if minutes < 48 * 60:
        return f"{minutes / 60:.1f} h"
    return f"{minutes / 1440:.1f} days"


def _span_name(span: timedelta) -> str:
    hours = span.total_seconds() / 3600
    if hours == 1:
        return "hour"
    return "day" if hours == 24 else f"{hours:g} hours"


def _window_name(window_s: int) -> str:
    if window_s % 86400 == 0:
        return f"{window_s // 86400}-day" if window_s != 86400 else "daily"
    if window_s % 3600 == 0:
        return f"{window_s // 3600}-hour"
    if window_s % 60 == 0:
        return f"{window_s // 60}-minute"
    return f"{window_s}-second"


# ---- files -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReportFiles:
    markdown: Path
    html: Path
    charts: list[Path]

    def all(self) -> list[Path]:
        return [self.markdown, self.html, *self.charts]


def write_report(data: ReportData, out: Path) -> ReportFiles:
    """Write ``report.md`` (charts as PNGs next to it) and a self-contained ``report.html`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    charts = draw_charts(data)
    chart_paths = []
    for chart in charts:
        path = out / chart.name
        path.write_bytes(chart.png)
        chart_paths.append(path)
    markdown = out / "report.md"
    markdown.write_text(render_markdown(data, charts), encoding="utf-8")
    page = out / "report.html"
    page.write_text(render_html(data, charts), encoding="utf-8")
    return ReportFiles(markdown=markdown, html=page, charts=chart_paths)
