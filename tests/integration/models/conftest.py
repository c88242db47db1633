"""A tiny teacher and student trained once per session from the real base weights (a few hundred rows)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from finpulse.cli.model import model_app
from finpulse.models.data import DEFAULT_DATA_ROOT

TRAIN_CSV = DEFAULT_DATA_ROOT / "train.csv"
TINY = ["--data", str(TRAIN_CSV), "--limit-rows", "300", "--epochs", "1", "--max-steps", "6",
        "--max-length", "32", "--batch-size", "16", "--threads", "2", "--json"]  # fmt: skip


def invoke(*args: str) -> dict:
    result = CliRunner().invoke(model_app, list(args))
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture(scope="session")
def tiny_teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("models") / "tiny-teacher"
    invoke("train", *TINY, "--out", str(out))
    return out


@pytest.fixture(scope="session")
def tiny_student(tiny_teacher: Path) -> Path:
    out = tiny_teacher.parent / "tiny-student"
    invoke("distill", *TINY, "--teacher", str(tiny_teacher), "--layers", "0,5", "--hidden-weight", "1",
           "--augment", "1", "--gpu", "--out", str(out))  # fmt: skip
    return out


@pytest.fixture(scope="session")
def small_labelled_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 rows of valid.csv with the labels spelled as names, as a user's file might have them."""
    rows = (DEFAULT_DATA_ROOT / "valid.csv").read_text(encoding="utf-8").splitlines()
    import csv
    import io

    names = {"0": "Negative", "1": "bullish", "2": "NEUTRAL"}
    reader = list(csv.reader(io.StringIO("\n".join(rows))))[1:41]
    path = tmp_path_factory.mktemp("data") / "small.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["headline", "sentiment"])
        writer.writerows([[text, names[label]] for text, label in reader])
    return path
