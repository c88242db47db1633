"""Alerts: rules evaluated on each micro-batch of index updates and scored events, and where alerts go.

:class:`AlertEngine` is the pure part: given the batch's ``OpinionIndex`` updates (open windows as they
change, closed ones final), the top contributing events per entity and the batch's scored events, it
returns the ``Alert``s of the state changes. Per (rule, entity):

* a rule **fires** when its condition starts holding, on an open window (as soon as the figures say so)
  or a closed one; it fires again only once a ``cooldown`` of event time has passed since the last
  firing (measured between window starts), and never twice for the same window;
* it **resolves** when a closed window of that entity no longer meets the condition (an open window
  still filling is no evidence of recovery); ``news_event`` rules fire per event and never resolve;
* updates older than the window of the entity's last state change are ignored, so a late close of an
  earlier window cannot undo a newer decision.

Cooldown and state run on event time, not the wall clock, so a replay of the same events decides the
same way, and the demo, which sends hours of event time in minutes, sees cooldowns of hours.

``alert_id`` is a hash of rule, entity, window and state: a redelivered batch produces the same ids and
the ``alerts`` table (written by key) gets no second row.

Restarts: the engine's state is reloaded from ClickHouse at start-up (:func:`restore_state`) rather than
kept in a Faust table. The ``alerts`` table is written before the batch's offsets are committed, so it
always holds every state change the engine made: the latest row per (rule, entity) says whether it is
firing and when it last fired, which is all a cooldown needs. It is one small aggregate query at start,
needs no changelog topic or co-partitioning with the index agent, and is the same on chDB and on a
server. The previous closed windows that ``sign_flip`` compares against come from ``opinion_index``.

:class:`AlertOutput` stores a batch's alerts in ``alerts`` (``ClickHouseWriter``, key ``alert_id``),
publishes them on ``alerts`` (one ``publish_batch``) and hands them to the webhooks, which deliver in
the background; :class:`AlertService` is the worker's entry point, holding both.

Example (per micro-batch, in the worker):
    >>> service = await AlertService.open(settings, client, writer, producer)  # doctest: +SKIP
    >>> await service.on_scored(scored_rows)  # a stored batch of scored events  # doctest: +SKIP
    >>> await service.on_updates(updates, view)  # a batch of index updates  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal, Protocol

import numpy as np
from aiokafka import AIOKafkaProducer
from clickhouse_connect.driver import Client

from finpulse.rules import (
    BuzzSpikeRule,
    NewsEventRule,
    Rule,
    SentimentZRule,
    SignFlipRule,
    WindowRule,
    load_rules_for,
)
from finpulse.schemas import Alert, OpinionIndex
from finpulse.settings import Settings
from finpulse.sinks.webhooks import Undelivered, WebhookDelivery
from finpulse.sinks.writer import ClickHouseWriter
from finpulse.streams import topics
from finpulse.streams.produce import OutboundRecord, publish_batch

log = logging.getLogger("finpulse.alerts")

ALERTS_TABLE = "alerts"
TOP_EVENTS = 5
MAX_EVENT_TEXT_CHARS = 500


class ContributingEvent(Protocol):
    """What an alert quotes of an event (``index_agent.ContributingEvent`` and ``ScoredEvent`` have it)."""

    @property
    def event_id(self) -> str: ...
    @property
    def text(self) -> str: ...
    @property
    def score(self) -> float: ...


WindowRef = tuple[str, str, int, datetime]
"""(scope, key, window size, window start): the window an update is about."""

Contributors = Mapping[WindowRef, Sequence[ContributingEvent]]
"""The top contributing events of each updated window (``ScoredBatchView.contributors``)."""

ScoredColumns = Mapping[str, Sequence[object]]
"""A stored batch of scored events in ``scored_event_columns`` layout: ``event_id``, ``kind``, ``tickers``,
``text``, ``score``, ``confidence``, ``event_time``… one list per column."""


class BatchView(Protocol):
    """What the index agent hands over with a batch of updates (``index_agent.ScoredBatchView``)."""

    @property
    def contributors(self) -> Contributors: ...


@dataclass(frozen=True, slots=True)
class _NewsEvent:
    event_id: str
    text: str
    score: float
    confidence: float
    event_time: datetime


@dataclass
class EntityState:
    """Where one rule stands for one entity."""

    firing: bool = False
    changed_window: datetime | None = None  # window start of the last firing or resolution
    last_fired: datetime | None = None  # window start (event time) of the last firing


_QUIET = EntityState()  # what an entity no rule ever fired for looks like; never mutated


@dataclass(frozen=True)
class ClosedWindow:
    window_start: datetime
    net_sentiment: float
    buzz: int


@dataclass
class EngineState:
    """Everything the engine remembers between batches; :func:`restore_state` rebuilds it after a restart."""

    entities: dict[tuple[str, str, str], EntityState] = field(default_factory=dict)  # (rule, scope, key)
    closed: dict[tuple[str, str, int], list[ClosedWindow]] = field(default_factory=dict)  # last two, oldest first

    def entity(self, rule: str, scope: str, key: str) -> EntityState:
        return self.entities.setdefault((rule, scope, key), EntityState())

    def remember_closed(self, update: OpinionIndex) -> None:
        windows = self.closed.setdefault((update.scope, update.key, update.window_s), [])
        if any(window.window_start == update.window_start for window in windows):
            return
        windows.append(ClosedWindow(update.window_start, update.net_sentiment, update.buzz))
        windows.sort(key=lambda window: window.window_start)
        del windows[:-2]

    def previous_closed(self, update: OpinionIndex) -> ClosedWindow | None:
        windows = self.closed.get((update.scope, update.key, update.window_s), [])
        earlier = [window for window in windows if window.window_start < update.window_start]
        return earlier[-1] if earlier else None


Verdict = Literal["holds", "clear", "unknown"]


@dataclass(frozen=True)
class _Check:
    verdict: Verdict
    observed: dict[str, float | int | None]


def alert_id(rule: str, scope: str, key: str, window_s: int, window_start: datetime, state: str) -> str:
    """Stable id of one state change: the same rule, entity, window and state always give the same id."""
    name = f"{rule}|{scope}|{key}|{window_s}|{window_start.astimezone(UTC).isoformat()}|{state}"
    return hashlib.sha256(name.encode()).hexdigest()[:32]


def _now() -> datetime:
    return datetime.now(UTC)


class AlertEngine:
    """Turns index updates and scored events into alerts; holds the per-entity state. Not thread-safe.

    Args:
        rules: from :func:`finpulse.rules.load_rules_for`.
        state: from :func:`restore_state` after a restart; empty otherwise.
        top_events: contributing events quoted per alert at most.
        clock: gives ``fired_at`` (wall clock; the decisions themselves run on event time).
    """

    def __init__(
        self,
        rules: Sequence[Rule],
        *,
        state: EngineState | None = None,
        top_events: int = TOP_EVENTS,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self.rules = list(rules)
        self.state = state or EngineState()
        self._top_events = top_events
        self._clock = clock
        self._window_rules: dict[tuple[str, int], list[WindowRule]] = {}
        for rule in self.rules:
            if not isinstance(rule, NewsEventRule):
                self._window_rules.setdefault((rule.scope, rule.window), []).append(rule)
        self._flip_windows = {(rule.scope, rule.window) for rule in self.rules if isinstance(rule, SignFlipRule)}
        self._news_rules = [rule for rule in self.rules if isinstance(rule, NewsEventRule)]

    def evaluate_windows(
        self, updates: Sequence[OpinionIndex], contributors: Contributors | None = None
    ) -> list[Alert]:
        """The alerts of one batch of index updates (window rules).

        ``contributors`` maps each window to its top contributing events; a firing quotes the most telling
        ones for its rule (the most negative for a drop, the most positive for a rise).
        """
        fired_at = self._clock()
        alerts: list[Alert] = []
        watched = [u for u in updates if (u.scope, u.window_s) in self._window_rules]
        for update in sorted(watched, key=lambda u: (u.window_start, u.closed, u.updated_at)):
            for rule in self._window_rules[(update.scope, update.window_s)]:
                if rule.watches(update.key):
                    alert = self._step(rule, update, contributors or {}, fired_at)
                    if alert is not None:
                        alerts.append(alert)
            if update.closed and (update.scope, update.window_s) in self._flip_windows:
                self.state.remember_closed(update)
        return alerts

    def evaluate_events(self, rows: ScoredColumns) -> list[Alert]:
        """The alerts of one stored batch of scored events (event rules such as ``news_event``)."""
        if not self._news_rules or not rows.get("event_id"):
            return []
        fired_at = self._clock()
        kinds = np.asarray(rows["kind"], dtype=object)
        scores = np.asarray(rows["score"], dtype=np.float64)
        confidences = np.asarray(rows["confidence"], dtype=np.float64)
        alerts: list[Alert] = []
        for rule in self._news_rules:
            picked = np.flatnonzero(
                (kinds == "news") & (scores <= rule.max_score) & (confidences >= rule.min_confidence)
            )
            matching: dict[str, list[_NewsEvent]] = defaultdict(list)
            for i in picked:
                text = str(rows["text"][i])
                watched = [ticker for ticker in rows["tickers"][i] if rule.watches(ticker)]
                if watched and rule.mentions_keyword(text):
                    event = _NewsEvent(
                        str(rows["event_id"][i]),
                        text,
                        float(scores[i]),
                        float(confidences[i]),
                        _aware(rows["event_time"][i]),
                    )
                    for ticker in watched:
                        matching[ticker].append(event)
            alerts.extend(self._news_alerts(rule, matching, fired_at))
        return alerts

    def _step(
        self, rule: WindowRule, update: OpinionIndex, contributors: Contributors, fired_at: datetime
    ) -> Alert | None:
        entity = self.state.entities.get((rule.name, update.scope, update.key), _QUIET)
        if entity.changed_window is not None and update.window_start < entity.changed_window:
            return None
        check = self._check(rule, update)
        if check.verdict == "holds" and not entity.firing and self._cooled_down(rule, entity, update.window_start):
            entity = self.state.entity(rule.name, update.scope, update.key)
            entity.firing, entity.changed_window, entity.last_fired = True, update.window_start, update.window_start
            window = (update.scope, update.key, update.window_s, update.window_start)
            quoted = _most_telling(rule, update, contributors.get(window, ()))[: self._top_events]
            return self._alert(rule, update, "firing", check, quoted, fired_at)
        if check.verdict == "clear" and entity.firing and update.closed:
            entity.firing, entity.changed_window = False, update.window_start
            return self._alert(rule, update, "resolved", check, [], fired_at)
        return None

    @staticmethod
    def _cooled_down(rule: Rule, entity: EntityState, moment: datetime) -> bool:
        if entity.last_fired is None:
            return True
        return moment > entity.last_fired and moment >= entity.last_fired + timedelta(seconds=rule.cooldown)

    def _check(self, rule: WindowRule, update: OpinionIndex) -> _Check:
        if isinstance(rule, SentimentZRule):
            return _check_sentiment(rule, update)
        if isinstance(rule, BuzzSpikeRule):
            return _check_buzz(rule, update)
        return _check_flip(rule, update, self.state.previous_closed(update))

    def _alert(
        self,
        rule: WindowRule,
        update: OpinionIndex,
        state: Literal["firing", "resolved"],
        check: _Check,
        quoted: Sequence[ContributingEvent],
        fired_at: datetime,
    ) -> Alert:
        return Alert(
            alert_id=alert_id(rule.name, update.scope, update.key, update.window_s, update.window_start, state),
            rule=rule.name,
            state=state,
            severity="info" if state == "resolved" else rule.severity,
            scope=update.scope,
            key=update.key,
            window_s=update.window_s,
            window_start=update.window_start,
            observed=check.observed,
            threshold=rule.thresholds(),
            message=_message(rule, update, state, check.observed),
            top_event_ids=[event.event_id for event in quoted],
            top_event_texts=[event.text[:MAX_EVENT_TEXT_CHARS] for event in quoted],
            fired_at=fired_at,
        )

    def _news_alerts(
        self, rule: NewsEventRule, matching: Mapping[str, list[_NewsEvent]], fired_at: datetime
    ) -> list[Alert]:
        alerts = []
        for ticker, candidates in sorted(matching.items()):
            entity = self.state.entity(rule.name, "ticker", ticker)
            for event in sorted(candidates, key=lambda e: (e.event_time, e.event_id)):
                if not self._cooled_down(rule, entity, event.event_time):
                    continue
                entity.firing, entity.changed_window, entity.last_fired = True, event.event_time, event.event_time
                others = sorted((e for e in candidates if e is not event), key=lambda e: e.score)
                alerts.append(self._news_alert(rule, ticker, event, [event, *others][: self._top_events], fired_at))
        return alerts

    @staticmethod
    def _news_alert(
        rule: NewsEventRule, ticker: str, event: _NewsEvent, quoted: Sequence[_NewsEvent], fired_at: datetime
    ) -> Alert:
        headline = event.text.split("\n", 1)[0][:200]
        return Alert(
            alert_id=alert_id(rule.name, "ticker", ticker, 0, event.event_time, "firing"),
            rule=rule.name,
            state="firing",
            severity=rule.severity,
            scope="ticker",
            key=ticker,
            window_s=0,
            window_start=event.event_time,
            observed={"score": round(event.score, 4), "confidence": round(event.confidence, 4)},
            threshold=rule.thresholds(),
            message=f"{ticker}: very negative news (score {event.score:+.2f} <= {rule.max_score:+.2f}): {headline}",
            top_event_ids=[e.event_id for e in quoted],
            top_event_texts=[e.text[:MAX_EVENT_TEXT_CHARS] for e in quoted],
            fired_at=fired_at,
        )


def _enough_events(rule: WindowRule, update: OpinionIndex) -> Verdict | None:
    """A window short of ``min_buzz``: still filling (unknown) or, once closed, the activity is gone (clear)."""
    if update.buzz < rule.min_buzz:
        return "clear" if update.closed else "unknown"
    return None


def _check_sentiment(rule: SentimentZRule, update: OpinionIndex) -> _Check:
    observed: dict[str, float | int | None] = {
        "sentiment_z": _rounded(update.sentiment_z),
        "buzz": update.buzz,
        "net_sentiment": round(update.net_sentiment, 4),
        "mean_score": round(update.mean_score, 4),
        "baseline_windows": update.baseline_windows,
    }
    short = _enough_events(rule, update)
    if short is not None:
        return _Check(short, observed)
    z = update.sentiment_z
    if z is None or update.baseline_windows < rule.min_baseline_windows:
        return _Check("unknown", observed)
    beyond = z <= rule.threshold if rule.direction == "below" else z >= rule.threshold
    level_ok = (rule.max_net_sentiment is None or update.net_sentiment <= rule.max_net_sentiment) and (
        rule.min_net_sentiment is None or update.net_sentiment >= rule.min_net_sentiment
    )
    return _Check("holds" if beyond and level_ok else "clear", observed)


def _check_buzz(rule: BuzzSpikeRule, update: OpinionIndex) -> _Check:
    observed: dict[str, float | int | None] = {
        "buzz_z": _rounded(update.buzz_z),
        "buzz": update.buzz,
        "net_sentiment": round(update.net_sentiment, 4),
        "baseline_windows": update.baseline_windows,
    }
    short = _enough_events(rule, update)
    if short is not None:
        return _Check(short, observed)
    if update.buzz_z is None or update.baseline_windows < rule.min_baseline_windows:
        return _Check("unknown", observed)
    return _Check("holds" if update.buzz_z >= rule.threshold else "clear", observed)


def _check_flip(rule: SignFlipRule, update: OpinionIndex, previous: ClosedWindow | None) -> _Check:
    observed: dict[str, float | int | None] = {
        "net_sentiment": round(update.net_sentiment, 4),
        "previous_net_sentiment": None if previous is None else round(previous.net_sentiment, 4),
        "buzz": update.buzz,
        "previous_buzz": None if previous is None else previous.buzz,
    }
    short = _enough_events(rule, update)
    if short is not None:
        return _Check(short, observed)
    if previous is None or previous.buzz < rule.min_buzz:
        return _Check("clear" if update.closed else "unknown", observed)
    now, before, floor = update.net_sentiment, previous.net_sentiment, rule.min_magnitude
    to_negative = before >= floor and now <= -floor
    to_positive = before <= -floor and now >= floor
    flipped = {"to_negative": to_negative, "to_positive": to_positive, "any": to_negative or to_positive}[
        rule.direction
    ]
    return _Check("holds" if flipped else "clear", observed)


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _most_telling(
    rule: WindowRule, update: OpinionIndex, events: Sequence[ContributingEvent]
) -> list[ContributingEvent]:
    """The contributing events that best show what the rule saw: the most negative ones for a drop, etc."""
    if isinstance(rule, SentimentZRule):
        negative_first = rule.direction == "below"
    elif isinstance(rule, SignFlipRule):
        negative_first = update.net_sentiment < 0
    else:
        return list(events)
    return sorted(events, key=lambda event: event.score if negative_first else -event.score)


def _window_label(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _message(rule: WindowRule, update: OpinionIndex, state: str, observed: Mapping[str, float | int | None]) -> str:
    window = f"{_window_label(update.window_s)} window from {update.window_start.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
    entity = update.key if update.scope == "ticker" else f"{update.scope} {update.key}"
    figures = f"{update.buzz} events, net sentiment {update.net_sentiment:+.2f}"
    if isinstance(rule, SentimentZRule):
        comparison = "<=" if rule.direction == "below" else ">="
        z = observed["sentiment_z"]
        summary = f"sentiment z-score {z:+.1f} {comparison} {rule.threshold:+.1f}" if z is not None else "sentiment"
    elif isinstance(rule, BuzzSpikeRule):
        z = observed["buzz_z"]
        summary = f"buzz z-score {z:+.1f} >= {rule.threshold:+.1f}" if z is not None else "buzz"
    else:
        before = observed["previous_net_sentiment"]
        summary = (
            f"net sentiment flipped from {before:+.2f} to {update.net_sentiment:+.2f}"
            if before is not None
            else "net sentiment"
        )
    if state == "resolved":
        return f"{entity}: {rule.name} resolved in the {window} ({figures})"
    return f"{entity}: {summary} in the {window} ({figures})"


# --- restoring the engine's state after a restart -------------------------------------------------------

_LATEST_STATES = """
SELECT rule, scope, key,
       argMax(state, (window_start, fired_at)) AS last_state,
       max(window_start) AS changed_window,
       maxIf(window_start, state = 'firing') AS last_fired,
       countIf(state = 'firing') AS firings
FROM alerts
WHERE rule IN {rules:Array(String)}
GROUP BY rule, scope, key
"""

# opinion_index keeps a row per version of a window until merges drop the older ones: newest version wins.
_LAST_CLOSED_WINDOWS = """
SELECT scope, key, window_s, window_start,
       argMax(net_sentiment, updated_at) AS net_sentiment, argMax(buzz, updated_at) AS buzz
FROM opinion_index
WHERE closed AND (scope, window_s) IN {pairs:Array(Tuple(String, UInt32))}
GROUP BY scope, key, window_s, window_start
ORDER BY window_start DESC
LIMIT 2 BY scope, key, window_s
"""
_INDEX_COLUMNS = {"scope", "key", "window_s", "window_start", "net_sentiment", "buzz", "closed", "updated_at"}


def restore_state(client: Client, rules: Sequence[Rule]) -> EngineState:
    """The engine's state as the ``alerts`` and ``opinion_index`` tables leave it (blocking)."""
    state = EngineState()
    news_rules = {rule.name for rule in rules if isinstance(rule, NewsEventRule)}
    result = client.query(_LATEST_STATES, parameters={"rules": [rule.name for rule in rules]})
    for rule, scope, key, last_state, changed_window, last_fired, firings in result.result_rows:
        state.entities[(rule, scope, key)] = EntityState(
            # an event rule never resolves: what matters of it is when it last fired
            firing=last_state == "firing" and rule not in news_rules,
            changed_window=_aware(changed_window),
            last_fired=_aware(last_fired) if firings else None,
        )
    pairs = sorted({(rule.scope, rule.window) for rule in rules if isinstance(rule, SignFlipRule)})
    if pairs and _has_index_table(client):
        rows = client.query(_LAST_CLOSED_WINDOWS, parameters={"pairs": pairs}).result_rows
        for scope, key, window_s, window_start, net_sentiment, buzz in reversed(rows):
            windows = state.closed.setdefault((scope, key, int(window_s)), [])
            windows.append(ClosedWindow(_aware(window_start), float(net_sentiment), int(buzz)))
    log.info(
        "alert state restored: %d entities firing, %d with a cooldown, %d previous windows",
        sum(entity.firing for entity in state.entities.values()), len(state.entities), len(state.closed),
    )  # fmt: skip
    return state


def _has_index_table(client: Client) -> bool:
    columns = {
        row[0]
        for row in client.query(
            "SELECT name FROM system.columns WHERE database = currentDatabase() AND table = 'opinion_index'"
        ).result_rows
    }
    if not columns:
        return False
    if not _INDEX_COLUMNS <= columns:
        log.warning(
            "opinion_index lacks %s: sign-flip rules start without a previous window",
            ", ".join(sorted(_INDEX_COLUMNS - columns)),
        )
        return False
    return True


def _aware(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


# --- where alerts go ----------------------------------------------------------------------------------------


def alert_columns(alerts: Sequence[Alert], stored_at: datetime) -> dict[str, list[object]]:
    """Rows of the ``alerts`` table; ``observed`` keeps only the values that were measured."""
    return {
        "alert_id": [a.alert_id for a in alerts],
        "rule": [a.rule for a in alerts],
        "state": [a.state for a in alerts],
        "severity": [a.severity for a in alerts],
        "scope": [a.scope for a in alerts],
        "key": [a.key for a in alerts],
        "window_s": [a.window_s for a in alerts],
        "window_start": [a.window_start for a in alerts],
        "observed": [{name: float(v) for name, v in a.observed.items() if v is not None} for a in alerts],
        "threshold": [{name: float(v) for name, v in a.threshold.items()} for a in alerts],
        "message": [a.message for a in alerts],
        "top_event_ids": [a.top_event_ids for a in alerts],
        "top_event_texts": [a.top_event_texts for a in alerts],
        "fired_at": [a.fired_at for a in alerts],
        "stored_at": [stored_at] * len(alerts),
    }


def alert_records(alerts: Iterable[Alert]) -> list[OutboundRecord]:
    """Messages of the ``alerts`` topic: the alert's JSON, keyed by entity so one entity's alerts stay in order."""
    return [
        OutboundRecord(
            value=alert.model_dump_json().encode(),
            key=alert.key.encode(),
            headers=[
                ("alert-id", alert.alert_id.encode()),
                ("rule", alert.rule.encode()),
                ("state", alert.state.encode()),
            ],
        )
        for alert in alerts
    ]


def undelivered_records(failures: Iterable[Undelivered]) -> list[OutboundRecord]:
    """Messages of ``alerts.undelivered``: the alert's JSON, with the webhook and its last error in headers."""
    return [
        OutboundRecord(
            value=item.alert.model_dump_json().encode(),
            key=item.alert.key.encode(),
            headers=[
                ("alert-id", item.alert.alert_id.encode()),
                ("webhook-url", item.delivery.url.encode()),
                ("error", item.delivery.error.encode()),
                ("status", str(item.delivery.status or "").encode()),
                ("attempts", str(item.delivery.attempts).encode()),
                ("failed-at", _now().isoformat().encode()),
            ],
        )
        for item in failures
    ]


class AlertOutput:
    """Stores a batch's alerts, publishes them, and queues them for the webhooks (which never block it)."""

    def __init__(
        self,
        settings: Settings,
        writer: ClickHouseWriter,
        producer: AIOKafkaProducer,
        webhooks: WebhookDelivery | None = None,
    ) -> None:
        self._settings = settings
        self._writer = writer
        self._producer = producer
        self.webhooks = webhooks

    async def emit(self, alerts: Sequence[Alert]) -> None:
        """Into ``alerts`` (table), then onto ``alerts`` (topic), then to the webhooks in the background.

        Raises what the writer or the producer raise: the caller must then not commit the batch.
        """
        if not alerts:
            return
        columns = alert_columns(alerts, stored_at=_now())
        # The writer adds a hash of the ids to the token, so one name serves every batch.
        await asyncio.to_thread(self._writer.write, ALERTS_TABLE, columns, key="alert_id", dedup_token=ALERTS_TABLE)
        await publish_batch(self._producer, self._settings.topic(topics.ALERTS), alert_records(alerts))
        for alert in alerts:
            log.info("alert %s: %s", alert.state, alert.message)
        if self.webhooks is not None:
            self.webhooks.submit(alerts)

    async def publish_undelivered(self, failures: Sequence[Undelivered]) -> None:
        await publish_batch(
            self._producer, self._settings.topic(topics.ALERTS_UNDELIVERED), undelivered_records(failures)
        )


class AlertService:
    """The worker's alerting stage: its rules, the engine with its state, and where alerts go."""

    def __init__(self, engine: AlertEngine, output: AlertOutput) -> None:
        self.engine = engine
        self.output = output

    @classmethod
    async def open(
        cls, settings: Settings, client: Client, writer: ClickHouseWriter, producer: AIOKafkaProducer
    ) -> AlertService:
        """Load the rules (``RulesError`` when the file is bad), restore the state, start the webhooks.

        ``client`` must reach tables that exist (``migrate`` first); ``producer`` must be started.
        """
        rules = await asyncio.to_thread(load_rules_for, settings)
        state = await asyncio.to_thread(restore_state, client, rules)
        output = AlertOutput(settings, writer, producer)
        if settings.alert_webhooks:
            output.webhooks = await WebhookDelivery(
                settings.alert_webhooks,
                settings.alert_webhook_secret.get_secret_value(),
                max_attempts=settings.alert_webhook_max_attempts,
                on_undelivered=output.publish_undelivered,
            ).start()
        log.info("alerting with %d rules (%s)", len(rules), ", ".join(rule.name for rule in rules))
        return cls(AlertEngine(rules, state=state), output)

    async def on_updates(self, updates: Sequence[OpinionIndex], view: BatchView) -> list[Alert]:
        """A batch of index updates (the index agent's ``on_updates`` hook): window rules; emits and returns alerts."""
        alerts = self.engine.evaluate_windows(updates, view.contributors)
        await self.output.emit(alerts)
        return alerts

    async def on_scored(self, rows: ScoredColumns) -> list[Alert]:
        """A stored batch of scored events (after ``scored_events`` was written): event rules."""
        alerts = self.engine.evaluate_events(rows)
        await self.output.emit(alerts)
        return alerts

    async def close(self, timeout_s: float = 10.0) -> None:
        """Give queued webhook deliveries up to ``timeout_s``; call before the producer stops."""
        if self.output.webhooks is not None:
            await self.output.webhooks.close(timeout_s)
