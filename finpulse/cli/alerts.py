"""``finpulse alerts tail`` and ``finpulse alerts test-webhook URL``."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.text import Text

from finpulse.cli.common import bootstrap_servers as resolve_bootstrap_servers
from finpulse.cli.console import err, out
from finpulse.schemas import Alert
from finpulse.settings import get_settings

alerts_app = typer.Typer(help="Alerts: watch them live, check a webhook.", no_args_is_help=True)

_SEVERITY_STYLE = {"critical": "bold red", "warning": "yellow", "info": "cyan"}


def alert_line(alert: Alert) -> Text:
    """One alert as one rich line: time, state, severity, rule, entity, window, message."""
    state_style = "bold red" if alert.state == "firing" else "green"
    window = f"{alert.window_s}s" if alert.window_s else "event"
    line = Text()
    line.append(f"{alert.fired_at.astimezone(UTC):%H:%M:%S} ", style="dim")
    line.append(f"{alert.state.upper():8} ", style=state_style)
    line.append(f"{alert.severity:8} ", style=_SEVERITY_STYLE[alert.severity])
    line.append(f"{alert.rule} ", style="bold")
    line.append(f"{alert.scope}:{alert.key} ", style="magenta")
    line.append(f"[{window} @ {alert.window_start.astimezone(UTC):%Y-%m-%d %H:%M}] ", style="dim")
    line.append(alert.message)
    return line


async def _tail(
    bootstrap_servers: str, topic: str, *, from_beginning: bool, as_json: bool, max_alerts: int | None
) -> int:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap_servers,
        group_id=None,
        auto_offset_reset="earliest" if from_beginning else "latest",
        enable_auto_commit=False,
    )
    await consumer.start()
    shown = 0
    human = out if out.is_terminal else err
    try:
        async for record in consumer:
            try:
                alert = Alert.model_validate_json(record.value)
            except ValueError as error:
                err.print(f"[yellow]skipping a message that is not an alert[/] (offset {record.offset}): {error}")
                continue
            if as_json:
                out.file.write(alert.model_dump_json() + "\n")
                out.file.flush()
            else:
                human.print(alert_line(alert))
            shown += 1
            if max_alerts is not None and shown >= max_alerts:
                break
    finally:
        await consumer.stop()
    return shown


def tail(
    from_beginning: Annotated[
        bool, typer.Option("--from-beginning", help="Show the alerts already on the topic first.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON alert per line on stdout.")] = False,
    max_alerts: Annotated[
        int | None, typer.Option("--max", min=1, help="Stop after this many alerts (default: until Ctrl-C).")
    ] = None,
) -> None:
    """Follow the alerts topic live (the configured broker, or the running worker's)."""
    from finpulse.streams.topics import ALERTS

    settings = get_settings()
    bootstrap = resolve_bootstrap_servers(settings)
    topic = settings.topic(ALERTS)
    err.print(
        f"following {topic} on {bootstrap}" + (" from the beginning" if from_beginning else "") + " (Ctrl-C stops)"
    )
    try:
        asyncio.run(_tail(bootstrap, topic, from_beginning=from_beginning, as_json=as_json, max_alerts=max_alerts))
    except KeyboardInterrupt:
        pass


def sample_alert(now: datetime | None = None) -> Alert:
    """A made-up alert, shaped as the worker sends them, for checking a subscriber."""
    from finpulse.streams.alerts import alert_id

    moment = (now or datetime.now(UTC)).astimezone(UTC)
    window_start = moment.replace(second=0, microsecond=0)
    return Alert(
        alert_id=alert_id("finpulse-test-webhook", "ticker", "TEST", 300, window_start, "firing"),
        rule="finpulse-test-webhook",
        state="firing",
        severity="info",
        scope="ticker",
        key="TEST",
        window_s=300,
        window_start=window_start,
        observed={"sentiment_z": -4.2, "buzz": 42, "net_sentiment": -0.61},
        threshold={"sentiment_z": -3.0, "min_buzz": 20},
        message="TEST: a sample alert from `finpulse alerts test-webhook`; no rule fired.",
        top_event_ids=["test-event-1"],
        top_event_texts=["$TEST sample text of a contributing event"],
        fired_at=moment,
    )


def test_webhook(
    url: Annotated[str, typer.Argument(help="The webhook to POST a signed sample alert to.")],
    attempts: Annotated[
        int | None,
        typer.Option(min=1, help="Delivery attempts (default FINPULSE_ALERT_WEBHOOK_MAX_ATTEMPTS)."),
    ] = None,
    timeout: Annotated[float, typer.Option(min=0.1, help="Seconds per attempt.")] = 10.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the outcome as one JSON object on stdout.")] = False,
) -> None:
    """Send a signed sample alert (as the worker would) and report the status and latency."""
    import httpx

    from finpulse.sinks.webhooks import Delivery, deliver

    settings = get_settings()
    secret = settings.alert_webhook_secret.get_secret_value()
    if not secret:
        err.print("[yellow]FINPULSE_ALERT_WEBHOOK_SECRET is empty: the signature proves nothing[/]")
    alert = sample_alert()

    async def send() -> Delivery:
        async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as client:
            return await deliver(
                client, url, alert, secret, max_attempts=attempts or settings.alert_webhook_max_attempts
            )

    delivery = asyncio.run(send())
    summary = {
        "url": url,
        "alert_id": alert.alert_id,
        "delivered": delivery.delivered,
        "status": delivery.status,
        "attempts": delivery.attempts,
        "latency_ms": round(delivery.seconds * 1000, 1),
        "error": delivery.error or None,
    }
    _print_summary(summary)
    if as_json:
        out.file.write(json.dumps(summary) + "\n")
    if not delivery.delivered:
        raise typer.Exit(1)


def _print_summary(summary: dict) -> None:
    if summary["delivered"]:
        err.print(
            f"[green]delivered[/] to {summary['url']}: HTTP {summary['status']} in {summary['latency_ms']} ms "
            f"({summary['attempts']} attempt{'s' if summary['attempts'] != 1 else ''})"
        )
    else:
        status = f"HTTP {summary['status']}" if summary["status"] else "no reply"
        err.print(
            f"[red]not delivered[/] to {summary['url']}: {status} after {summary['attempts']} attempt(s), "
            f"{summary['latency_ms']} ms: {summary['error']}"
        )


alerts_app.command("tail")(tail)
alerts_app.command("test-webhook")(test_webhook)
