"""Alert delivery on real components: a local HTTP subscriber, the embedded broker, chDB.

The subscriber is a real HTTP server on 127.0.0.1 started by the test; it answers with the statuses a
test gives it and records every request, so retries, signatures and dead letters are observed from the
receiving side.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import ConsumerRecord
from clickhouse_connect.driver import Client
from pydantic import SecretStr
from typer.testing import CliRunner

from finpulse.cli.alerts import alerts_app, sample_alert
from finpulse.rules import RulesError, parse_rules
from finpulse.schemas import Alert, OpinionIndex
from finpulse.settings import Settings, get_settings
from finpulse.sinks.clickhouse import get_client
from finpulse.sinks.migrations import migrate
from finpulse.sinks.webhooks import (
    ALERT_ID_HEADER,
    SIGNATURE_HEADER,
    InvalidSignatureError,
    WebhookDelivery,
    deliver,
    signature_header,
    verify_signature,
)
from finpulse.sinks.writer import ClickHouseWriter
from finpulse.streams import topics
from finpulse.streams.alerts import (
    AlertEngine,
    AlertOutput,
    AlertService,
    alert_columns,
    alert_records,
    restore_state,
)
from finpulse.streams.broker import EmbeddedBroker, free_port
from finpulse.streams.produce import new_producer, publish_batch
from finpulse.streams.topics import ensure_topics

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

SECRET = "whsec-test-1"
FAST = {"backoff_initial_s": 0.01, "backoff_max_s": 0.05}


@dataclass
class Request:
    headers: dict[str, str]
    body: bytes


@dataclass
class Subscriber:
    """A webhook endpoint: replies with ``statuses`` in turn (then ``then``), records every request."""

    statuses: list[int] = field(default_factory=list)
    then: int = 200
    requests: list[Request] = field(default_factory=list)
    url: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, headers: dict[str, str], body: bytes) -> int:
        with self._lock:
            self.requests.append(Request(headers, body))
            return self.statuses.pop(0) if self.statuses else self.then


class _Handler(BaseHTTPRequestHandler):
    server: _SubscriberServer

    def do_POST(self) -> None:  # noqa: N802 (the http.server name)
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        status = self.server.subscriber.answer({k.lower(): v for k, v in self.headers.items()}, body)
        self.send_response(status)
        if status == 429:
            self.send_header("Retry-After", "1")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


class _SubscriberServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, subscriber: Subscriber) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.subscriber = subscriber
        subscriber.url = f"http://127.0.0.1:{self.server_address[1]}/hook"


@pytest.fixture
def subscribe() -> Iterator[Callable[..., Subscriber]]:
    """Starts subscribers on loopback; all are shut down when the test ends."""
    servers: list[tuple[_SubscriberServer, threading.Thread]] = []

    def start(statuses: list[int] | None = None, then: int = 200) -> Subscriber:
        subscriber = Subscriber(list(statuses or []), then)
        server = _SubscriberServer(subscriber)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        servers.append((server, thread))
        return subscriber

    yield start
    for server, thread in servers:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="module")
def clickhouse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    """A migrated chDB for this module, closed at its end (chDB holds one directory per process at a time)."""
    client = get_client(f"chdb://{tmp_path_factory.mktemp('alerts') / 'clickhouse'}")
    migrate(client)
    yield client
    client.close()


def _alert(key: str = "NVDA", minute: int = 0, rule: str = "crash") -> Alert:
    start = datetime(2025, 3, 3, 9, 35, tzinfo=UTC) + timedelta(minutes=minute)
    return sample_alert(start).model_copy(
        update={"alert_id": f"{rule}-{key}-{minute}", "rule": rule, "key": key, "window_start": start}
    )


def _verified(request: Request, secret: str = SECRET) -> Alert:
    verify_signature(secret, request.headers[SIGNATURE_HEADER.lower()], request.body, tolerance_s=60)
    alert = Alert.model_validate_json(request.body)
    assert request.headers[ALERT_ID_HEADER.lower()] == alert.alert_id
    return alert


async def _read_topic(bootstrap: str, topic: str, expected: int, timeout_s: float = 20.0) -> list[ConsumerRecord]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    records: list[ConsumerRecord] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(records) < expected and time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=300)).values():
                records.extend(batch)
        # anything beyond what was expected would be a duplicate: give it a moment to show up
        for batch in (await consumer.getmany(timeout_ms=500)).values():
            records.extend(batch)
    finally:
        await consumer.stop()
    return records


# --- signatures ---------------------------------------------------------------------------------------------


def test_a_signature_verifies_only_for_its_body_secret_and_time() -> None:
    body = _alert().model_dump_json().encode()
    header = signature_header(SECRET, body, timestamp=1_700_000_000)
    # what a subscriber in any language computes: HMAC-SHA256 over "<t>.<body>", hex
    expected = hmac.new(SECRET.encode(), b"1700000000." + body, hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={expected}"
    assert verify_signature(SECRET, header, body, tolerance_s=300, now=1_700_000_299) == 1_700_000_000
    # a key rotation: the old and the new signature side by side, either verifies
    rotated = f"{header},v1={signature_header('new', body, timestamp=1_700_000_000).split('v1=')[1]}"
    assert verify_signature("new", rotated, body, now=1_700_000_000) == 1_700_000_000
    refusals = {
        "signature does not match": (SECRET, header, body + b" "),
        "does not match": ("other-secret", header, body),
        "from now": (SECRET, header, body),  # checked at now + 301 s below
        "malformed": (SECRET, "v1=abc", body),
        "no X-Finpulse-Signature": (SECRET, None, body),
        "not an integer": (SECRET, "t=soon,v1=abc", body),
    }
    for reason, (secret, candidate, payload) in refusals.items():
        now = 1_700_000_301 if reason == "from now" else 1_700_000_000
        with pytest.raises(InvalidSignatureError, match=reason):
            verify_signature(secret, candidate, payload, tolerance_s=300, now=now)


# --- one delivery -------------------------------------------------------------------------------------------


async def test_a_delivery_is_one_signed_post_of_the_alert(subscribe: Callable[..., Subscriber]) -> None:
    hook = subscribe()
    alert = _alert()
    async with httpx.AsyncClient(timeout=5) as client:
        delivery = await deliver(client, hook.url, alert, SECRET, max_attempts=3, **FAST)
    assert (delivery.delivered, delivery.attempts, delivery.status, delivery.error) == (True, 1, 200, "")
    [request] = hook.requests
    assert _verified(request) == alert
    assert request.headers["content-type"] == "application/json"


async def test_server_errors_are_retried_until_one_succeeds(subscribe: Callable[..., Subscriber]) -> None:
    hook = subscribe([500, 502, 500])
    async with httpx.AsyncClient(timeout=5) as client:
        delivery = await deliver(client, hook.url, _alert(), SECRET, max_attempts=5, **FAST)
    assert (delivery.delivered, delivery.attempts, delivery.status) == (True, 4, 200)
    assert len(hook.requests) == 4
    signatures = {request.headers[SIGNATURE_HEADER.lower()] for request in hook.requests}
    assert all(_verified(request).alert_id == "crash-NVDA-0" for request in hook.requests) and signatures


async def test_too_many_requests_waits_as_long_as_retry_after_says(subscribe: Callable[..., Subscriber]) -> None:
    hook = subscribe([429])
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=5) as client:
        delivery = await deliver(
            client, hook.url, _alert(), SECRET, max_attempts=3, backoff_initial_s=0.01, backoff_max_s=2
        )
    assert (delivery.delivered, delivery.attempts) == (True, 2)
    assert time.monotonic() - started >= 0.95  # Retry-After: 1


async def test_a_client_error_is_final_at_once(subscribe: Callable[..., Subscriber]) -> None:
    hook = subscribe(then=400)
    async with httpx.AsyncClient(timeout=5) as client:
        delivery = await deliver(client, hook.url, _alert(), SECRET, max_attempts=5, **FAST)
    assert (delivery.delivered, delivery.attempts, delivery.status) == (False, 1, 400)
    assert delivery.error == "HTTP 400 Bad Request" and len(hook.requests) == 1


async def test_an_unreachable_webhook_uses_the_whole_retry_budget() -> None:
    url = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens there
    async with httpx.AsyncClient(timeout=2) as client:
        delivery = await deliver(client, url, _alert(), SECRET, max_attempts=3, **FAST)
    assert (delivery.delivered, delivery.attempts, delivery.status) == (False, 3, None)
    assert delivery.error.startswith("ConnectError")


# --- background delivery and the dead letter --------------------------------------------------------------


async def test_an_alert_a_webhook_refuses_after_the_budget_goes_to_alerts_undelivered(
    subscribe: Callable[..., Subscriber], pipeline_settings: Settings, broker: EmbeddedBroker, clickhouse: Client
) -> None:
    settings = pipeline_settings
    await ensure_topics(settings, broker.bootstrap_servers)
    healthy, down = subscribe(), subscribe(then=503)
    producer = new_producer(broker.bootstrap_servers)
    await producer.start()
    try:
        output = AlertOutput(settings, ClickHouseWriter(clickhouse, retry_max_s=10), producer)
        delivery = await WebhookDelivery(
            [healthy.url, down.url], SECRET, max_attempts=3, on_undelivered=output.publish_undelivered, **FAST
        ).start()
        alerts = [_alert("NVDA"), _alert("AAPL")]
        delivery.submit(alerts)  # returns at once: the deliveries run in the background
        assert await delivery.drain(timeout_s=30)
        await delivery.close()
    finally:
        await producer.stop()

    assert (delivery.delivered, delivery.undelivered) == (2, 2)
    assert sorted(_verified(r).alert_id for r in healthy.requests) == ["crash-AAPL-0", "crash-NVDA-0"]
    assert len(down.requests) == 6  # 3 attempts for each alert
    dead = await _read_topic(broker.bootstrap_servers, settings.topic(topics.ALERTS_UNDELIVERED), 2)
    assert len(dead) == 2
    for record in dead:
        headers = {name: value.decode() for name, value in record.headers}
        alert = Alert.model_validate_json(record.value)
        assert headers["alert-id"] == alert.alert_id and record.key == alert.key.encode()
        assert (headers["webhook-url"], headers["error"], headers["status"], headers["attempts"]) == (
            down.url, "HTTP 503 Service Unavailable", "503", "3",
        )  # fmt: skip
    assert sorted(Alert.model_validate_json(r.value).alert_id for r in dead) == ["crash-AAPL-0", "crash-NVDA-0"]


async def test_closing_dead_letters_what_could_not_be_sent_in_time(subscribe: Callable[..., Subscriber]) -> None:
    hook = subscribe(then=503)
    dead: list[str] = []

    async def collect(batch):  # noqa: ANN001
        dead.extend(f"{item.alert.alert_id}: {item.delivery.error}" for item in batch)

    delivery = await WebhookDelivery(
        [hook.url], SECRET, max_attempts=50, on_undelivered=collect, backoff_initial_s=0.2, backoff_max_s=0.2
    ).start()
    delivery.submit([_alert()])
    await delivery.close(timeout_s=0.5)
    assert dead == ["crash-NVDA-0: the worker stopped before this alert was delivered"]


# --- the worker's alerting stage: table, topic, webhooks, restart ----------------------------------------------

RULES = """rules:
  - {name: crash, kind: sentiment_z, threshold: -3, min_buzz: 20, cooldown: 1h}
  - {name: flip, kind: sign_flip, window: 1h, min_buzz: 100, min_magnitude: 0.2}
  - {name: news, kind: news_event, keys: [NVDA], max_score: -0.8, cooldown: 1h}
"""
T0 = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)


def _index(window: int, *, z: float | None, net: float, closed: bool = False, window_s: int = 300) -> OpinionIndex:
    start = T0 + window * timedelta(seconds=window_s)
    return OpinionIndex(
        scope="ticker", key="NVDA", window_s=window_s, window_start=start,
        window_end=start + timedelta(seconds=window_s), buzz=150, mean_score=net, net_sentiment=net,
        bullish_share=0.1, neutral_share=0.2, bearish_share=0.7, dispersion=0.3, buzz_z=2.0, sentiment_z=z,
        baseline_windows=12, closed=closed, updated_at=datetime.now(UTC),
    )  # fmt: skip


@dataclass(frozen=True)
class _Contributor:
    event_id: str
    text: str
    score: float


@dataclass(frozen=True)
class _View:
    """What the index agent hands over with its updates."""

    contributors: dict


async def test_alerts_are_stored_once_published_delivered_and_survive_a_restart(
    subscribe: Callable[..., Subscriber], pipeline_settings: Settings, broker: EmbeddedBroker, clickhouse: Client
) -> None:
    hook = subscribe()
    rules_file = pipeline_settings.data_dir / "rules.yaml"
    rules_file.parent.mkdir(parents=True, exist_ok=True)
    rules_file.write_text(RULES)
    settings = pipeline_settings.model_copy(
        update={"alert_rules_path": rules_file, "alert_webhooks": [hook.url], "alert_webhook_secret": SecretStr(SECRET)}
    )
    await ensure_topics(settings, broker.bootstrap_servers)
    clickhouse.command("TRUNCATE TABLE alerts")
    writer = ClickHouseWriter(clickhouse, retry_max_s=10)
    producer = new_producer(broker.bootstrap_servers)
    await producer.start()
    crash = [_index(0, z=-6.0, net=-0.6)]
    news = {
        "event_id": ["n1"], "kind": ["news"], "tickers": [["NVDA"]], "text": ["Nvidia plunges"], "score": [-0.93],
        "confidence": [0.95], "event_time": [T0 + timedelta(minutes=2)],
    }  # fmt: skip
    try:
        service = await AlertService.open(settings, clickhouse, writer, producer)
        top = {("ticker", "NVDA", 300, T0): [_Contributor("e1", "$NVDA fraud", -0.9), _Contributor("e2", "ok", 0.1)]}
        fired = await service.on_updates(crash, _View(top)) + await service.on_scored(news)
        assert [(a.rule, a.state) for a in fired] == [("crash", "firing"), ("news", "firing")]
        # the same batches again (as after a crash before the offsets were committed): nothing new
        restarted = await AlertService.open(settings, clickhouse, writer, producer)
        assert await restarted.on_updates(crash, _View({})) == []
        assert await restarted.on_scored(news) == []
        assert await service.output.webhooks.drain(timeout_s=20)  # type: ignore[union-attr]
        # the restored engine knows it is firing: the next closed, calm window resolves it
        [resolved] = await restarted.on_updates([_index(1, z=0.1, net=0.2, closed=True)], _View({}))
        assert (resolved.rule, resolved.state) == ("crash", "resolved")
        await service.close()
        await restarted.close()
    finally:
        await producer.stop()

    rows = clickhouse.query(
        "SELECT rule, state, key, window_s, observed['sentiment_z'], threshold['min_buzz'], message, top_event_ids "
        "FROM alerts ORDER BY fired_at, rule"
    ).result_rows
    assert [row[:4] for row in rows] == [
        ("crash", "firing", "NVDA", 300), ("news", "firing", "NVDA", 0), ("crash", "resolved", "NVDA", 300),
    ]  # fmt: skip
    assert rows[0][4] == -6.0 and rows[0][5] == 20.0 and rows[0][6].startswith("NVDA: sentiment z-score -6.0")
    assert rows[0][7] == ["e1", "e2"] and rows[1][7] == ["n1"]
    published = await _read_topic(broker.bootstrap_servers, settings.topic(topics.ALERTS), 3)
    assert [Alert.model_validate_json(r.value).state for r in published].count("firing") == 2
    assert len(published) == 3
    assert sorted((_verified(r).rule, _verified(r).state) for r in hook.requests) == [
        ("crash", "firing"), ("crash", "resolved"), ("news", "firing"),
    ]  # fmt: skip


def test_restored_state_keeps_cooldowns_and_the_previous_window_for_flips(clickhouse: Client) -> None:
    rules = parse_rules(RULES)
    clickhouse.command("TRUNCATE TABLE alerts")
    clickhouse.command("TRUNCATE TABLE opinion_index")
    first = AlertEngine(rules)
    alerts = first.evaluate_windows([_index(0, z=-6.0, net=-0.6), _index(1, z=0.0, net=0.2, closed=True)])
    writer = ClickHouseWriter(clickhouse, retry_max_s=10)
    writer.write("alerts", alert_columns(alerts, datetime.now(UTC)), key="alert_id", dedup_token="restore-test")
    versions = [  # two versions of the 09:00 window (the newer one wins) and the window before it
        ["ticker", "NVDA", 3600, T0, 0.1, 150, True, datetime(2025, 3, 3, 10, 1, tzinfo=UTC)],
        ["ticker", "NVDA", 3600, T0, 0.3, 160, True, datetime(2025, 3, 3, 10, 2, tzinfo=UTC)],
        ["ticker", "NVDA", 3600, T0 - timedelta(hours=1), -0.5, 150, True, datetime(2025, 3, 3, 9, 1, tzinfo=UTC)],
    ]
    for row in versions:  # separate inserts: separate parts, not merged yet
        clickhouse.insert(
            "opinion_index",
            [row],
            column_names=["scope", "key", "window_s", "window_start", "net_sentiment", "buzz", "closed", "updated_at"],
        )
    state = restore_state(clickhouse, rules)
    crash = state.entities[("crash", "ticker", "NVDA")]
    assert (crash.firing, crash.last_fired, crash.changed_window) == (False, T0, T0 + timedelta(minutes=5))
    assert [(w.window_start, w.net_sentiment, w.buzz) for w in state.closed[("ticker", "NVDA", 3600)]] == [
        (T0 - timedelta(hours=1), -0.5, 150), (T0, 0.3, 160),
    ]  # fmt: skip
    engine = AlertEngine(rules, state=state)
    assert engine.evaluate_windows([_index(2, z=-6.0, net=-0.6)]) == []  # within the 1 h cooldown
    [flip] = engine.evaluate_windows([_index(1, z=None, net=-0.4, window_s=3600)])
    assert (flip.rule, flip.observed["previous_net_sentiment"]) == ("flip", 0.3)


async def test_a_bad_rules_file_stops_the_stage_before_it_starts(
    pipeline_settings: Settings, clickhouse: Client, tmp_path: Path
) -> None:
    bad = tmp_path / "rules.yaml"
    bad.write_text("rules:\n  - name: crash\n    kind: sentiment_z\n    threshold: low\n")
    settings = pipeline_settings.model_copy(update={"alert_rules_path": bad})
    with pytest.raises(RulesError, match=r"line 4, rule 'crash', field 'threshold'"):
        await AlertService.open(settings, clickhouse, writer=None, producer=None)  # type: ignore[arg-type]


# --- the command line --------------------------------------------------------------------------------------


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, pipeline_settings: Settings) -> Iterator[Settings]:
    monkeypatch.setenv("FINPULSE_ALERT_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("FINPULSE_BROKER", pipeline_settings.broker)
    monkeypatch.setenv("FINPULSE_TOPIC_PREFIX", pipeline_settings.topic_prefix)
    monkeypatch.setenv("FINPULSE_DATA_DIR", str(pipeline_settings.data_dir))
    get_settings.cache_clear()
    yield pipeline_settings
    get_settings.cache_clear()


def test_test_webhook_reports_status_and_latency(subscribe: Callable[..., Subscriber], cli_env: Settings) -> None:
    hook, broken = subscribe(), subscribe(then=500)
    ok = CliRunner().invoke(alerts_app, ["test-webhook", hook.url, "--json"])
    assert ok.exit_code == 0, ok.output
    summary = json.loads(ok.stdout)
    assert (summary["delivered"], summary["status"], summary["attempts"]) == (True, 200, 1)
    assert summary["latency_ms"] > 0 and "delivered" in ok.stderr
    assert _verified(hook.requests[0]).rule == "finpulse-test-webhook"

    failed = CliRunner().invoke(alerts_app, ["test-webhook", broken.url, "--attempts", "2"])
    assert failed.exit_code == 1 and failed.stdout == ""
    assert "not delivered" in failed.stderr and "HTTP 500" in failed.stderr and len(broken.requests) == 2


def test_tail_prints_the_alerts_of_the_topic(cli_env: Settings, broker: EmbeddedBroker) -> None:
    settings = cli_env
    alerts = [_alert("NVDA"), _alert("AAPL", minute=5)]

    async def publish() -> None:
        await ensure_topics(settings, broker.bootstrap_servers)
        producer = new_producer(broker.bootstrap_servers)
        await producer.start()
        try:
            await publish_batch(producer, settings.topic(topics.ALERTS), alert_records(alerts))
        finally:
            await producer.stop()

    asyncio.run(publish())
    as_json = CliRunner().invoke(alerts_app, ["tail", "--from-beginning", "--json", "--max", "2"])
    assert as_json.exit_code == 0, as_json.output
    assert sorted(Alert.model_validate_json(line).alert_id for line in as_json.stdout.splitlines()) == sorted(
        a.alert_id for a in alerts
    )
    human = CliRunner().invoke(alerts_app, ["tail", "--from-beginning", "--max", "2"])
    assert human.exit_code == 0 and human.stdout == ""
    assert "FIRING" in human.stderr and "crash" in human.stderr and "ticker:AAPL" in human.stderr


def test_tail_finds_the_running_workers_broker_when_none_is_configured(
    cli_env: Settings, broker: EmbeddedBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    from finpulse.streams.worker import _register, _unregister

    settings = cli_env
    alert = _alert("TSLA")

    async def publish() -> None:
        await ensure_topics(settings, broker.bootstrap_servers)
        producer = new_producer(broker.bootstrap_servers)
        await producer.start()
        try:
            await publish_batch(producer, settings.topic(topics.ALERTS), alert_records([alert]))
        finally:
            await producer.stop()

    asyncio.run(publish())
    nowhere = CliRunner().invoke(alerts_app, ["tail", "--max", "1"], env={"FINPULSE_BROKER": ""})
    assert nowhere.exit_code == 2 and "No broker" in nowhere.stderr
    unconfigured = settings.model_copy(update={"broker": ""})
    _register(unconfigured, broker.bootstrap_servers)  # as a worker with an embedded broker does
    try:
        found = CliRunner().invoke(
            alerts_app, ["tail", "--from-beginning", "--json", "--max", "1"], env={"FINPULSE_BROKER": ""}
        )
    finally:
        _unregister(unconfigured)
    assert found.exit_code == 0, found.output
    assert Alert.model_validate_json(found.stdout).alert_id == alert.alert_id
