"""``finpulse sql`` as a user runs it: a separate process on an embedded ClickHouse data directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def finpulse(data_dir: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FINPULSE_DATA_DIR": str(data_dir), "FINPULSE_CLICKHOUSE_DSN": "", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "finpulse", "sql", *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_machine_output_alone_on_stdout_and_refusals_with_clear_errors(tmp_path: Path) -> None:
    counted = finpulse(tmp_path, "SELECT count() AS n FROM scored_events", "--format", "csv")
    assert counted.returncode == 0, counted.stderr
    assert counted.stdout == "n\n0\n"

    described = finpulse(tmp_path, "SELECT name FROM system.tables WHERE database = currentDatabase()", "-f", "json")
    tables = {row["name"] for row in json.loads(described.stdout)["rows"]}
    assert {"scored_events", "dlq_events", "retrain_samples"} <= tables

    refused = finpulse(tmp_path, "DROP TABLE scored_events")
    assert refused.returncode == 2
    assert "read-only" in refused.stderr and refused.stdout == ""

    failed = finpulse(tmp_path, "SELECT no_such_column FROM scored_events")
    assert failed.returncode == 1
    assert "no_such_column" in failed.stderr


def test_an_answer_over_the_row_or_byte_cap_is_refused_not_cut_short(tmp_path: Path) -> None:
    caps = {"FINPULSE_SQL_MAX_ROWS": "1000", "FINPULSE_SQL_MAX_BYTES": "65536"}
    rows = finpulse(tmp_path, "SELECT number FROM numbers(5000)", "-f", "csv", env=caps)
    assert rows.returncode == 1 and rows.stdout == ""
    assert "at most 1,000 rows (FINPULSE_SQL_MAX_ROWS)" in said(rows) and "max rows: 1.00 thousand" in said(rows)

    wide = finpulse(tmp_path, "SELECT repeat('x', 1000 + number % 2) AS t FROM numbers(500)", "-f", "csv", env=caps)
    assert wide.returncode == 1 and wide.stdout == ""
    assert "65,536 bytes (FINPULSE_SQL_MAX_BYTES)" in said(wide) and "max bytes: 64.00 KiB" in said(wide)

    within = finpulse(tmp_path, "SELECT number FROM numbers(1000)", "-f", "csv", env=caps)
    assert within.returncode == 0, within.stderr
    assert within.stdout.splitlines() == ["number", *map(str, range(1000))]


def said(process: subprocess.CompletedProcess[str]) -> str:
    """stderr with the terminal's line wrapping undone."""
    return " ".join(process.stderr.split())
