"""What chDB allows, checked for real: clients sharing a directory, another process holding one."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from clickhouse_connect.driver import Client

from finpulse.sinks.clickhouse import get_client
from finpulse.sinks.exceptions import ChdbPathInUseError
from tests.integration.sinks.conftest import OpenClient

pytestmark = pytest.mark.integration

HOLDER = textwrap.dedent(
    """
    import sys
    from finpulse.sinks.clickhouse import get_client
    client = get_client(f"chdb://{sys.argv[1]}")
    client.command("CREATE TABLE IF NOT EXISTS held (n UInt8) ENGINE = MergeTree ORDER BY n")
    client.insert("held", [[7]], column_names=["n"])
    print("ready", flush=True)
    sys.stdin.readline()  # hold the directory until the test says so
    client.close()
    """
)
READER = textwrap.dedent(
    """
    import sys
    from finpulse.sinks.clickhouse import get_client
    print(get_client(f"chdb://{sys.argv[1]}").query("SELECT sum(n) FROM held").result_rows[0][0])
    """
)


def test_clients_on_the_same_directory_share_its_data(open_client: OpenClient) -> None:
    first, second = open_client(), open_client()
    first.command("CREATE TABLE shared (n UInt8) ENGINE = MergeTree ORDER BY n")
    first.insert("shared", [[1], [2]], column_names=["n"])
    assert second.query("SELECT sum(n) FROM shared").result_rows == [(3,)]
    second.close()
    assert first.query("SELECT count() FROM shared").result_rows == [(2,)]


def test_this_process_cannot_open_a_second_directory(open_client: OpenClient, tmp_path: Path) -> None:
    open_client()
    with pytest.raises(ChdbPathInUseError, match="this process already has another chDB directory open"):
        get_client(f"chdb://{tmp_path / 'other'}")


@pytest.mark.slow
def test_a_directory_held_by_another_process_is_refused_naming_it(tmp_path: Path) -> None:
    directory = tmp_path / "held"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(directory)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        with pytest.raises(ChdbPathInUseError, match=rf"in use by another process \(pid {holder.pid},"):
            get_client(f"chdb://{directory}")
    finally:
        holder.communicate("release\n", timeout=60)
    assert holder.returncode == 0

    # Released: the next process opens the directory and finds the data.
    reader = subprocess.run(
        [sys.executable, "-c", READER, str(directory)], capture_output=True, text=True, timeout=60
    )
    assert reader.returncode == 0, reader.stderr
    assert reader.stdout.strip() == "7"


def test_a_missing_directory_is_created(client: Client, chdb_dir: Path) -> None:
    assert client.query("SELECT 1").result_rows == [(1,)]
    assert chdb_dir.is_dir() and (chdb_dir / "status").is_file()
