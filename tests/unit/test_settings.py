from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from finpulse.settings import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def test_environment_overrides_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FINPULSE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("FINPULSE_BROKER", "k1:9092,k2:9092")
    monkeypatch.setenv("FINPULSE_TOPIC_PREFIX", "desk.")
    monkeypatch.setenv("FINPULSE_BATCH_SIZE", "250")
    settings = Settings()
    assert settings.data_dir == tmp_path
    assert not settings.embedded_broker
    assert settings.topic("news.raw") == "desk.news.raw"
    assert settings.batch_size == 250


def test_clickhouse_defaults_to_chdb_under_the_data_dir(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert settings.resolved_clickhouse_dsn == f"chdb://{tmp_path.resolve()}/clickhouse"
    server = Settings(data_dir=tmp_path, clickhouse_dsn="http://u:p@ch:8123/db")
    assert server.resolved_clickhouse_dsn == "http://u:p@ch:8123/db"


def test_model_dir_defaults_to_a_shipped_artifact() -> None:
    model_dir = Settings().resolved_model_dir
    assert (model_dir / "metadata.json").is_file()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("topic_prefix", "bad prefix/"),
        ("batch_size", 0),
        ("batch_max_wait_s", 0),
        ("retrain_confidence_threshold", 1.5),
    ],
)
def test_invalid_values_are_refused_with_the_field_named(field: str, value: object) -> None:
    with pytest.raises(ValidationError, match=field):
        Settings(**{field: value})


def test_the_readme_documents_every_setting() -> None:
    readme = README.read_text()
    missing = [name for name in Settings.model_fields if f"`FINPULSE_{name.upper()}`" not in readme]
    assert missing == []
