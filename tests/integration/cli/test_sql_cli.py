"""``finpulse sql`` as a user runs it: a separate process on an embedded ClickHouse data directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def finpulse(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FINPULSE_DATA_DIR": str(data_dir), "FINPULSE_CLICKHOUSE_DSN": ""}
    return subprocess.run(
        [sys.executable, "-m", "finpulse", "sql", *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_machine_output_alone_on_stdout_and_refusals_with_clear_errors(tmp_path: Path) -> None:
    counted = finpulse(tmp_path, "SELECT count() AS n FROM scored_events", "--format", "csv")
    assert counted.returncode == 0, counted.stderr
    assert counted.stdout == "n\n0\n"

    described = finpulse(
        tmp_path, "SELECT name FROM system.tables WHERE database = currentDatabase()", "-f", "json"
    )
    tables = {row["name"] for row in json.loads(described.stdout)["rows"]}
    assert {"scored_events", "dlq_events", "retrain_samples"} <= tables

    refused = finpulse(tmp_path, "DROP TABLE scored_events")
    assert refused.returncode == 2
    assert "read-only" in refused.stderr and refused.stdout == ""

    failed = finpulse(tmp_path, "SELECT no_such_column FROM scored_events")
    assert failed.returncode == 1
    assert "no_such_column" in failed.stderr
