"""Webhook delivery of alerts: signed POSTs, retried with backoff, dead-lettered when no attempt succeeds.

Every delivery is an HTTP POST of the alert's JSON with two headers:

* ``X-Finpulse-Alert-Id`` — the alert's stable id; a subscriber that sees an id twice (a retry whose reply
  was lost, a worker restart) can drop the repeat;
* ``X-Finpulse-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, f"{t}.{body}")>`` — computed afresh
  for each attempt, keyed with ``FINPULSE_ALERT_WEBHOOK_SECRET``; subscribers check it with
  :func:`verify_signature`, which also refuses a timestamp too far from their clock (replays).

A 2xx reply is a delivery. Connection errors, timeouts, 5xx and 429 are retried with exponential backoff
(tenacity; a 429's ``Retry-After`` is honoured up to the backoff cap) until
``FINPULSE_ALERT_WEBHOOK_MAX_ATTEMPTS`` attempts were made; any other reply (4xx, an unfollowed redirect)
is final at once, since sending the same body again cannot change the subscriber's mind.

:class:`WebhookDelivery` runs deliveries in the background for the worker: ``submit`` only queues, a
fixed number of tasks deliver (bounded concurrency), and every (alert, webhook) pair that failed is
handed, in batches, to a callback (the worker publishes them on ``alerts.undelivered``).

Example (a subscriber):
    >>> body = b'{"alert_id": "a1"}'
    >>> header = signature_header("s3cret", body, timestamp=1_700_000_000)
    >>> verify_signature("s3cret", header, body, tolerance_s=300, now=1_700_000_100)
    1700000000
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

import httpx
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
    wait_exponential_jitter,
)

from finpulse.schemas import Alert

log = logging.getLogger("finpulse.sinks.webhooks")

SIGNATURE_HEADER = "X-Finpulse-Signature"
ALERT_ID_HEADER = "X-Finpulse-Alert-Id"
USER_AGENT = "finpulse-alerts/1"


class InvalidSignatureError(ValueError):
    """A webhook request whose signature header is missing, malformed, stale or wrong."""


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """Hex HMAC-SHA256 of ``f"{timestamp}.{body}"`` keyed with ``secret``."""
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def signature_header(secret: str, body: bytes, *, timestamp: int | None = None) -> str:
    """The ``X-Finpulse-Signature`` value for ``body`` signed now (or at ``timestamp``)."""
    moment = int(time.time()) if timestamp is None else timestamp
    return f"t={moment},v1={sign(secret, body, moment)}"


def verify_signature(
    secret: str, header: str | None, body: bytes, tolerance_s: float = 300.0, *, now: float | None = None
) -> int:
    """Check an ``X-Finpulse-Signature`` header against the raw request body; return its timestamp.

    Several ``v1=`` entries are accepted (any one matching), so a sender can sign with an old and a new
    secret while subscribers rotate.

    Raises:
        InvalidSignatureError: the header is missing or malformed, its timestamp is more than
            ``tolerance_s`` away from ``now``, or no signature matches.
    """
    if not header:
        raise InvalidSignatureError(f"no {SIGNATURE_HEADER} header")
    timestamp: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t":
            try:
                timestamp = int(value)
            except ValueError:
                raise InvalidSignatureError(f"timestamp {value!r} is not an integer") from None
        elif name == "v1" and value:
            signatures.append(value)
    if timestamp is None or not signatures:
        raise InvalidSignatureError(f"malformed {SIGNATURE_HEADER} header {header!r}: expected t=…,v1=…")
    moment = time.time() if now is None else now
    if abs(moment - timestamp) > tolerance_s:
        raise InvalidSignatureError(
            f"signature timestamp {timestamp} is {moment - timestamp:+.0f}s from now (tolerance {tolerance_s:.0f}s)"
        )
    expected = sign(secret, body, timestamp)
    if not any(hmac.compare_digest(expected, candidate) for candidate in signatures):
        raise InvalidSignatureError("signature does not match the body")
    return timestamp


@dataclass(frozen=True)
class Delivery:
    """How delivering one alert to one webhook ended."""

    url: str
    alert_id: str
    delivered: bool
    attempts: int
    status: int | None
    error: str
    seconds: float


class _RetryableReply(Exception):
    def __init__(self, status: int, reason: str, retry_after_s: float | None) -> None:
        super().__init__(f"HTTP {status} {reason}".strip())
        self.status = status
        self.retry_after_s = retry_after_s


class _RefusedReply(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"HTTP {status} {reason}".strip())
        self.status = status


def _is_retryable(error: BaseException) -> bool:
    if isinstance(error, _RetryableReply):
        return True
    # An unsupported scheme is a TransportError to httpx, but no retry will ever reach it.
    return isinstance(error, httpx.TransportError) and not isinstance(error, httpx.UnsupportedProtocol)


def _retry_after_s(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class _Backoff:
    """Exponential backoff with jitter; a 429 or 503 that says when to come back waits that long (capped)."""

    def __init__(self, initial_s: float, cap_s: float) -> None:
        self._exponential = wait_exponential_jitter(initial=initial_s, max=cap_s, jitter=initial_s)
        self._cap_s = cap_s

    def __call__(self, state: RetryCallState) -> float:
        wait = self._exponential(state)
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, _RetryableReply) and error.retry_after_s is not None:
            wait = max(wait, min(error.retry_after_s, self._cap_s))
        return wait


def alert_body(alert: Alert) -> bytes:
    return alert.model_dump_json().encode()


async def deliver(
    client: httpx.AsyncClient,
    url: str,
    alert: Alert,
    secret: str,
    *,
    max_attempts: int,
    backoff_initial_s: float = 0.5,
    backoff_max_s: float = 30.0,
    body: bytes | None = None,
) -> Delivery:
    """POST one alert to one webhook, retrying what a retry can fix; never raises for a failed delivery."""
    payload = alert_body(alert) if body is None else body
    started = time.perf_counter()
    retrying = AsyncRetrying(
        stop=stop_after_attempt(max_attempts),
        wait=_Backoff(backoff_initial_s, backoff_max_s),
        retry=retry_if_exception(_is_retryable),
        reraise=True,
    )
    status: int | None = None
    try:
        async for attempt in retrying:
            with attempt:
                status = await _post_once(client, url, alert.alert_id, payload, secret)
    except (httpx.HTTPError, _RetryableReply, _RefusedReply) as error:
        attempts = retrying.statistics.get("attempt_number", 1)
        status = getattr(error, "status", None)
        reason = str(error) or type(error).__name__
        if isinstance(error, httpx.HTTPError):
            reason = f"{type(error).__name__}: {reason}"
        return Delivery(url, alert.alert_id, False, attempts, status, reason, time.perf_counter() - started)
    attempts = retrying.statistics.get("attempt_number", 1)
    return Delivery(url, alert.alert_id, True, attempts, status, "", time.perf_counter() - started)


async def _post_once(client: httpx.AsyncClient, url: str, alert_id: str, body: bytes, secret: str) -> int:
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        ALERT_ID_HEADER: alert_id,
        SIGNATURE_HEADER: signature_header(secret, body),
    }
    response = await client.post(url, content=body, headers=headers)
    if response.is_success:
        return response.status_code
    if response.status_code == 429 or response.is_server_error:
        raise _RetryableReply(response.status_code, response.reason_phrase, _retry_after_s(response))
    raise _RefusedReply(response.status_code, response.reason_phrase)


@dataclass(frozen=True)
class Undelivered:
    """An alert one webhook did not accept, and how the last attempt failed."""

    alert: Alert
    delivery: Delivery


OnUndelivered = Callable[[Sequence[Undelivered]], Awaitable[None]]


@dataclass(frozen=True)
class _Job:
    alert: Alert
    body: bytes
    url: str


class WebhookDelivery:
    """Delivers alerts to every webhook in the background, never holding up the caller.

    Args:
        urls: ``FINPULSE_ALERT_WEBHOOKS``.
        secret: ``FINPULSE_ALERT_WEBHOOK_SECRET`` (signs every request).
        max_attempts: ``FINPULSE_ALERT_WEBHOOK_MAX_ATTEMPTS`` per alert and webhook.
        on_undelivered: receives the failed (alert, webhook) pairs, in batches.
        concurrency: deliveries in flight at once.
        queue_size: deliveries waiting at most; beyond that an alert is dead-lettered at once rather than
            held in memory without bound while subscribers are down.
    """

    def __init__(
        self,
        urls: Sequence[str],
        secret: str,
        *,
        max_attempts: int,
        on_undelivered: OnUndelivered,
        concurrency: int = 4,
        queue_size: int = 1000,
        timeout_s: float = 10.0,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
    ) -> None:
        if max_attempts < 1 or concurrency < 1 or queue_size < 1:
            raise ValueError(
                "max_attempts, concurrency and queue_size must be >= 1, "
                f"got {max_attempts}, {concurrency}, {queue_size}"
            )
        if not secret:
            log.warning("FINPULSE_ALERT_WEBHOOK_SECRET is empty: webhook signatures prove nothing")
        self._urls = list(urls)
        self._secret = secret
        self._max_attempts = max_attempts
        self._on_undelivered = on_undelivered
        self._concurrency = concurrency
        self._backoff = (backoff_initial_s, backoff_max_s)
        self._client = httpx.AsyncClient(
            timeout=timeout_s, limits=httpx.Limits(max_connections=concurrency), follow_redirects=False
        )
        self._jobs: asyncio.Queue[_Job] = asyncio.Queue(maxsize=queue_size)
        self._failures: asyncio.Queue[Undelivered] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self.delivered = 0
        self.undelivered = 0

    async def start(self) -> WebhookDelivery:
        self._tasks = [
            asyncio.create_task(self._deliver_forever(), name=f"webhook-{i}") for i in range(self._concurrency)
        ]
        self._tasks.append(asyncio.create_task(self._dead_letter_forever(), name="webhook-dead-letter"))
        return self

    def submit(self, alerts: Sequence[Alert]) -> None:
        """Queue every alert for every webhook; returns at once."""
        for alert in alerts:
            body = alert_body(alert)
            for url in self._urls:
                try:
                    self._jobs.put_nowait(_Job(alert, body, url))
                except asyncio.QueueFull:
                    self._fail(alert, url, f"delivery queue full ({self._jobs.maxsize} waiting)")

    async def drain(self, timeout_s: float) -> bool:
        """Wait until every queued delivery finished and every failure was handed over; False on timeout."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._jobs.join()
                await self._failures.join()
        except TimeoutError:
            return False
        return True

    async def close(self, timeout_s: float = 10.0) -> None:
        """Finish what is queued (up to ``timeout_s``); dead-letter what is left; stop the tasks."""
        if not await self.drain(timeout_s):
            log.warning("webhook deliveries still pending after %.0fs; dead-lettering them", timeout_s)
        workers, dead_letter = self._tasks[:-1], self._tasks[-1:]
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        while not self._jobs.empty():
            job = self._jobs.get_nowait()
            self._fail(job.alert, job.url, "the worker stopped before this alert was delivered")
            self._jobs.task_done()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._failures.join()
        for task in dead_letter:
            task.cancel()
        await asyncio.gather(*dead_letter, return_exceptions=True)
        await self._client.aclose()

    async def _deliver_forever(self) -> None:
        initial_s, cap_s = self._backoff
        while True:
            job = await self._jobs.get()
            try:
                delivery = await deliver(
                    self._client, job.url, job.alert, self._secret, max_attempts=self._max_attempts,
                    backoff_initial_s=initial_s, backoff_max_s=cap_s, body=job.body,
                )  # fmt: skip
                if delivery.delivered:
                    self.delivered += 1
                else:
                    log.warning(
                        "alert %s not delivered to %s after %d attempts: %s",
                        job.alert.alert_id, job.url, delivery.attempts, delivery.error,
                    )  # fmt: skip
                    self._failures.put_nowait(Undelivered(job.alert, delivery))
                    self.undelivered += 1
            except asyncio.CancelledError:
                self._fail(job.alert, job.url, "the worker stopped before this alert was delivered")
                raise
            except Exception as error:  # a bug here must not end the task and silently stop deliveries
                log.exception("delivering alert %s to %s failed", job.alert.alert_id, job.url)
                self._fail(job.alert, job.url, f"{type(error).__name__}: {error}")
            finally:
                self._jobs.task_done()

    def _fail(self, alert: Alert, url: str, reason: str) -> None:
        self.undelivered += 1
        self._failures.put_nowait(Undelivered(alert, Delivery(url, alert.alert_id, False, 0, None, reason, 0.0)))

    async def _dead_letter_forever(self) -> None:
        while True:
            batch = [await self._failures.get()]
            while not self._failures.empty():
                batch.append(self._failures.get_nowait())
            try:
                await self._hand_over(batch)
            finally:
                for _ in batch:
                    self._failures.task_done()

    async def _hand_over(self, batch: list[Undelivered]) -> None:
        retrying = AsyncRetrying(stop=stop_after_delay(60), wait=wait_exponential(multiplier=0.5, max=10), reraise=True)
        try:
            async for attempt in retrying:
                with attempt:
                    await self._on_undelivered(batch)
        except Exception:
            # The alerts themselves are in the alerts table and topic; only this note of failure is lost.
            log.exception(
                "could not dead-letter %d undelivered alerts: %s",
                len(batch), ", ".join(sorted({item.alert.alert_id for item in batch})),
            )  # fmt: skip
