"""Shared fixtures: one real embedded broker per test session; each test gets its own topics and data dir."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from finpulse.settings import Settings
from finpulse.streams.broker import EmbeddedBroker

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TWITTER_DATA = SHARED_DATA / "twitter-financial-news"


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    log_file = tmp_path_factory.mktemp("broker") / "broker.log"
    with EmbeddedBroker(log_file=log_file) as embedded:
        yield embedded


@pytest.fixture
def pipeline_settings(tmp_path: Path, broker: EmbeddedBroker) -> Settings:
    """Settings of an isolated pipeline on the shared broker: own topic prefix, consumer group and data dir."""
    run = uuid.uuid4().hex[:8]
    return Settings(
        data_dir=tmp_path / "var",
        broker=broker.bootstrap_servers,
        topic_prefix=f"t{run}.",
        worker_id=f"finpulse-test-{run}",
        topic_partitions=2,
        batch_size=200,
        batch_max_wait_s=0.2,
        index_flush_s=0.1,
        broker_rebalance_timeout_s=3.0,
    )
