"""What one fault scenario reports, and how big it runs.

Every scenario of ``finpulse chaos`` returns one ``ChaosResult``: the promise it checks is that an event
accepted by Kafka is either stored exactly once or sits in the dead-letter queue with a reason, so
``lost`` and ``duplicated`` must both be 0. Each scenario adds its own named ``checks`` (backpressure held,
the worker exited non-zero, the index agrees with SQL…); a row is ``ok`` only when all of them hold too.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from finpulse.chaos.accounting import Tally


@dataclass(frozen=True)
class ScenarioSize:
    """How much each scenario does; ``full()`` is what ``finpulse chaos`` runs, ``small()`` what tests run."""

    kill_cycles: int = 20
    events: int = 20_000
    hostile_inputs: int = 1_000
    throughput_passes: int = 5  # hostile-inputs: clean and mixed passes taken in turn, clean first and last
    outage_s: float = 60.0

    def __post_init__(self) -> None:
        if self.throughput_passes < 3 or self.throughput_passes % 2 == 0:
            raise ValueError(
                f"throughput_passes must be odd and at least 3 (clean, mixed, …, clean), got {self.throughput_passes}"
            )

    @classmethod
    def full(cls) -> ScenarioSize:
        return cls()

    @classmethod
    def small(cls) -> ScenarioSize:
        return cls(kill_cycles=3, events=3_000, hostile_inputs=200, throughput_passes=3, outage_s=8.0)


@dataclass(frozen=True)
class ChaosResult:
    scenario: str
    sent: int  # messages accepted by Kafka (valid and hostile)
    stored: int  # accepted messages whose event is in scored_events
    duplicated: int  # count() - uniqExact(event_id) in scored_events, plus the same for dlq_events
    dlq: int  # accepted messages found in dlq_events (by topic, partition, offset)
    lost: int  # accepted by Kafka, neither stored nor in the DLQ
    recover_s: float | None  # fault injected -> the pipeline is draining again (None when not applicable)
    details: dict[str, object] = field(default_factory=dict)  # scenario-specific figures (throughput, exits…)
    checks: dict[str, bool] = field(default_factory=dict)  # scenario-specific pass/fail, by what they check

    @classmethod
    def of(
        cls,
        scenario: str,
        tally: Tally,
        *,
        recover_s: float | None,
        details: dict[str, object],
        checks: dict[str, bool],
    ) -> ChaosResult:
        """A row from the accounting's ``Tally`` and the scenario's own figures and checks."""
        return cls(
            scenario=scenario,
            sent=tally.sent,
            stored=tally.stored,
            duplicated=tally.duplicated,
            dlq=tally.dlq,
            lost=tally.lost,
            recover_s=None if recover_s is None else round(recover_s, 2),
            details={**details, **tally.as_details()},
            checks=checks,
        )

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.duplicated == 0 and all(self.checks.values())

    @property
    def failed_checks(self) -> list[str]:
        return [name for name, passed in self.checks.items() if not passed]

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "ok": self.ok}
