"""The worker's HTTP endpoint: ``GET /health`` and read-only ``GET|POST /sql``.

While a worker runs it holds the embedded ClickHouse (chDB allows one process per data directory), so
other readers — ``finpulse sql``, the demo, dashboards — query through this endpoint.

Who may read: every path but ``/health`` (which probes need, and which holds nothing stored) asks for
``Authorization: Bearer <FINPULSE_SQL_TOKEN>`` when a token is set. That covers ``/sql`` and Faust's own
pages too (its ``/table/…`` serves table contents). Without a token the endpoint may only listen on a
loopback address: ``check_exposure`` stops a worker meant for any other address at start-up
(``register_pages`` calls it, so ``create_app`` fails), and the guard answers 403 should one run there
all the same. Answers are capped in rows and bytes (``sinks.sql.ResultLimits``).
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import faust
from aiohttp import web as aiohttp_web
from faust.web import Request, Response, View

from finpulse.settings import Settings
from finpulse.sinks.sql import ReadOnlyQueryError, ResultLimits, ResultTooLargeError, run_query, to_csv, to_json
from finpulse.streams.recovery import COMMIT_HOLDS

if TYPE_CHECKING:
    from finpulse.streams.app import WorkerState

SQL_TIMEOUT_S = 60.0
OPEN_PATHS = frozenset({"/health"})

Handler = Callable[[aiohttp_web.Request], Awaitable[aiohttp_web.StreamResponse]]
Middleware = Callable[[aiohttp_web.Request, Handler], Awaitable[aiohttp_web.StreamResponse]]


class ExposedEndpointError(ValueError):
    """The worker would serve stored data on a non-loopback address without a token."""


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request may not read: the HTTP status, a message for the caller, and headers to send."""

    status: int
    error: str
    headers: Mapping[str, str] = field(default_factory=dict)


def is_loopback(host: str) -> bool:
    """``localhost``, 127.0.0.0/8 or ::1; any other name may resolve to an address others reach."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def check_exposure(settings: Settings) -> None:
    """Refuse a configuration that would serve SQL beyond this machine without a token.

    Raises:
        ExposedEndpointError: ``FINPULSE_WORKER_WEB_HOST`` is not a loopback address and no
            ``FINPULSE_SQL_TOKEN`` is set; the message says how to fix it.
    """
    if _exposed(settings):
        raise ExposedEndpointError(_exposure_message(settings))


def refusal(settings: Settings, authorization: str | None) -> Refusal | None:
    """Why a request with this ``Authorization`` header may not read, or None when it may."""
    token = settings.sql_token.get_secret_value()
    if not token:
        return Refusal(403, _exposure_message(settings)) if _exposed(settings) else None
    scheme, _, presented = (authorization or "").strip().partition(" ")
    presented = presented.strip()
    if scheme.lower() != "bearer" or not presented:
        return Refusal(
            401,
            "this endpoint needs the header Authorization: Bearer <token>, the token being the worker's "
            "FINPULSE_SQL_TOKEN (finpulse sql sends it when FINPULSE_SQL_TOKEN is set)",
            {"WWW-Authenticate": 'Bearer realm="finpulse"'},
        )
    if not hmac.compare_digest(presented.encode("utf-8", "surrogatepass"), token.encode()):
        return Refusal(
            401,
            "the bearer token is not the worker's FINPULSE_SQL_TOKEN",
            {"WWW-Authenticate": 'Bearer realm="finpulse", error="invalid_token"'},
        )
    return None


def access_guard(settings: Settings) -> Middleware:
    """An aiohttp middleware that serves ``OPEN_PATHS`` to anyone and the rest as ``refusal`` decides."""

    @aiohttp_web.middleware
    async def guard(request: aiohttp_web.Request, handler: Handler) -> aiohttp_web.StreamResponse:
        denied = None if request.path in OPEN_PATHS else refusal(settings, request.headers.get("Authorization"))
        if denied is not None:
            return aiohttp_web.json_response({"error": denied.error}, status=denied.status, headers=denied.headers)
        return await handler(request)

    return guard


def _exposed(settings: Settings) -> bool:
    return not settings.sql_token.get_secret_value() and not is_loopback(settings.worker_web_host)


def _exposure_message(settings: Settings) -> str:
    return (
        f"the worker's HTTP endpoint listens on {settings.worker_web_host}:{settings.worker_web_port}, "
        "not a loopback address, and no FINPULSE_SQL_TOKEN is set: anyone who reaches it could read every "
        "stored text. Set FINPULSE_SQL_TOKEN (e.g. to the output of `openssl rand -hex 32`) and send it as "
        "Authorization: Bearer <token>, or set FINPULSE_WORKER_WEB_HOST=127.0.0.1"
    )


def register_pages(app: faust.App, state: WorkerState) -> None:
    """``/health`` and ``/sql`` behind ``access_guard``; refuses an exposed configuration first."""
    check_exposure(state.settings)
    web_app = getattr(app.web, "web_app", None)
    if not isinstance(web_app, aiohttp_web.Application):
        raise TypeError(f"the access guard needs Faust's aiohttp web driver, not {type(app.web).__name__}")
    web_app.middlewares.append(access_guard(state.settings))
    limits = ResultLimits.from_settings(state.settings)

    @app.page("/health")
    class Health(View):
        async def get(self, request: Request) -> Response:
            ready = state.ready.is_set()
            assigned = sorted(f"{tp.topic}:{tp.partition}" for tp in app.consumer.assignment()) if ready else []
            body = {
                "ready": ready and bool(assigned),
                "pid": os.getpid(),
                "model_version": state.model_version,
                "assigned": assigned,
                "totals": dict(state.pipeline.totals) if state.pipeline else {},
                "commits": COMMIT_HOLDS.as_dict(),
            }
            return self.json(body, status=200 if body["ready"] else 503)

    @app.page("/sql")
    class Sql(View):
        """``?query=…`` (GET) or the query as the body (POST); ``?format=json|csv``."""

        async def get(self, request: Request) -> Response:
            return await self._answer(request.query.get("query", ""), request.query.get("format", "json"))

        async def post(self, request: Request) -> Response:
            return await self._answer(await request.text(), request.query.get("format", "json"))

        async def _answer(self, query: str, output: str) -> Response:
            if state.query_client is None:
                return self.json({"error": "the worker is still starting"}, status=503)
            if output not in ("json", "csv"):
                return self.json({"error": f"unknown format {output!r}: use json or csv"}, status=400)
            try:
                result = await asyncio.to_thread(
                    run_query, state.query_client, query, timeout_s=SQL_TIMEOUT_S, limits=limits
                )
            except ReadOnlyQueryError as err:
                return self.json({"error": str(err)}, status=400)
            except ResultTooLargeError as err:
                return self.json({"error": str(err)}, status=422)
            except Exception as err:  # a ClickHouse error is the caller's to read, not the worker's to die of
                return self.json({"error": f"{type(err).__name__}: {err}"}, status=422)
            if output == "csv":
                return self.text(to_csv(result), content_type="text/csv")
            return self.text(to_json(result), content_type="application/json")
