"""ONNX export of a classifier; int8 dynamic quantization for CPU; fp16 with fused attention for GPU."""

from __future__ import annotations

import logging
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from finpulse.models.artifact import CPU_ONNX, GPU_ONNX

if TYPE_CHECKING:
    from transformers import PreTrainedModel

logger = logging.getLogger("finpulse.models")

OPSET = 17
INPUT_NAMES = ("input_ids", "attention_mask")
INT8_WEIGHTS = {"per_channel": True, "reduce_range": True}
INT8_QUANTIZATION = {"method": "onnxruntime quantize_dynamic", "weight_type": "QInt8", **INT8_WEIGHTS}
"""How ``model.int8.onnx`` was quantized, as recorded in a folder's metadata."""


def export_onnx(model: PreTrainedModel, path: Path, *, opset: int = OPSET) -> Path:
    """fp32 ONNX graph ``(input_ids, attention_mask) -> logits`` with dynamic batch and sequence axes."""
    import torch

    class LogitsOnly(torch.nn.Module):
        def __init__(self, inner: PreTrainedModel) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return self.inner(input_ids=input_ids, attention_mask=attention_mask).logits

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sample = torch.ones((2, 16), dtype=torch.int64)
    dynamic_axes = {name: {0: "batch", 1: "sequence"} for name in INPUT_NAMES} | {"logits": {0: "batch"}}
    # The TorchScript exporter keeps the BERT graph in the shape onnxruntime's fusion passes recognise;
    # the dynamo exporter would also need onnxscript.
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            LogitsOnly(model.float().eval()),
            (sample, sample),
            str(path),
            input_names=list(INPUT_NAMES),
            output_names=["logits"],
            dynamic_axes=dynamic_axes,
            opset_version=opset,
            dynamo=False,
        )
    return path


def quantize_int8(fp32_path: Path, int8_path: Path) -> Path:
    """Dynamic int8 quantization (weights int8, activations quantized per run): no calibration data needed.

    Per-channel weight scales: with one scale per tensor the teacher lost ~1.5 points of dev macro-F1 and
    agreed with PyTorch on 97.3 % of dev labels; per channel it loses ~0.5 and agrees on 98.6 %, same size.

    7-bit weights (``reduce_range``), so that every x86 CPU computes the same integers: without VNNI (AVX2)
    ONNX Runtime multiplies u8 activations by s8 weights with ``vpmaddubsw``, which adds each pair into a
    saturating int16; with 8-bit weights a pair reaches 2 x 255 x 127 = 64,770 and is clipped at 32,767,
    while VNNI and AMX accumulate in int32 and never clip. With |w| <= 64 a pair stays within 32,640, so
    both paths agree. Measured with 7-bit weights: the 1- and 2-layer students label all 2,388 texts of
    valid.csv alike on an AVX-512 VNNI Xeon and on an emulated Zen 3 (AVX2). On AVX2 the 1-layer student
    agreed with PyTorch on 98.95 % of dev labels with 8-bit weights and on 99.69 % with 7-bit ones, at the
    same speed.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(fp32_path), str(int8_path), weight_type=QuantType.QInt8, **INT8_WEIGHTS)
    return Path(int8_path)


def optimize_fp16_for_gpu(fp32_path: Path, fp16_path: Path, *, num_heads: int, hidden_size: int) -> Path:
    """Fuse attention/LayerNorm/GELU with onnxruntime's transformer optimizer, then cast weights to fp16.

    Inputs and outputs keep their types (int64 ids, fp32 logits), so the scorer feeds both artifacts alike.
    """
    from onnxruntime.transformers.optimizer import optimize_model

    previous = logging.root.manager.disable
    logging.disable(logging.INFO)  # the optimizer logs every pass at INFO on the root logger
    try:
        optimized = optimize_model(
            str(fp32_path), model_type="bert", num_heads=num_heads, hidden_size=hidden_size, opt_level=1
        )
        optimized.convert_float_to_float16(keep_io_types=True)
        optimized.save_model_to_file(str(fp16_path))
    finally:
        logging.disable(previous)
    logger.info("fp16 GPU artifact: fused ops %s", optimized.get_fused_operator_statistics())
    return Path(fp16_path)


def write_onnx_artifacts(model: PreTrainedModel, model_dir: Path, *, gpu: bool = True) -> list[Path]:
    """Write ``model.int8.onnx`` (and ``model.fp16.onnx`` when ``gpu``) into ``model_dir``.

    The fp32 graph is only an intermediate: at ~90 MB for MiniLM-L6 it is above the repository's file limit.
    """
    model_dir = Path(model_dir)
    written: list[Path] = []
    with tempfile.TemporaryDirectory(prefix="finpulse-export-") as tmp:
        fp32_path = export_onnx(model, Path(tmp) / "model.fp32.onnx")
        written.append(quantize_int8(fp32_path, model_dir / CPU_ONNX))
        if gpu:
            written.append(
                optimize_fp16_for_gpu(
                    fp32_path,
                    model_dir / GPU_ONNX,
                    num_heads=model.config.num_attention_heads,
                    hidden_size=model.config.hidden_size,
                )
            )
    return written
