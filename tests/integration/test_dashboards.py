"""Dashboard views, the Grafana dashboard and the opinion report on a real chDB, with rows the test inserts.

The rows: a shock-scenario feed (6 hours of event time, the burst about NVDA late in the span so that it
falls in the last hour), each event scored by the stance it was generated with; opinion_index windows
as the SQL index of 0002 (opinion_index_sql) computes them from those events; and a few alert state
changes. Everything is read the way users read it: views through ``run_query`` (read-only),
the report through ``finpulse.query.query``.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from clickhouse_connect.driver import Client
from typer import Typer
from typer.testing import CliRunner

from finpulse.feed import Scenario, Shock, generate_labeled
from finpulse.report import ReportError, gather, write_report
from finpulse.settings import Settings, get_settings
from finpulse.sinks.clickhouse import get_client
from finpulse.sinks.migrations import migrate
from finpulse.sinks.sql import QueryResult, run_query

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "infra" / "grafana" / "dashboards" / "finpulse.json"
SHOCKED = "NVDA"
EVENTS = 3000
LATE_SHOCK = Scenario("late-shock", "a burst about one ticker in the last hour", EVENTS, shock=Shock(start=0.85))
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# ---- the rows --------------------------------------------------------------------------------------

SCORED_COLUMNS = [
    "event_id", "kind", "source", "tickers", "text", "label", "p_bearish", "p_neutral", "p_bullish", "score",
    "confidence", "model_version", "event_time", "ingested_at", "scored_at", "stored_at",
]  # fmt: skip
# p_bearish, p_neutral, p_bullish of an event generated with each stance, before a little noise
_PROBABILITIES = {"bearish": (0.82, 0.1, 0.08), "neutral": (0.1, 0.8, 0.1), "bullish": (0.08, 0.12, 0.8)}

INDEX_COLUMNS = [
    "scope", "key", "window_s", "window_start", "window_end", "buzz", "mean_score", "net_sentiment",
    "bullish_share", "neutral_share", "bearish_share", "dispersion", "buzz_z", "sentiment_z",
    "baseline_windows", "late_events", "closed", "updated_at",
]  # fmt: skip
# The streamed index's rows as the SQL side of 0002 computes them from the stored events.
INDEX_FROM_EVENTS = (
    f"INSERT INTO opinion_index ({', '.join(INDEX_COLUMNS)}) SELECT {', '.join(INDEX_COLUMNS)} FROM opinion_index_sql"
)
ALERT_COLUMNS = [
    "alert_id", "rule", "state", "severity", "scope", "key", "window_s", "window_start", "observed", "threshold",
    "message", "top_event_ids", "top_event_texts", "fired_at",
]  # fmt: skip


def scored_rows() -> list[list[Any]]:
    rng = random.Random(5)
    now = datetime.now(UTC) - timedelta(minutes=1)  # whole seconds behind: Grafana filters end on a second
    rows = []
    for item in generate_labeled(LATE_SHOCK, seed=5, shock_ticker=SHOCKED):
        event = item.event
        noisy = [max(p + rng.uniform(-0.05, 0.05), 0.01) for p in _PROBABILITIES[item.stance]]
        p_bearish, p_neutral, p_bullish = (p / sum(noisy) for p in noisy)
        label = max(zip((p_bearish, p_neutral, p_bullish), ("bearish", "neutral", "bullish"), strict=True))[1]
        news = hasattr(event, "headline")
        rows.append([
            event.id, "news" if news else "social", event.source if news else event.platform, list(item.tickers),
            event.headline if news else event.text, label, p_bearish, p_neutral, p_bullish, p_bullish - p_bearish,
            max(p_bearish, p_neutral, p_bullish), "fixture-v1", event.published_at if news else event.created_at,
            now, now, now,
        ])  # fmt: skip
    # one event about a ticker nobody mentioned since
    old = now - timedelta(days=3)
    rows.append(["old-1", "news", "reuters", ["OLDCO"], "OLDCO files for bankruptcy", "bearish", 0.9, 0.05, 0.05,
                 -0.85, 0.9, "fixture-v1", old, old, old, old])  # fmt: skip
    return rows


@pytest.fixture(scope="module")
def chdb_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("dashboards") / "clickhouse"


@pytest.fixture(scope="module")
def client(chdb_dir: Path) -> Iterator[Client]:
    """The module's chDB, migrated and filled; closed at the end so that the next module can open its own."""
    client = get_client(f"chdb://{chdb_dir}")
    migrate(client)
    client.insert("scored_events", scored_rows(), column_names=SCORED_COLUMNS)
    client.command(INDEX_FROM_EVENTS)
    insert_alerts(client)
    yield client
    client.close()


def insert_alerts(client: Client) -> None:
    """A sentiment drop on NVDA that fired (stored twice, as a retried write would) and resolved, and a
    buzz spike that still fires."""
    (worst,) = client.query(
        "SELECT window_start, sentiment_z FROM opinion_index_final WHERE scope = 'ticker' AND key = {t:String} "
        "AND window_s = 300 AND sentiment_z IS NOT NULL ORDER BY sentiment_z LIMIT 1",
        parameters={"t": SHOCKED},
    ).result_rows
    start, z = worst
    now = datetime.now(UTC) - timedelta(minutes=1)  # whole seconds behind: Grafana filters end on a second

    def alert(rule: str, state: str, window_start: datetime, fired_at: datetime, message: str) -> list[Any]:
        return [
            f"{rule}:ticker:{SHOCKED}:{window_start:%Y%m%dT%H%M}:{state}", rule, state, "critical", "ticker",
            SHOCKED, 300, window_start, {"sentiment_z": z, "buzz": 40.0}, {"sentiment_z": -3.0, "min_buzz": 20.0},
            message, ["e1", "e2"], ["NVDA guidance cut | shares *plunge*", "<b>Sell</b> NVDA now"], fired_at,
        ]  # fmt: skip

    firing = alert("sentiment_drop", "firing", start, now - timedelta(seconds=30), f"NVDA sentiment z {z:.1f}")
    resolved = alert("sentiment_drop", "resolved", start + timedelta(minutes=20), now - timedelta(seconds=10),
                     "NVDA sentiment back within 3 sigma")  # fmt: skip
    spike = alert("buzz_spike", "firing", start, now - timedelta(seconds=20), "NVDA buzz 8x its baseline")
    client.insert("alerts", [firing, resolved, spike], column_names=ALERT_COLUMNS)
    client.insert("alerts", [firing], column_names=ALERT_COLUMNS)  # the retry


def rows(client: Client, sql: str) -> list[dict[str, Any]]:
    result = run_query(client, sql)
    return [dict(zip(result.columns, row, strict=True)) for row in result.rows]


# ---- the views -------------------------------------------------------------------------------------

VIEWS = {
    "v_latest_ticker_index", "v_top_movers", "v_top_movers_1h", "v_ticker_sentiment_5m",
    "v_source_breakdown", "v_alerts", "v_recent_alerts",
}  # fmt: skip


def test_the_views_exist_after_the_migrations(client: Client) -> None:
    names = {name for (name,) in client.query(
        "SELECT name FROM system.tables WHERE database = currentDatabase() AND engine = 'View'"
    ).result_rows}  # fmt: skip
    assert names >= VIEWS


def test_an_upserted_window_shows_its_newest_version(client: Client) -> None:
    start = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)
    then = datetime.now(UTC)
    versions = [
        ["ticker", "ZZUP", 300, start, start + timedelta(minutes=5), buzz, 0.1, 0.2, 0.4, 0.4, 0.2, 0.3, None,
         None, 0, 0, closed, then + timedelta(seconds=offset)]
        for buzz, closed, offset in ((40, True, 2), (10, False, 0), (25, False, 1))
    ]  # fmt: skip
    client.insert("opinion_index", versions, column_names=INDEX_COLUMNS)
    (window,) = rows(client, "SELECT buzz, closed FROM v_latest_ticker_index WHERE ticker = 'ZZUP'")
    assert window == {"buzz": 40, "closed": True}


def test_latest_index_is_one_row_per_ticker_and_window_size_at_its_newest_window(client: Client) -> None:
    latest = rows(client, "SELECT ticker, window_s, window_start, buzz FROM v_latest_ticker_index")
    keys = [(row["ticker"], row["window_s"]) for row in latest]
    assert len(keys) == len(set(keys))
    (newest,) = rows(
        client,
        f"""
        SELECT max(window_start) AS window_start FROM opinion_index
        WHERE scope = 'ticker' AND key = '{SHOCKED}' AND window_s = 300""",
    )
    (shocked,) = [row for row in latest if row["ticker"] == SHOCKED and row["window_s"] == 300]
    assert shocked["window_start"] == newest["window_start"]
    assert {window_s for _, window_s in keys} == {60, 300, 3600, 86400}


def test_top_movers_of_the_last_hour_put_the_shocked_ticker_first(client: Client) -> None:
    movers = rows(client, "SELECT * FROM v_top_movers_1h")
    (as_of,) = rows(client, "SELECT max(window_end) AS t FROM opinion_index WHERE scope = 'ticker' AND window_s = 300")
    first = movers[0]
    assert first["ticker"] == SHOCKED and first["direction"] == "bearish"
    assert first["peak_sentiment_z"] < -2 and first["peak_net_sentiment"] < -0.5
    for mover in movers:
        assert mover["as_of"] == as_of["t"]
        assert as_of["t"] - timedelta(hours=1) <= mover["peak_window_start"] < as_of["t"]
        assert mover["peak_buzz"] >= 10, "a window of fewer than 10 events must not make a mover"
    assert [abs(m["peak_sentiment_z"]) for m in movers] == sorted((abs(m["peak_sentiment_z"]) for m in movers),
                                                                   reverse=True)  # fmt: skip


def test_top_movers_over_a_range_weigh_the_range_by_buzz(client: Client) -> None:
    (mover,) = rows(
        client,
        f"""
        SELECT * FROM v_top_movers(since = '2000-01-01 00:00:00', until = now64(), window_s = 300, min_buzz = 1)
        WHERE ticker = '{SHOCKED}'""",
    )
    (direct,) = rows(
        client,
        f"""
        SELECT count() AS buzz, (countIf(label = 'bullish') - countIf(label = 'bearish')) / count() AS net
        FROM scored_events WHERE has(tickers, '{SHOCKED}')""",
    )
    assert mover["range_buzz"] == direct["buzz"]
    assert mover["range_net_sentiment"] == pytest.approx(direct["net"])


def test_ticker_time_series_counts_every_event_about_the_ticker(client: Client) -> None:
    (series,) = rows(
        client,
        f"""
        SELECT count() AS windows, sum(buzz) AS events, min(net_sentiment) AS lowest
        FROM v_ticker_sentiment_5m WHERE ticker = '{SHOCKED}'""",
    )
    (direct,) = rows(
        client,
        f"""
        SELECT uniqExact(toStartOfFiveMinutes(event_time)) AS windows, count() AS events
        FROM scored_events WHERE has(tickers, '{SHOCKED}')""",
    )
    assert (series["windows"], series["events"]) == (direct["windows"], direct["events"])
    assert series["lowest"] < -0.5, "the burst shows as strongly negative windows"


def test_source_breakdown_splits_the_range_by_source(client: Client) -> None:
    everything = "since = '2000-01-01 00:00:00', until = now64()"
    market = rows(client, f"SELECT * FROM v_source_breakdown({everything}, ticker = '')")
    about = rows(client, f"SELECT * FROM v_source_breakdown({everything}, ticker = '{SHOCKED}')")
    assert sum(row["events"] for row in market) == EVENTS + 1
    assert (
        sum(row["events"] for row in about)
        == rows(client, f"SELECT count() AS n FROM scored_events WHERE has(tickers, '{SHOCKED}')")[0]["n"]
    )
    assert {row["kind"] for row in market} == {"news", "social"}
    assert sum(row["share_of_events"] for row in market) == pytest.approx(1)
    for row in market:
        assert row["bullish_share"] + row["neutral_share"] + row["bearish_share"] == pytest.approx(1)
    assert [row["events"] for row in market] == sorted((row["events"] for row in market), reverse=True)
    old = rows(client, "SELECT * FROM v_source_breakdown(since = now64() - INTERVAL 4 DAY, "
                       "until = now64() - INTERVAL 2 DAY, ticker = '')")  # fmt: skip
    assert [(row["source"], row["events"]) for row in old] == [("reuters", 1)]


def test_alerts_are_shown_once_newest_first_with_what_still_fires(client: Client) -> None:
    alerts = rows(client, "SELECT rule, state, still_firing, top_event_texts FROM v_recent_alerts")
    assert [(a["rule"], a["state"], a["still_firing"]) for a in alerts] == [
        ("sentiment_drop", "resolved", False),
        ("buzz_spike", "firing", True),
        ("sentiment_drop", "firing", False),
    ]
    assert alerts[0]["top_event_texts"][1] == "<b>Sell</b> NVDA now"


# ---- the Grafana dashboard -------------------------------------------------------------------------


def grafana_sql(sql: str, *, start: datetime, end: datetime, variables: dict[str, list[str]]) -> str:
    """``sql`` as the ClickHouse data source sends it: Grafana's variables, then the plugin's macros."""

    def quoted(values: list[str]) -> str:
        return ", ".join("'" + value.replace("'", "\\'") + "'" for value in values)

    for name, values in variables.items():
        sql = sql.replace(f"${{{name}:singlequote}}", quoted(values))
        sql = re.sub(rf"\$\{{{name}\}}|\${name}\b", ",".join(values), sql)
    first, last = int(start.timestamp()), int(end.timestamp())
    sql = re.sub(r"\$__timeFilter\(([^)]+)\)",
                 rf"\1 >= toDateTime({first}) AND \1 <= toDateTime({last})", sql)  # fmt: skip
    sql = re.sub(r"\$__timeInterval\(([^)]+)\)", r"toStartOfInterval(toDateTime(\1), INTERVAL 60 second)", sql)
    sql = sql.replace("$__fromTime", f"toDateTime({first})").replace("$__toTime", f"toDateTime({last})")
    sql = sql.replace("$__interval_s", "60")
    assert "$" not in sql, f"a variable or macro this test does not know: {sql}"
    return sql


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panel_queries(board: dict[str, Any]) -> dict[str, str]:
    queries = {
        f"{panel['title']} [{target['refId']}]": target["rawSql"]
        for panel in board["panels"] for target in panel.get("targets", [])
    }  # fmt: skip
    for annotation in board["annotations"]["list"]:
        if "target" in annotation and "rawSql" in annotation["target"]:
            queries[f"annotation {annotation['name']}"] = annotation["target"]["rawSql"]
    return queries


def time_range(board: dict[str, Any]) -> tuple[datetime, datetime]:
    units = {"m": "minutes", "h": "hours", "d": "days"}
    amount, unit = re.fullmatch(r"now-(\d+)([mhd])", board["time"]["from"]).groups()  # type: ignore[union-attr]
    assert board["time"]["to"] == "now"
    end = datetime.now(UTC)
    return end - timedelta(**{units[unit]: int(amount)}), end


def test_the_dashboard_uses_the_provisioned_data_source_and_shows_each_view() -> None:
    board = dashboard()
    (provisioning,) = [yaml.safe_load(path.read_text()) for path in
                       (REPO / "infra" / "grafana" / "provisioning" / "datasources").glob("*.yaml")]  # fmt: skip
    (source,) = provisioning["datasources"]
    panels = [panel for panel in board["panels"] if panel["type"] != "row"]
    assert len({panel["id"] for panel in board["panels"]}) == len(board["panels"])
    for panel in panels:
        assert panel["datasource"] == {"type": source["type"], "uid": source["uid"]}, panel["title"]
        for target in panel["targets"]:
            assert target["editorType"] == "sql" and target["datasource"]["uid"] == source["uid"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
    sql = "\n".join(panel_queries(board).values())
    for name in ("v_latest_ticker_index", "v_top_movers_1h", "v_ticker_sentiment_5m", "v_source_breakdown",
                 "v_recent_alerts", "scored_events"):  # fmt: skip
        assert re.search(rf"\b{name}\b", sql), f"no panel reads {name}"
    assert "${ticker:singlequote}" in sql


def test_every_panel_query_runs_on_the_real_schema_and_returns_rows(client: Client) -> None:
    board = dashboard()
    start, end = time_range(board)
    variables: dict[str, list[str]] = {}
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            sql = grafana_sql(variable["query"], start=start, end=end, variables=variables)
            values = [str(row[0]) for row in run_query(client, sql).rows]
            assert values, f"variable {variable['name']} has no values"
            variables[variable["name"]] = values[:1]
        else:
            variables[variable["name"]] = [variable["current"]["value"]]
    assert variables["ticker"] == [SHOCKED], "the most discussed ticker comes first"

    for title, raw in panel_queries(board).items():
        result: QueryResult = run_query(client, grafana_sql(raw, start=start, end=end, variables=variables))
        assert result.rows, f"{title}: no rows"


# ---- the report ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def settings(client: Client, chdb_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(data_dir=tmp_path_factory.mktemp("var"), clickhouse_dsn=f"chdb://{chdb_dir}")


def test_the_market_report_renders_from_the_stored_data(settings: Settings, tmp_path: Path) -> None:
    data = gather(settings, since="24h")
    files = write_report(data, tmp_path / "report")

    assert data.window_s == 300 and data.totals["events"] == EVENTS
    assert data.movers[0]["ticker"] == SHOCKED
    assert [chart.name for chart in files.charts] == ["sentiment.png", "movers.png", "sources.png", "alerts.png"]
    for chart in files.charts:
        assert chart.read_bytes().startswith(PNG_MAGIC)
    markdown = files.markdown.read_text()
    summary = markdown.split("## Summary")[1].split("##")[0]
    assert f"**{SHOCKED}** z -" in summary and "still firing: buzz\\_spike" in summary
    assert "![Top movers](movers.png)" in markdown
    page = files.html.read_text()
    assert page.count('<img src="data:image/png;base64,') == len(files.charts)
    assert "<b>Sell</b>" not in page and "&lt;b&gt;Sell&lt;/b&gt;" in page


def test_a_ticker_report_follows_the_ticker_against_the_market(settings: Settings) -> None:
    data = gather(settings, ticker="$nvda", since="6h")
    assert data.ticker == SHOCKED
    assert data.series and data.market_series
    assert sum(row["buzz"] for row in data.series) < sum(row["buzz"] for row in data.market_series)
    assert {alert["key"] for alert in data.alerts} == {SHOCKED}
    assert sum(source["events"] for source in data.sources) == data.totals["events"]


def test_no_data_in_the_range_is_a_clear_error(settings: Settings) -> None:
    with pytest.raises(ReportError, match=r"no scored events about OLDCO between .* widen --since"):
        gather(settings, ticker="OLDCO", since="24h")
    with pytest.raises(ReportError, match=f"no scored events about ZZZZ; the most discussed tickers: {SHOCKED}"):
        gather(settings, ticker="ZZZZ")


def test_the_command_prints_the_written_paths_alone_on_stdout(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from finpulse.cli.report import report

    app = Typer()
    app.command()(report)
    monkeypatch.setenv("FINPULSE_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("FINPULSE_CLICKHOUSE_DSN", settings.clickhouse_dsn)
    get_settings.cache_clear()
    try:
        done = CliRunner().invoke(app, ["--since", "6h", "--out", str(tmp_path / "out")])
        refused = CliRunner().invoke(app, ["--ticker", "OLDCO", "--since", "1h"])
    finally:
        get_settings.cache_clear()
    assert done.exit_code == 0, done.stderr
    written = [Path(line) for line in done.stdout.splitlines()]
    assert [path.name for path in written[:2]] == ["report.md", "report.html"]
    assert all(path.is_file() for path in written)
    assert "Opinion report: the market" in done.stderr
    assert refused.exit_code == 1 and refused.stdout == ""
    assert "no scored events about OLDCO" in refused.stderr
