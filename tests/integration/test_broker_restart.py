"""Broker restarts on real components: Tansu (on S3, or in memory), a Faust worker process, chDB, the model.

On a persistent store a broker killed under load and started again loses nothing. On the memory store a
restarted broker is empty: the worker must notice and exit non-zero without committing.
"""

from __future__ import annotations

import pytest

from finpulse.chaos import broker as restarts
from finpulse.chaos.result import ScenarioSize
from finpulse.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_a_broker_killed_under_load_on_a_persistent_store_loses_nothing(pipeline_settings: Settings) -> None:
    result = restarts.run_persistent(pipeline_settings, ScenarioSize(events=1_500))

    assert result.failed_checks == [], result.as_dict()  # killed amid the feed; the worker rode it out
    assert result.sent >= 1_000, f"most of the feed was accepted: {result.details}"
    assert result.lost == 0 and result.duplicated == 0, result.details
    assert result.stored == result.sent


def test_a_worker_exits_without_committing_when_the_broker_restarts_empty(pipeline_settings: Settings) -> None:
    result = restarts.run_empty(pipeline_settings, ScenarioSize(events=1_000))

    checks = result.checks
    assert checks["the worker exits non-zero on an empty broker"], result.details
    assert checks["nothing committed to the empty broker"], result.details
    assert result.lost == 0 and result.duplicated == 0, result.details
