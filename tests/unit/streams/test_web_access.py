"""Who may read through the worker's HTTP endpoint: the loopback rule, the bearer token, the guard."""

from __future__ import annotations

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr, ValidationError

from finpulse.settings import Settings
from finpulse.streams.web import ExposedEndpointError, access_guard, check_exposure, is_loopback, refusal

TOKEN = "k3P9-local.test_token~x/y+z=="
PUBLIC = "0.0.0.0"  # noqa: S104 - a setting under test; nothing binds to it here


def settings(host: str = "127.0.0.1", token: str = "") -> Settings:
    return Settings(worker_web_host=host, worker_web_port=6066, sql_token=SecretStr(token))


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "127.8.9.10", "::1", "localhost", "LOCALHOST", "localhost.", "::ffff:127.0.0.1"]
)
def test_loopback_hosts(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize(
    "host", [PUBLIC, "::", "10.0.0.5", "192.168.1.2", "128.0.0.1", "::ffff:10.0.0.1", "example.com", "", "localhost.x"]
)
def test_other_hosts_are_not_loopback(host: str) -> None:
    assert not is_loopback(host)


def test_a_public_address_without_a_token_is_refused_at_start_with_the_fix_named() -> None:
    with pytest.raises(ExposedEndpointError, match="0.0.0.0:6066") as refused:
        check_exposure(settings(PUBLIC))
    assert "FINPULSE_SQL_TOKEN" in str(refused.value) and "FINPULSE_WORKER_WEB_HOST=127.0.0.1" in str(refused.value)
    check_exposure(settings(PUBLIC, TOKEN))
    check_exposure(settings("127.0.0.1"))


def test_without_a_token_loopback_is_open_and_any_other_address_answers_403() -> None:
    assert refusal(settings("127.0.0.1"), None) is None
    assert refusal(settings("localhost"), "Bearer anything") is None
    denied = refusal(settings(PUBLIC), f"Bearer {TOKEN}")
    assert denied is not None and denied.status == 403 and "FINPULSE_SQL_TOKEN" in denied.error


@pytest.mark.parametrize("host", ["127.0.0.1", PUBLIC])
def test_with_a_token_only_the_token_reads(host: str) -> None:
    configured = settings(host, TOKEN)
    assert refusal(configured, f"Bearer {TOKEN}") is None
    assert refusal(configured, f"  bearer   {TOKEN} ") is None  # the scheme is case-insensitive (RFC 7235)

    missing = refusal(configured, None)
    assert missing is not None and missing.status == 401
    assert missing.headers["WWW-Authenticate"] == 'Bearer realm="finpulse"'
    assert "Authorization: Bearer" in missing.error and "FINPULSE_SQL_TOKEN" in missing.error
    for header in ("", "Bearer", "Bearer ", f"Basic {TOKEN}", TOKEN):
        denied = refusal(configured, header)
        assert denied is not None and denied.status == 401, header

    for wrong in (TOKEN[:-1], TOKEN + "x", TOKEN.upper(), "é" * 30, "\udcff"):
        denied = refusal(configured, f"Bearer {wrong}")
        assert denied is not None and denied.status == 401, wrong
        assert 'error="invalid_token"' in denied.headers["WWW-Authenticate"]


@pytest.mark.parametrize("token", ["short-token", "has space in it 123", "ünïcode-token-12345", "a=b" * 6])
def test_a_token_that_cannot_travel_in_a_bearer_header_is_refused(token: str) -> None:
    with pytest.raises(ValidationError, match="sql_token"):
        settings(token=token)


# --- the guard as aiohttp runs it ------------------------------------------------------------------


async def _ok(request: web.Request) -> web.Response:
    return web.json_response({"path": request.path})


async def test_the_guard_serves_health_to_anyone_and_the_rest_to_the_token() -> None:
    app = web.Application(middlewares=[access_guard(settings(PUBLIC, TOKEN))])
    for path in ("/health", "/sql", "/table/opinion-index/"):
        app.router.add_route("*", path, _ok)
    async with TestClient(TestServer(app)) as guarded:
        assert (await guarded.get("/health")).status == 200
        for path in ("/sql", "/table/opinion-index/", "/no-such-page"):
            response = await guarded.post(path)
            assert response.status == 401, path
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
            assert "FINPULSE_SQL_TOKEN" in (await response.json())["error"]
        wrong = await guarded.get("/sql", headers={"Authorization": "Bearer not-the-token-at-all"})
        assert wrong.status == 401
        right = await guarded.get("/sql", headers={"Authorization": f"Bearer {TOKEN}"})
        assert right.status == 200 and (await right.json()) == {"path": "/sql"}
