"""A model version's folder: file names and ``metadata.json``.

Layout::

    <version>/model.int8.onnx      CPU artifact (dynamic int8)
    <version>/model.fp16.onnx      GPU artifact (fp16, fused attention), optional
    <version>/tokenizer.json       + small tokenizer files
    <version>/metadata.json        this module's ModelMetadata
    <version>/README.md            model card
    <version>/pytorch/             fp16 safetensors shards (<= 40 MB each), config.json, index
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from finpulse.models.exceptions import ArtifactError
from finpulse.models.labels import LABELS

METADATA_FILE = "metadata.json"
CPU_ONNX = "model.int8.onnx"
GPU_ONNX = "model.fp16.onnx"
CARD_FILE = "README.md"
MAX_FILE_BYTES = 40 * 1024 * 1024


@dataclass(frozen=True)
class ModelMetadata:
    """What a scorer, a card and a reader need to know about one model version."""

    version: str
    max_length: int
    labels: tuple[str, ...] = LABELS
    temperature: float = 1.0
    kind: str = "teacher"  # teacher | student
    base_model: str = ""
    teacher: str | None = None  # version of the teacher a student was distilled from
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    training_data_sha256: str = ""
    training: dict[str, Any] = field(default_factory=dict)
    architecture: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if tuple(self.labels) != LABELS:
            raise ArtifactError(f"model labels {list(self.labels)} differ from the project's {list(LABELS)}")
        if self.temperature <= 0:
            raise ArtifactError(f"temperature must be > 0, got {self.temperature}")
        if not self.version:
            raise ArtifactError("a model version needs a name")

    def with_updates(self, **changes: Any) -> ModelMetadata:
        return replace(self, **changes)

    def with_metrics(self, name: str, values: dict[str, Any]) -> ModelMetadata:
        return replace(self, metrics={**self.metrics, name: values})


def read_metadata(model_dir: Path) -> ModelMetadata:
    path = Path(model_dir) / METADATA_FILE
    if not path.is_file():
        raise ArtifactError(f"{model_dir}: no {METADATA_FILE} (not a finpulse model folder)")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        raw["labels"] = tuple(raw.get("labels", LABELS))
        return ModelMetadata(**raw)
    except (json.JSONDecodeError, TypeError) as err:
        raise ArtifactError(f"{path}: unreadable metadata ({err})") from err


def write_metadata(model_dir: Path, metadata: ModelMetadata) -> Path:
    path = Path(model_dir) / METADATA_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = asdict(metadata)
    payload["labels"] = list(metadata.labels)
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return path


def oversized_files(model_dir: Path) -> list[Path]:
    """Files above the repository's 40 MB limit (should be none in a shipped folder)."""
    return [p for p in Path(model_dir).rglob("*") if p.is_file() and p.stat().st_size > MAX_FILE_BYTES]
