"""The worker's HTTP endpoint: ``GET /health`` and read-only ``GET|POST /sql``.

While a worker runs it holds the embedded ClickHouse (chDB allows one process per data directory), so
other readers — ``finpulse sql``, the demo, dashboards — query through this endpoint.
"""

from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING

import faust
from faust.web import Request, Response, View

from finpulse.sinks.sql import ReadOnlyQueryError, run_query, to_csv, to_json

if TYPE_CHECKING:
    from finpulse.streams.app import WorkerState

SQL_TIMEOUT_S = 60.0


def register_pages(app: faust.App, state: WorkerState) -> None:
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
                result = await asyncio.to_thread(run_query, state.query_client, query, timeout_s=SQL_TIMEOUT_S)
            except ReadOnlyQueryError as err:
                return self.json({"error": str(err)}, status=400)
            except Exception as err:  # a ClickHouse error is the caller's to read, not the worker's to die of
                return self.json({"error": f"{type(err).__name__}: {err}"}, status=422)
            if output == "csv":
                return self.text(to_csv(result), content_type="text/csv")
            return self.text(to_json(result), content_type="application/json")
