"""The model card (``README.md`` of a model folder), rendered from its ``metadata.json``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from finpulse.models.artifact import CARD_FILE, ModelMetadata, read_metadata
from finpulse.models.labels import LABELS


def render_card(model_dir: Path) -> str:
    metadata = read_metadata(model_dir)
    sections = [
        _header(metadata),
        _quantization(metadata),
        _data(metadata),
        _evaluation(metadata),
        _size(model_dir, metadata),
        _speed(metadata),
        _frontier(metadata),
        _reproduce(metadata),
    ]
    return "\n\n".join(section for section in sections if section) + "\n"


def write_card(model_dir: Path) -> Path:
    path = Path(model_dir) / CARD_FILE
    path.write_text(render_card(model_dir), encoding="utf-8")
    return path


def _header(m: ModelMetadata) -> str:
    arch = m.architecture
    what = (
        f"a {arch.get('layers', '?')}-layer student distilled from `{m.teacher}`"
        if m.kind == "student"
        else f"a {arch.get('layers', '?')}-layer teacher fine-tuned from {m.base_model}"
    )
    return (
        f"# {m.version}\n\n"
        f"Financial sentiment classifier for finpulse: {what}. Classes (index order): "
        f"{', '.join(f'`{i}` {name}' for i, name in enumerate(LABELS))}. Scored with "
        f"`finpulse.models.BatchScorer` (ONNX Runtime; int8 on CPU, fp16 on GPU when present); probabilities "
        f"are calibrated by temperature scaling (T = {m.temperature:.3f}). Created {m.created}."
    )


def _quantization(m: ModelMetadata) -> str:
    int8: dict[str, Any] | None = m.training.get("int8")
    if not int8:
        return ""
    scales = "per-channel" if int8.get("per_channel") else "per-tensor"
    if not int8.get("reduce_range"):
        return f"CPU artifact: dynamic int8 quantization, {scales} 8-bit weights."
    return (
        f"CPU artifact: dynamic int8 quantization, {scales} 7-bit weights (`reduce_range`), so CPUs with "
        "and without VNNI compute the same integer products (AVX2 kernels saturate int16 sums of 8-bit weights)."
    )


def _data(m: ModelMetadata) -> str:
    data = m.training.get("data", {})
    lines = [
        "## Data",
        "",
        f"- Training: `{Path(data.get('train_file', '?')).name}` of twitter-financial-news "
        f"(sha256 `{m.training_data_sha256[:16]}…`), minus a stratified dev split "
        f"({data.get('dev_fraction', '?')} of the rows, seed {data.get('dev_seed', '?')}).",
        "- The dev split chose the epoch/checkpoint and fitted the temperature.",
        "- `valid.csv` is the public test split: evaluated only, never trained or tuned on.",
    ]
    if data.get("limit_rows"):
        lines.append(f"- Trained on a sample of {data['limit_rows']} rows only (a test configuration).")
    if m.training.get("transfer"):
        lines.append(f"- Transfer text pseudo-labelled by the teacher: {m.training['transfer']}.")
    return "\n".join(lines)


def _evaluation(m: ModelMetadata) -> str:
    lines = ["## Evaluation"]
    valid = m.metrics.get("valid")
    if valid:
        lines += [
            "",
            f"On `valid.csv` ({valid['n']} texts), CPU int8 artifact, calibrated, measured on {_cpu(valid)}:",
            "",
            "| metric | value |",
            "| --- | --- |",
            f"| accuracy | {valid['accuracy']:.4f} |",
            f"| macro-F1 | {valid['macro_f1']:.4f} |",
            f"| ECE (15 bins) | {valid['ece']:.4f} |",
            "",
            "| class | precision | recall | F1 | support |",
            "| --- | --- | --- | --- | --- |",
        ]
        for name in LABELS:
            c = valid["per_class"][name]
            lines.append(f"| {name} | {c['precision']:.4f} | {c['recall']:.4f} | {c['f1']:.4f} | {c['support']} |")
        lines += ["", "Confusion (rows: true, columns: predicted):", "", "| | " + " | ".join(LABELS) + " |"]
        lines.append("| --- |" + " --- |" * len(LABELS))
        for true in LABELS:
            lines.append(f"| {true} | " + " | ".join(str(valid["confusion"][true][p]) for p in LABELS) + " |")
    dev = m.metrics.get("dev")
    if dev:
        measured_on = f", measured on {_cpu(dev)}" if not valid or _cpu(dev) != _cpu(valid) else ""
        lines += [
            "",
            f"Dev split ({dev['n']} texts{measured_on}): accuracy {dev['accuracy']:.4f}, "
            f"macro-F1 {dev['macro_f1']:.4f}, "
            f"ECE {dev['ece_uncalibrated']:.4f} before and {dev['ece']:.4f} after temperature scaling.",
        ]
    if m.metrics.get("teacher_valid"):
        t = m.metrics["teacher_valid"]
        lines += [
            "",
            f"Teacher `{m.teacher}` on `valid.csv`: accuracy {t['accuracy']:.4f}, "
            f"macro-F1 {t['macro_f1']:.4f} (student minus teacher: {valid['accuracy'] - t['accuracy']:+.4f} "
            f"accuracy, {valid['macro_f1'] - t['macro_f1']:+.4f} macro-F1)."
            if valid
            else "",
        ]
    return "\n".join(lines) if len(lines) > 1 else ""


def _cpu(measured: dict[str, Any]) -> str:
    return measured.get("cpu") or "an unrecorded CPU"


def _size(model_dir: Path, m: ModelMetadata) -> str:
    arch = m.architecture
    files = sorted(p for p in Path(model_dir).rglob("*") if p.is_file() and p.suffix in {".onnx", ".safetensors"})
    lines = [
        "## Size",
        "",
        f"{arch.get('layers', '?')} transformer layer{'' if arch.get('layers') == 1 else 's'}, "
        f"hidden size {arch.get('hidden_size', '?')}, "
        f"{arch.get('parameters', 0) / 1e6:.1f} M parameters.",
        "",
        "| file | MiB |",
        "| --- | --- |",
    ]
    lines += [f"| `{p.relative_to(model_dir)}` | {p.stat().st_size / 2**20:.1f} |" for p in files]
    return "\n".join(lines)


def _speed(m: ModelMetadata) -> str:
    bench: dict[str, Any] | None = m.metrics.get("bench")
    if not bench:
        return ""
    lines = [
        "## Speed",
        "",
        f"`finpulse model bench` on {_cpu(bench)}"
        f"{', ' + bench['hardware'] if bench.get('hardware') else ''}: "
        f"{bench['texts']} texts of `valid.csv`, length-bucketed batches of {bench['batch_size']}, "
        f"{bench['threads']} threads, one run.",
        "",
        "| entry | model | runtime | seq/s | p50 ms | p99 ms | × teacher |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    teacher_rate = bench["teacher_fp32"]["seq_per_s"]
    for key in ("teacher_fp32", "student_fp32", "student_int8", "student_fp16_gpu"):
        r = bench.get(key)
        if r:
            lines.append(
                f"| {key} | {r['model']} | {r['runtime']} | {r['seq_per_s']:,.0f} | {r['p50_ms']:.1f} | "
                f"{r['p99_ms']:.1f} | {r['seq_per_s'] / teacher_rate:.2f} |"
            )
    return "\n".join(lines)


def _frontier(m: ModelMetadata) -> str:
    rows: list[dict[str, Any]] | None = m.metrics.get("frontier")
    if not rows:
        return ""
    lines = [
        "## Layers × accuracy × speed",
        "",
        "Accuracy and macro-F1 on `valid.csv` (int8, calibrated); int8 seq/s and the ratio to the fp32 teacher",
        "from `finpulse model bench` on the CPU named under Speed (ratios within one run).",
        "",
        "| model | layers | accuracy | macro-F1 | int8 seq/s | × teacher fp32 |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| {r['model']} | {r['layers']} | {_number(r.get('accuracy'), '.4f')} | {_number(r.get('macro_f1'), '.4f')} "
        f"| {_number(r.get('seq_per_s'), ',.0f')} | {_number(r.get('speedup'), '.2f')} |"
        for r in rows
    ]
    notes = [r["note"] for r in rows if r.get("note")]
    return "\n".join(lines + ([""] + [f"- {note}" for note in notes] if notes else []))


def _number(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def _reproduce(m: ModelMetadata) -> str:
    commands: list[str] = m.training.get("commands", [])
    if not commands:
        return ""
    return "## Reproduce\n\n```bash\n" + "\n".join(commands) + "\n```"
