"""The steps that turn a trained PyTorch classifier into a shipped model folder, and measure it.

``finpulse model train|distill|quantize|calibrate|eval|card`` are thin wrappers over these functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from finpulse.models.artifact import (
    GPU_ONNX,
    ModelMetadata,
    oversized_files,
    read_metadata,
    write_metadata,
)
from finpulse.models.benchmark import cpu_description
from finpulse.models.calibration import expected_calibration_error, fit_temperature, softmax
from finpulse.models.data import LabelledTexts, file_sha256
from finpulse.models.evaluation import EvalReport, evaluate
from finpulse.models.exceptions import ArtifactError
from finpulse.models.scorer import BatchScorer
from finpulse.models.training import DataConfig
from finpulse.models.weights import copy_tokenizer, load_classifier, save_classifier_fp16

if TYPE_CHECKING:
    from transformers import PreTrainedModel

EVAL_CHUNK = 512


def build_artifact(
    model: PreTrainedModel,
    out_dir: Path,
    *,
    version: str,
    kind: str,
    tokenizer_dir: Path,
    max_length: int,
    data: DataConfig,
    dev: LabelledTexts,
    training: dict[str, Any],
    base_model: str,
    teacher: str | None = None,
    gpu: bool = True,
    console: Console,
) -> ModelMetadata:
    """Write a complete model folder: fp16 PyTorch shards, tokenizer, ONNX artifacts, calibrated metadata."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_classifier_fp16(model, out_dir)
    copy_tokenizer(tokenizer_dir, out_dir)
    metadata = ModelMetadata(
        version=version,
        kind=kind,
        max_length=max_length,
        base_model=base_model,
        teacher=teacher,
        training_data_sha256=file_sha256(data.train_file),
        training={"data": _data_dict(data), **training},
        architecture=architecture_of(model),
    )
    write_metadata(out_dir, metadata)
    export_artifacts(out_dir, gpu=gpu, console=console)
    return calibrate_artifact(out_dir, dev, console=console)


def export_artifacts(model_dir: Path, *, gpu: bool, console: Console) -> list[Path]:
    """(Re)write the ONNX files from the folder's shipped fp16 weights, so what ships is what was exported."""
    from finpulse.models.export import INT8_QUANTIZATION, write_onnx_artifacts

    model = load_classifier(model_dir, attn_implementation="eager")
    with console.status(f"exporting {model_dir.name} to ONNX (int8{' + fp16 GPU' if gpu else ''})"):
        written = write_onnx_artifacts(model, model_dir, gpu=gpu)
    for path in oversized_files(model_dir):
        if path.name == GPU_ONNX:
            # A 6-layer fp16 graph is ~45 MB: over the repository limit, and GPUs run the student anyway.
            console.log(f"[yellow]{path.name} is {path.stat().st_size / 2**20:.1f} MiB, over 40 MB: not kept")
            path.unlink()
            written.remove(path)
        else:
            raise ArtifactError(f"{path} is {path.stat().st_size / 2**20:.1f} MiB, over the 40 MB file limit")
    for path in written:
        console.log(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB)")
    metadata = read_metadata(model_dir)
    write_metadata(model_dir, metadata.with_updates(training={**metadata.training, "int8": INT8_QUANTIZATION}))
    return written


def calibrate_artifact(model_dir: Path, dev: LabelledTexts, *, console: Console) -> ModelMetadata:
    """Fit the temperature of the CPU artifact on the dev split and record dev metrics before and after."""
    scorer = BatchScorer.load(model_dir, prefer_gpu=False)
    logits = _chunked_logits(scorer, dev.texts, console, f"dev logits {model_dir.name}")
    temperature = fit_temperature(logits, dev.labels)
    raw = softmax(logits)
    report = evaluate(dev.labels, softmax(logits, temperature))
    metadata = scorer.metadata.with_updates(temperature=temperature).with_metrics(
        "dev",
        {
            "n": report.n,
            "accuracy": report.accuracy,
            "macro_f1": report.macro_f1,
            "ece": report.ece,
            "ece_uncalibrated": expected_calibration_error(raw, dev.labels),
            "cpu": cpu_description(),
        },
    )
    write_metadata(model_dir, metadata)
    console.log(
        f"temperature {temperature:.3f}: dev ECE {metadata.metrics['dev']['ece_uncalibrated']:.4f} -> "
        f"{report.ece:.4f}, dev acc {report.accuracy:.4f}, macro-F1 {report.macro_f1:.4f}"
    )
    return metadata


def evaluate_artifact(
    model_dir: Path,
    data: LabelledTexts,
    *,
    console: Console,
    threads: int | None = None,
    prefer_gpu: bool = True,
) -> EvalReport:
    """Score ``data`` with the folder's BatchScorer (calibrated) and compare with its labels."""
    scorer = BatchScorer.load(model_dir, threads=threads, prefer_gpu=prefer_gpu)
    logits = _chunked_logits(scorer, data.texts, console, f"evaluating {scorer.version}")
    return evaluate(data.labels, softmax(logits, scorer.temperature))


def evaluation_record(report: EvalReport) -> dict[str, Any]:
    """What a folder's metadata keeps of an evaluation: the report and the CPU that computed it."""
    return {**report.to_dict(), "cpu": cpu_description()}


def dev_split_of(model_dir: Path, train_file: Path | None = None) -> LabelledTexts:
    """The dev split a folder was trained against, re-carved from the recorded data settings."""
    recorded = dict(read_metadata(model_dir).training.get("data", {}))
    if train_file is not None:
        recorded["train_file"] = train_file
    if "train_file" not in recorded:
        raise ArtifactError(f"{model_dir}: metadata records no training file; pass one")
    recorded["train_file"] = Path(recorded["train_file"])
    return DataConfig(**recorded).load()[1]


def architecture_of(model: PreTrainedModel) -> dict[str, Any]:
    config = model.config
    return {
        "model_type": config.model_type,
        "layers": config.num_hidden_layers,
        "hidden_size": config.hidden_size,
        "heads": config.num_attention_heads,
        "parameters": int(sum(p.numel() for p in model.parameters())),
    }


def _chunked_logits(scorer: BatchScorer, texts: Sequence[str], console: Console, description: str) -> np.ndarray:
    chunks = [texts[i : i + EVAL_CHUNK] for i in range(0, len(texts), EVAL_CHUNK)]
    parts: list[np.ndarray] = []
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        for chunk in progress.track(chunks, description=description):
            parts.append(scorer.logits(chunk))
    return np.concatenate(parts) if parts else np.zeros((0, 3), dtype=np.float32)


def _data_dict(data: DataConfig) -> dict[str, Any]:
    return {
        "train_file": str(data.train_file),
        "text_col": data.text_col,
        "label_col": data.label_col,
        "dev_fraction": data.dev_fraction,
        "dev_seed": data.dev_seed,
        "limit_rows": data.limit_rows,
    }
