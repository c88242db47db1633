"""The CPU named on a model card: its model name and the int8 instructions ONNX Runtime picks kernels by."""

from __future__ import annotations

from pathlib import Path

import pytest

from finpulse.models.benchmark import cpu_description

ZEN3_FLAGS = "fpu sse sse2 ssse3 sse4_1 sse4_2 avx fma avx2 bmi2 sha_ni"
SAPPHIRE_RAPIDS_FLAGS = f"{ZEN3_FLAGS} avx512f avx512bw avx512vl avx_vnni avx512_vnni amx_tile amx_int8"


def cpuinfo(tmp_path: Path, model: str, flags: str, processors: int = 2) -> Path:
    block = f"processor\t: {{n}}\nvendor_id\t: X\nmodel name\t: {model}\nflags\t\t: {flags}\n"
    path = tmp_path / "cpuinfo"
    path.write_text("\n".join(block.format(n=n) for n in range(processors)))
    return path


@pytest.mark.parametrize(
    ("model", "flags", "expected"),
    [
        ("AMD EPYC 7763 64-Core Processor", ZEN3_FLAGS, "AMD EPYC 7763 64-Core Processor (AVX2, no VNNI)"),
        ("Intel(R) Xeon(R) Processor", SAPPHIRE_RAPIDS_FLAGS, "Intel(R) Xeon(R) Processor (AVX-512 VNNI, AMX-INT8)"),
        ("Intel(R) Core(TM) i7-12700", f"{ZEN3_FLAGS} avx_vnni", "Intel(R) Core(TM) i7-12700 (AVX-VNNI)"),
        ("QEMU Virtual CPU", "fpu sse sse2", "QEMU Virtual CPU (no AVX2)"),
    ],
)
def test_model_name_and_int8_instructions(tmp_path: Path, model: str, flags: str, expected: str) -> None:
    assert cpu_description(cpuinfo(tmp_path, model, flags)) == expected


def test_without_proc_cpuinfo_it_still_names_something(tmp_path: Path) -> None:
    assert cpu_description(tmp_path / "missing")
