"""One chDB directory per process at a time, but another once every client of the first is closed.

This module opens no directory for its whole run, unlike the others: it switches between two.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from finpulse.sinks.clickhouse import get_client

pytestmark = pytest.mark.integration


def test_another_directory_opens_once_every_client_of_the_first_is_closed(tmp_path: Path) -> None:
    first = [get_client(f"chdb://{tmp_path / 'a'}") for _ in range(2)]
    first[0].command("CREATE TABLE t (n UInt8) ENGINE = MergeTree ORDER BY n")
    first[0].insert("t", [[1]], column_names=["n"])
    for client in first:
        client.close()

    second = get_client(f"chdb://{tmp_path / 'b'}")
    assert second.query("EXISTS TABLE t").result_rows == [(0,)]
    second.close()

    again = get_client(f"chdb://{tmp_path / 'a'}")
    assert again.query("SELECT count() FROM t").result_rows == [(1,)]
    again.close()
