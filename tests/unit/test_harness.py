from __future__ import annotations

from pathlib import Path

import pytest

from finpulse.harness import settings_env
from finpulse.settings import Settings


def test_settings_survive_the_trip_through_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = Settings(
        data_dir=tmp_path,
        topic_prefix="x.",
        batch_size=77,
        batch_max_wait_s=0.25,
        model_dir=tmp_path / "m",
        index_windows_s=[60, 600],
        alert_webhooks=["http://127.0.0.1:9/hook"],
        alert_webhook_secret="s3cret",
    )
    for name, value in settings_env(original).items():
        monkeypatch.setenv(name, value)
    restored = Settings()
    assert restored.model_dump() | {"clickhouse_dsn": ""} == original.model_dump() | {
        "data_dir": tmp_path.resolve(),
        "clickhouse_dsn": "",
    }
    assert restored.resolved_clickhouse_dsn == original.resolved_clickhouse_dsn
    assert restored.alert_webhook_secret.get_secret_value() == "s3cret"
