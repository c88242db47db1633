"""Runs the fault scenarios by name; each lives in its own module, imported only when it runs."""

from __future__ import annotations

import importlib
import importlib.util
import logging
import time
from collections.abc import Callable, Sequence

from finpulse.chaos.result import ChaosResult, ScenarioSize
from finpulse.settings import Settings

log = logging.getLogger("finpulse.chaos")

# name -> module exposing run(settings, size) -> ChaosResult
_MODULES = {
    "kill-9": "finpulse.chaos.kill",
    "two-workers": "finpulse.chaos.rebalance",
    "clickhouse-outage": "finpulse.chaos.clickhouse_outage",
    "clickhouse-gives-up": "finpulse.chaos.clickhouse_gives_up",
    "broker-restart": "finpulse.chaos.broker",
    "poison-message": "finpulse.chaos.poison",
    "hostile-inputs": "finpulse.chaos.hostile_inputs",
    "sigterm-mid-batch": "finpulse.chaos.sigterm",
}


def available_scenarios() -> list[str]:
    """The scenarios whose module is installed, in the order they run."""
    return [name for name, module in _MODULES.items() if importlib.util.find_spec(module) is not None]


def run_scenarios(
    names: Sequence[str] | None,
    size: ScenarioSize,
    settings: Settings,
    *,
    on_result: Callable[[ChaosResult], None] | None = None,
) -> list[ChaosResult]:
    """Run the named scenarios (all available ones when None), one after the other."""
    available = available_scenarios()
    chosen = list(names) if names else available
    unknown = [name for name in chosen if name not in available]
    if unknown:
        raise ValueError(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(available)}")
    results = []
    for name in chosen:
        started = time.monotonic()
        log.info("chaos: %s", name)
        result = importlib.import_module(_MODULES[name]).run(settings, size)
        result.details.setdefault("scenario_s", round(time.monotonic() - started, 1))
        log.info("chaos: %s %s", name, "ok" if result.ok else f"FAILED {result.failed_checks}")
        results.append(result)
        if on_result:
            on_result(result)
    return results
