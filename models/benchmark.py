"""``finpulse model bench``: teacher and student, PyTorch and ONNX Runtime, on the same texts and batches.

Every entry tokenizes and infers the same length-bucketed batches (sorted by token length, batch 64), so
the ratios between entries measure the models and runtimes alone.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from finpulse.models.artifact import read_metadata
from finpulse.models.scorer import BatchScorer
from finpulse.models.tokenization import encode, length_buckets, load_tokenizer

BENCH_BATCH = 64
CPUINFO = Path("/proc/cpuinfo")


@dataclass(frozen=True)
class RunTiming:
    model: str
    runtime: str
    seq_per_s: float
    p50_ms: float
    p99_ms: float
    batches: int


@dataclass(frozen=True)
class ModelBench:
    texts: int
    batch_size: int
    threads: int
    cpu: str
    teacher_fp32: RunTiming
    student_fp32: RunTiming
    student_int8: RunTiming
    student_fp16_gpu: RunTiming | None
    speedup_student_int8_vs_teacher_fp32: float
    speedup_student_fp32_vs_teacher_fp32: float
    speedup_student_fp16_gpu_vs_teacher_fp32: float | None

    def to_dict(self) -> dict[str, Any]:
        result = asdict(self)
        if self.student_fp16_gpu is None:
            del result["student_fp16_gpu"], result["speedup_student_fp16_gpu_vs_teacher_fp32"]
        return result


def cpu_description(cpuinfo: Path = CPUINFO) -> str:
    """The CPU's model name and its int8 instructions, e.g. ``AMD EPYC 7763 64-Core Processor (AVX2, no VNNI)``.

    ONNX Runtime picks its int8 matrix kernels by instruction set (AVX2, AVX-512 VNNI, AMX), so figures
    measured on an int8 graph say which kind of CPU computed them.
    """
    try:
        first_cpu = cpuinfo.read_text(encoding="utf-8").split("\n\n")[0]
    except OSError:
        return platform.processor() or platform.machine() or "unknown CPU"
    fields = dict(line.split(":", 1) for line in first_cpu.splitlines() if ":" in line)
    fields = {name.strip(): value.strip() for name, value in fields.items()}
    flags = set(fields.get("flags", "").split())
    if "avx512_vnni" in flags:
        int8 = "AVX-512 VNNI"
    elif "avx_vnni" in flags:
        int8 = "AVX-VNNI"
    elif "avx2" in flags:
        int8 = "AVX2, no VNNI"
    else:
        int8 = "no AVX2"
    if "amx_int8" in flags:
        int8 += ", AMX-INT8"
    return f"{fields.get('model name', platform.machine() or 'unknown CPU')} ({int8})"


def same_batches(model_dir: Path, texts: Sequence[str], batch_size: int = BENCH_BATCH) -> list[list[str]]:
    """Texts grouped into batches of similar token length, as every entry of the bench sees them."""
    tokenizer = load_tokenizer(model_dir, read_metadata(model_dir).max_length)
    lengths = np.array([len(ids) for ids in encode(tokenizer, texts)])
    return [[texts[i] for i in bucket] for bucket in length_buckets(lengths, batch_size)]


def time_batches(name: str, runtime: str, run: Callable[[list[str]], object], batches: list[list[str]]) -> RunTiming:
    for batch in batches[:: max(1, len(batches) // 4)]:
        run(batch)  # warm-up over a spread of lengths: allocator and kernel selection
    latencies = []
    for batch in batches:
        started = time.perf_counter()
        run(batch)
        latencies.append(time.perf_counter() - started)
    total = sum(len(b) for b in batches)
    return RunTiming(
        model=name,
        runtime=runtime,
        seq_per_s=total / sum(latencies),
        p50_ms=float(np.percentile(latencies, 50) * 1e3),
        p99_ms=float(np.percentile(latencies, 99) * 1e3),
        batches=len(batches),
    )


def pytorch_runner(model_dir: Path, threads: int) -> Callable[[list[str]], object]:
    """Tokenizer + model as a transformers user runs them: fp32, eager, ``inference_mode``."""
    import torch

    from finpulse.models.tokenization import pad_bucket
    from finpulse.models.training import to_torch
    from finpulse.models.weights import load_classifier

    torch.set_num_threads(threads)
    model = load_classifier(model_dir)
    tokenizer = load_tokenizer(model_dir, read_metadata(model_dir).max_length)

    def run(batch: list[str]) -> object:
        token_ids = encode(tokenizer, batch)
        input_ids, attention_mask = to_torch(pad_bucket(token_ids, np.arange(len(batch))))
        with torch.inference_mode():
            return model(input_ids=input_ids, attention_mask=attention_mask).logits

    return run


def bench_models(
    teacher_dir: Path,
    student_dir: Path,
    texts: Sequence[str],
    *,
    threads: int = 2,
    batch_size: int = BENCH_BATCH,
) -> ModelBench:
    batches = same_batches(student_dir, texts, batch_size)
    teacher_name, student_name = read_metadata(teacher_dir).version, read_metadata(student_dir).version
    teacher = time_batches(teacher_name, "pytorch fp32", pytorch_runner(teacher_dir, threads), batches)
    student_fp32 = time_batches(student_name, "pytorch fp32", pytorch_runner(student_dir, threads), batches)
    cpu = BatchScorer.load(student_dir, threads=threads, prefer_gpu=False, bucket_size=batch_size)
    student_int8 = time_batches(student_name, "onnxruntime int8 CPU", cpu.score, batches)
    gpu = BatchScorer.load(student_dir, prefer_gpu=True, bucket_size=batch_size)
    student_gpu = (
        time_batches(student_name, f"onnxruntime fp16 {gpu.providers[0]}", gpu.score, batches) if gpu.on_gpu else None
    )
    return ModelBench(
        texts=len(texts),
        batch_size=batch_size,
        threads=threads,
        cpu=cpu_description(),
        teacher_fp32=teacher,
        student_fp32=student_fp32,
        student_int8=student_int8,
        student_fp16_gpu=student_gpu,
        speedup_student_int8_vs_teacher_fp32=student_int8.seq_per_s / teacher.seq_per_s,
        speedup_student_fp32_vs_teacher_fp32=student_fp32.seq_per_s / teacher.seq_per_s,
        speedup_student_fp16_gpu_vs_teacher_fp32=(
            student_gpu.seq_per_s / teacher.seq_per_s if student_gpu is not None else None
        ),
    )
