"""The opinion report without a database: options, the summary's arithmetic, and what the documents hold."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from finpulse.report import (
    Chart,
    ReportData,
    ReportError,
    draw_charts,
    normalize_ticker,
    parse_since,
    pick_window_s,
    plain,
    records,
    render_html,
    render_markdown,
    summarize,
    weighted_net,
)  # fmt: skip
from finpulse.sinks.sql import QueryResult

UNTIL = datetime(2025, 3, 3, 15, tzinfo=UTC)
START = UNTIL - timedelta(hours=6)


@pytest.mark.parametrize(
    ("text", "start"),
    [("6h", START), ("90m", UNTIL - timedelta(minutes=90)), ("2 days", UNTIL - timedelta(days=2)),
     ("1.5h", UNTIL - timedelta(minutes=90)), ("1w", UNTIL - timedelta(weeks=1)),
     ("2025-03-03T09:00:00", START), ("2025-03-03T11:00:00+02:00", START), ("2025-03-03 09:00Z", START)],
)  # fmt: skip
def test_since_is_a_duration_back_from_the_newest_event_or_a_time(text: str, start: datetime) -> None:
    assert parse_since(text, until=UNTIL) == start


@pytest.mark.parametrize(
    ("text", "message"),
    [("yesterday", "neither a duration"), ("0h", "must be positive"), ("2025-03-04T00:00:00Z", "not before")],
)
def test_a_bad_since_names_the_value_and_what_would_do(text: str, message: str) -> None:
    with pytest.raises(ReportError, match=message) as raised:
        parse_since(text, until=UNTIL)
    assert repr(text) in str(raised.value)


def test_tickers_are_normalized_and_anything_else_refused() -> None:
    assert normalize_ticker("$nvda ") == "NVDA"
    assert normalize_ticker("0700.hk") == "0700.HK"
    assert normalize_ticker("  ") is None
    with pytest.raises(ReportError, match="not a ticker symbol"):
        normalize_ticker("NVDA' OR 1=1 --")


@pytest.mark.parametrize(
    ("hours", "window_s"),
    [(0.25, 60), (1, 300), (6, 300), (24, 300), (24 * 7, 3600), (24 * 90, 86400), (24 * 3650, 86400), (0, 60)],
)
def test_the_window_size_follows_the_range(hours: float, window_s: int) -> None:
    assert pick_window_s([86400, 60, 3600, 300], span=timedelta(hours=hours)) == window_s


def test_net_sentiment_of_several_windows_weighs_each_by_its_events() -> None:
    windows = [{"buzz": 30, "net_sentiment": 0.5}, {"buzz": 10, "net_sentiment": -0.5}, {"buzz": 0, "net_sentiment": 0}]
    assert weighted_net(windows) == (pytest.approx(0.25), 40)
    assert weighted_net([]) == (None, 0)


def test_datetimes_come_back_as_datetimes_through_the_workers_json_too() -> None:
    result = QueryResult.from_json({
        "columns": ["window_start", "buzz"], "types": ["DateTime64(3, 'UTC')", "UInt64"],
        "rows": [{"window_start": "2025-03-03T09:00:00+00:00", "buzz": 3}],
    })  # fmt: skip
    assert records(result) == [{"window_start": datetime(2025, 3, 3, 9, tzinfo=UTC), "buzz": 3}]


# ---- the document ----------------------------------------------------------------------------------


def window(minutes: int, net: float, buzz: int = 20, z: float | None = None, scope: str = "ticker") -> dict[str, Any]:
    return {"scope": scope, "window_start": START + timedelta(minutes=minutes), "buzz": buzz, "mean_score": net,
            "net_sentiment": net, "bullish_share": 0.5, "bearish_share": 0.2, "sentiment_z": z, "buzz_z": None,
            "closed": True}  # fmt: skip


def alert(rule: str, state: str, minutes: int, *, still: bool, message: str = "z below -3") -> dict[str, Any]:
    moment = START + timedelta(minutes=minutes)
    return {"alert_id": f"{rule}-{state}-{minutes}", "rule": rule, "state": state, "severity": "critical",
            "scope": "ticker", "key": "NVDA", "window_s": 300, "window_start": moment, "fired_at": moment,
            "message": message, "top_event_texts": ["NVDA | guidance *cut*"], "still_firing": still}  # fmt: skip


def report_data(*, generated_after: timedelta = timedelta(minutes=5), **changes: Any) -> ReportData:
    # six hours of 5-minute windows: +0.2 for five hours, then -0.6 in the last hour
    series = [window(5 * i, 0.2 if i < 60 else -0.6, z=-4.2 if i == 70 else 0.1) for i in range(72)]
    fields: dict[str, Any] = {
        "ticker": "NVDA", "since": START, "as_of": UNTIL, "generated_at": UNTIL + generated_after, "window_s": 300,
        "totals": {"events": 1440, "news": 400, "social": 1040, "ticker_count": 1, "source_count": 3,
                   "first_event": START, "model_versions": ["minilm-int8-v1"]},
        "series": series,
        "market_series": [window(5 * i, 0.1, buzz=200, scope="market") for i in range(72)],
        "movers": [{"ticker": "NVDA", "peak_sentiment_z": -4.2, "peak_window_start": START + timedelta(minutes=350),
                    "peak_net_sentiment": -0.8, "peak_buzz": 150, "range_net_sentiment": 0.05, "range_buzz": 1440}],
        "sources": [{"kind": "social", "source": "x", "events": 1040, "share_of_events": 0.72, "net_sentiment": 0.1,
                     "bullish_share": 0.4, "neutral_share": 0.3, "bearish_share": 0.3},
                    {"kind": "news", "source": "reuters|wire", "events": 400, "share_of_events": 0.28,
                     "net_sentiment": -0.2, "bullish_share": 0.2, "neutral_share": 0.4, "bearish_share": 0.4}],
        "alerts": [alert("sentiment_drop", "firing", 350, still=True, message="NVDA | <script>x()</script>"),
                   alert("buzz_spike", "firing", 300, still=False), alert("buzz_spike", "resolved", 330, still=False)],
    }  # fmt: skip
    return ReportData(**(fields | changes))


def test_the_summary_compares_the_last_hour_with_the_rest_and_names_movers_and_alerts() -> None:
    lines = [plain(line) for line in summarize(report_data())]
    assert lines[0].startswith("NVDA: net sentiment -0.60 over the last hour of data (240 events)")
    assert "against +0.20 earlier in the range (change -0.80; buzz 1.0× the earlier hourly rate)" in lines[0]
    assert "latest 5-minute sentiment z-score +0.10" in lines[0]
    assert "NVDA z -4.20 at 14:50 (net -0.80, 150 events)" in lines[1]
    assert lines[2] == "2 alerts fired (buzz_spike, sentiment_drop) about NVDA; still firing: sentiment_drop for NVDA."


def test_the_summary_warns_when_the_newest_event_is_old() -> None:
    stale = summarize(report_data(generated_after=timedelta(hours=30)))
    assert plain(stale[0]).startswith("The newest event is 30.0 h old")
    assert not any("newest event" in line for line in summarize(report_data()))


def test_the_summary_says_what_is_missing() -> None:
    lines = [plain(line) for line in summarize(report_data(series=[], movers=[], alerts=[]))]
    assert "has no 5-minute windows for NVDA" in lines[0]
    assert "No ticker has a sentiment z-score" in lines[1]
    assert lines[2] == "No alerts fired in the range."


def table(markdown: str, header_start: str) -> list[int]:
    """The number of cells in each line of the Markdown table whose header starts with ``header_start``."""
    lines = markdown.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[first:]:
        if not line.startswith("|"):
            break
        rows.append(len(re.findall(r"(?<!\\)\|", line)) - 1)
    return rows


def test_data_with_markup_stays_text_in_markdown_and_html() -> None:
    data = report_data()
    charts = [Chart("movers.png", "Top movers", b"\x89PNG fake")]
    markdown = render_markdown(data, charts)
    assert table(markdown, "| Window (UTC) |") == [7] * 5  # header, rule, three alerts
    assert table(markdown, "| Kind | Source |") == [8] * 4
    assert "reuters\\|wire" in markdown and "NVDA \\| \\<script\\>x()\\</script\\>" in markdown
    assert "![Top movers](movers.png)" in markdown

    page = render_html(data, charts)
    assert "<script" not in page and "&lt;script&gt;x()&lt;/script&gt;" in page
    assert '<img src="data:image/png;base64,iVBORyBmYWtl" alt="Top movers"' in page
    assert "movers.png" not in page
    assert page.count("<tr>") == 3 + 1 + 2 + 3  # a header per table, then the movers, sources and alerts


def test_every_chart_is_a_png_and_charts_without_data_are_left_out() -> None:
    charts = draw_charts(report_data())
    assert [chart.name for chart in charts] == ["sentiment.png", "movers.png", "sources.png", "alerts.png"]
    assert all(chart.png.startswith(b"\x89PNG\r\n\x1a\n") for chart in charts)
    assert [chart.name for chart in draw_charts(report_data(movers=[], alerts=[]))] == ["sentiment.png", "sources.png"]
