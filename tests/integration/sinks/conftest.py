"""A real chDB per test module.

chDB hosts one data directory per process at a time: a module opens its directory, and closes every
client it opened when it ends, so that the next module (or another test package) can open its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from clickhouse_connect.driver import Client

from finpulse.sinks.clickhouse import get_client
from finpulse.sinks.migrations import migrate

OpenClient = Callable[[], Client]


@pytest.fixture(scope="module")
def chdb_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("chdb") / "clickhouse"


@pytest.fixture(scope="module")
def open_client(chdb_dir: Path) -> Iterator[OpenClient]:
    """Opens more clients on the module's directory; all are closed when the module ends."""
    opened: list[Client] = []

    def open_one() -> Client:
        client = get_client(f"chdb://{chdb_dir}")
        opened.append(client)
        return client

    yield open_one
    for client in opened:
        client.close()


@pytest.fixture(scope="module")
def client(open_client: OpenClient) -> Client:
    """A client on the module's directory, migrated."""
    client = open_client()
    migrate(client)
    return client
