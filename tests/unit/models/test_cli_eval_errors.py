"""``finpulse model eval`` refuses bad input with one clear line and exit code 2 (no traceback)."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from finpulse.cli.model import model_app

runner = CliRunner()


def run_eval(tmp_path: Path, name: str, content: str, *extra: str) -> tuple[int, str]:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    result = runner.invoke(model_app, ["eval", "--data", str(path), *extra])
    return result.exit_code, " ".join(result.output.split())


@pytest.mark.parametrize(
    ("name", "content", "extra", "message"),
    [
        ("nolabel.csv", "text,target\nup,1\n", (), "column 'label' not found (columns: target, text)"),
        ("notext.csv", "body,label\nup,1\n", (), "column 'text' not found (columns: body, label)"),
        ("custom.csv", "body,label\nup,1\n", ("--text-col", "headline"), "column 'headline' not found"),
        (
            "unknown.csv",
            "text,label\nup,1\ndown,very bearish\n",
            (),
            "unknown.csv:3: label 'very bearish' is",
        ),
        (
            "bad.jsonl",
            '{"text": "up", "label": "sideways"}\n',
            (),
            "bad.jsonl:1: label 'sideways' is neither",
        ),
        ("empty.csv", "", (), "empty file"),
        ("header.csv", "text,label\n", (), "no rows"),
        ("empty.jsonl", "", (), "no rows"),
    ],
)
def test_bad_input_fails_with_a_clear_message(
    tmp_path: Path, name: str, content: str, extra: tuple[str, ...], message: str
) -> None:
    code, output = run_eval(tmp_path, name, content, *extra)
    assert code == 2
    assert message in output
    assert "Traceback" not in output


def test_missing_file(tmp_path: Path) -> None:
    result = runner.invoke(model_app, ["eval", "--data", str(tmp_path / "absent.csv")])
    assert result.exit_code == 2
    assert "no such file" in " ".join(result.output.split())
