"""Poison internal records on real components (Tansu, a Faust worker process, chDB, the real model).

Garbage on ``indexes.partials`` and a corrupt row in the ``opinion-index`` changelog are dead-lettered
with their reasons, the worker stays up (it crash-looped on them before), and valid events sent after
them are stored and indexed.
"""

from __future__ import annotations

import pytest

from finpulse.chaos import poison
from finpulse.chaos.result import ScenarioSize
from finpulse.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_poison_partials_and_a_corrupt_changelog_row_are_dead_lettered_and_the_worker_goes_on(
    pipeline_settings: Settings,
) -> None:
    result = poison.run(pipeline_settings, ScenarioSize(events=600))

    assert result.failed_checks == [], result.as_dict()
    poison_records = len(poison.POISON_PARTIALS) + 1  # and the corrupt changelog row
    assert len(result.details["dlq_reasons_published"]) == poison_records
    assert set(result.details["dlq_reasons_published"].values()) == {r for *_, r in poison.POISON_PARTIALS}
    assert result.dlq == poison_records, "every poison record has its dlq_events row"
    assert result.lost == 0 and result.duplicated == 0, result.details
    assert result.stored == result.sent - poison_records == 3 * 50, "every valid event, before and after, stored"
    assert result.details["valid_in_dlq"] == 0
    assert result.details["indexed"] == result.stored, "and counted by the index"
