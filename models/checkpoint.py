"""Resumable training: one atomic checkpoint of weights, optimiser, schedule, RNGs and the loop's position.

Fine-tuning the 110M MPNet teacher takes about an hour of CPU; a run that is killed, or outlives the session
that started it, must pick up where it left off and end with the same weights an uninterrupted run would
have. So a checkpoint holds everything the next step depends on: model, AdamW and schedule state, the torch
RNG (dropout), the numpy bit-generator state at the start of the epoch in progress (its batch order is redrawn
from it, then the steps already taken are skipped), the losses and history so far, and the best dev epoch's
weights in a file of their own. Files are written to a temporary name and renamed, so a kill mid-write
leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from finpulse.models.exceptions import ModelError

if TYPE_CHECKING:
    import torch

STATE_FILE = "state.pt"
BEST_PREFIX = "best-epoch-"


class CheckpointError(ModelError):
    """A checkpoint exists but was written by a run with other settings or data."""


@dataclass
class LoopPosition:
    """Where the training loop stands; ``step`` steps of ``epoch`` (1-based) are done."""

    fingerprint: str  # of the settings and data that make the run what it is
    data_order_seed: int
    epoch: int = 1
    step: int = 0
    epoch_rng: dict[str, Any] = field(default_factory=dict)  # numpy bit-generator state at the epoch's start
    epoch_seconds: float = 0.0  # training time of this epoch before the current process
    losses: list[float] = field(default_factory=list)  # this epoch's losses so far
    history: list[dict[str, Any]] = field(default_factory=list)  # one EpochRecord dict per finished epoch
    best_f1: float = -1.0
    best_epoch: int | None = None


class Checkpoints:
    """The checkpoint folder of one run: ``state.pt`` plus ``best-epoch-N.pt`` (the best dev epoch's weights)."""

    def __init__(self, folder: Path, every_steps: int = 200) -> None:
        if every_steps < 1:
            raise ValueError(f"every_steps must be >= 1, got {every_steps}")
        self.folder = Path(folder)
        self.every_steps = every_steps

    def due(self, steps_done: int) -> bool:
        return steps_done % self.every_steps == 0

    def load(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        schedule: torch.optim.lr_scheduler.LRScheduler,
        fingerprint: str,
    ) -> LoopPosition | None:
        """Restore model, optimiser, schedule and torch RNG from the folder; ``None`` when there is none."""
        import torch

        path = self.folder / STATE_FILE
        if not path.is_file():
            return None
        saved = torch.load(path, map_location="cpu", weights_only=True)
        position = LoopPosition(**json.loads(saved["position"]))
        if position.fingerprint != fingerprint:
            raise CheckpointError(
                f"{path} was written by a run with other settings or data (fingerprint {position.fingerprint}, "
                f"this run {fingerprint}); delete {self.folder} to start over"
            )
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        schedule.load_state_dict(saved["schedule"])
        torch.set_rng_state(saved["torch_rng"])
        return position

    def save(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        schedule: torch.optim.lr_scheduler.LRScheduler,
        position: LoopPosition,
    ) -> Path:
        """Write ``state.pt`` atomically, then drop best-weight files the position no longer refers to."""
        import torch

        state = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "position": json.dumps(asdict(position)),
        }
        path = self._write(STATE_FILE, state)
        keep = self._best_name(position.best_epoch) if position.best_epoch is not None else None
        for stale in self.folder.glob(f"{BEST_PREFIX}*.pt"):
            if stale.name != keep:
                stale.unlink()
        return path

    def save_best(self, model: torch.nn.Module, epoch: int) -> Path:
        return self._write(self._best_name(epoch), model.state_dict())

    def load_best(self, epoch: int) -> dict[str, torch.Tensor]:
        import torch

        path = self.folder / self._best_name(epoch)
        if not path.is_file():
            raise CheckpointError(f"{path} is missing: the checkpoint refers to it; delete {self.folder}")
        return torch.load(path, map_location="cpu", weights_only=True)

    def clear(self) -> None:
        """Remove the folder's checkpoint files (after the final weights are written)."""
        for path in self.folder.glob("*.pt"):
            path.unlink()
        if self.folder.is_dir() and not any(self.folder.iterdir()):
            self.folder.rmdir()

    def _write(self, name: str, payload: object) -> Path:
        import torch

        self.folder.mkdir(parents=True, exist_ok=True)
        final = self.folder / name
        partial = self.folder / f".{name}.partial"
        with partial.open("wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, final)
        return final

    @staticmethod
    def _best_name(epoch: int) -> str:
        return f"{BEST_PREFIX}{epoch}.pt"
