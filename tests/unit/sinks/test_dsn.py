"""DSNs the client factory accepts or refuses before opening anything."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from clickhouse_connect.driver.exceptions import OperationalError

from finpulse.settings import Settings
from finpulse.sinks.clickhouse import chdb_path, get_client


def test_chdb_dsn_names_an_absolute_directory(tmp_path: Path) -> None:
    assert chdb_path(f"chdb://{tmp_path}/clickhouse") == tmp_path / "clickhouse"


def test_the_default_dsn_of_the_settings_is_a_chdb_directory(tmp_path: Path) -> None:
    dsn = Settings(data_dir=tmp_path).resolved_clickhouse_dsn
    assert chdb_path(dsn) == tmp_path.resolve() / "clickhouse"


@pytest.mark.parametrize("dsn", ["chdb://relative/dir", "chdb:relative", "chdb://memory"])
def test_chdb_dsn_without_an_absolute_directory_is_refused(dsn: str) -> None:
    with pytest.raises(ValueError, match="absolute directory"):
        chdb_path(dsn)


@pytest.mark.parametrize("dsn", ["", "clickhouse://u:secret@h:9000/db", "/var/lib/clickhouse"])
def test_unknown_schemes_are_refused_without_showing_the_password(dsn: str) -> None:
    with pytest.raises(ValueError, match="unsupported ClickHouse DSN") as refused:
        get_client(dsn)
    assert "secret" not in str(refused.value)


def test_a_server_dsn_connects_to_the_server_and_does_not_leak_the_password() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens here once the socket is closed
    with pytest.raises(OperationalError) as refused:
        get_client(f"http://default:secret@127.0.0.1:{port}/default")
    assert "Connection refused" in str(refused.value)
    assert "secret" not in str(refused.value)
