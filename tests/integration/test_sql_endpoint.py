"""Nobody reads what they should not: the worker's HTTP endpoint as other processes reach it.

One running worker serves every assertion about a live endpoint (a start costs 20-40 s here). It runs as
production does, on 0.0.0.0 with a token, and with small answer caps so a small query goes over them. A
second worker, on 0.0.0.0 without a token, must exit before it listens.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys

import httpx
import pytest
from pydantic import SecretStr

from finpulse.harness import EmbeddedPipeline, WorkerFailed, WorkerProcess, settings_env
from finpulse.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PUBLIC = "0.0.0.0"  # noqa: S104 - the worker must accept this only with a token
COUNT = "SELECT count() AS n FROM scored_events"
AT_THE_CAP = "SELECT number FROM numbers(1000)"
FAILS_HALFWAY = " UNION ALL ".join(
    [*["SELECT number FROM numbers(200)"] * 4, "SELECT throwIf(number = 100, 'halfway') FROM numbers(200)"]
)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def finpulse_sql(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """``finpulse sql`` as a user on the worker's machine runs it: the same data dir, its own token (or none)."""
    env = {**os.environ, **settings_env(settings)}
    return subprocess.run(
        [sys.executable, "-m", "finpulse", "sql", *args], env=env, capture_output=True, text=True, timeout=120
    )


def said(process: subprocess.CompletedProcess[str]) -> str:
    return " ".join(process.stderr.split())


def test_a_public_worker_answers_only_its_token_and_refuses_answers_over_the_caps(
    pipeline_settings: Settings,
) -> None:
    token = secrets.token_hex(24)
    settings = pipeline_settings.model_copy(
        update={"sql_token": SecretStr(token), "sql_max_rows": 1000, "sql_max_bytes": 65536}
    )
    with EmbeddedPipeline(settings, worker_env={"FINPULSE_WORKER_WEB_HOST": PUBLIC}) as pipeline:
        assert pipeline.worker is not None
        worker, sql = pipeline.worker, f"{pipeline.worker.url}/sql"

        assert httpx.get(f"{worker.url}/health", timeout=10).status_code == 200  # probes need no token

        missing = httpx.get(sql, params={"query": COUNT}, timeout=10)
        assert missing.status_code == 401
        assert missing.headers["WWW-Authenticate"] == 'Bearer realm="finpulse"'
        assert "FINPULSE_SQL_TOKEN" in missing.json()["error"]
        wrong = httpx.post(sql, content=COUNT, headers=bearer(secrets.token_hex(24)), timeout=10)
        assert wrong.status_code == 401 and 'error="invalid_token"' in wrong.headers["WWW-Authenticate"]
        basic = httpx.post(sql, content=COUNT, auth=("finpulse", token), timeout=10)
        assert basic.status_code == 401
        faust_tables = httpx.get(f"{worker.url}/table/", timeout=10)
        assert faust_tables.status_code == 401, "Faust's own pages serve table contents: behind the token too"

        right = httpx.get(sql, params={"query": COUNT}, headers=bearer(token), timeout=30)
        assert right.status_code == 200 and right.json()["rows"] == [{"n": 0}]
        assert worker.query(COUNT) == [{"n": 0}], "the harness sends the token of its settings"

        too_many = httpx.post(sql, content="SELECT number FROM numbers(5000)", headers=bearer(token), timeout=30)
        assert too_many.status_code == 422
        assert "at most 1,000 rows (FINPULSE_SQL_MAX_ROWS)" in too_many.json()["error"]
        assert "max rows: 1.00 thousand" in too_many.json()["error"]
        too_wide = httpx.post(
            sql, content="SELECT repeat('x', 1000 + number % 2) FROM numbers(500)", headers=bearer(token), timeout=30
        )
        assert too_wide.status_code == 422
        assert "65,536 bytes (FINPULSE_SQL_MAX_BYTES)" in too_wide.json()["error"]
        assert "max bytes: 64.00 KiB" in too_wide.json()["error"]
        # An answer at the cap is whole, and nothing of the refused ones leaks into it.
        assert worker.query(AT_THE_CAP) == [{"number": n} for n in range(1000)]
        # Nor of one that failed after ClickHouse had output part of it: chDB would put those rows in front
        # of the next answer (see sinks/sql.py).
        failed = httpx.post(sql, content=FAILS_HALFWAY, headers=bearer(token), timeout=30)
        assert failed.status_code == 422 and "halfway" in failed.json()["error"]
        assert worker.query(AT_THE_CAP) == [{"number": n} for n in range(1000)]

        through_cli = finpulse_sql(settings, COUNT, "--format", "json")
        assert through_cli.returncode == 0, through_cli.stderr
        assert json.loads(through_cli.stdout)["rows"] == [{"n": 0}]
        without_token = finpulse_sql(settings.model_copy(update={"sql_token": SecretStr("")}), COUNT)
        assert without_token.returncode == 1 and without_token.stdout == ""
        assert "Authorization: Bearer <token>" in said(without_token) and "FINPULSE_SQL_TOKEN" in said(without_token)


def test_a_worker_on_a_public_address_without_a_token_exits_at_start_saying_why(
    pipeline_settings: Settings,
) -> None:
    assert not pipeline_settings.sql_token.get_secret_value()
    log = pipeline_settings.data_dir / "worker.log"
    worker = WorkerProcess(pipeline_settings, pipeline_settings.broker, log, {"FINPULSE_WORKER_WEB_HOST": PUBLIC})
    try:
        with pytest.raises(WorkerFailed, match="exited with code 2"):
            worker.start(ready_timeout_s=120)
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{worker.url}/health", timeout=5)
    finally:
        worker.stop()
    told = " ".join(log.read_text().split())
    assert f"listens on {PUBLIC}:{worker.web_port}, not a loopback address" in told
    assert "Set FINPULSE_SQL_TOKEN" in told
