"""The shipped model folder: complete, small, agreeing with its PyTorch weights and with its card."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from finpulse.models import DEFAULT_MODEL_DIR, SHIPPED_DIR, BatchScorer
from finpulse.models.artifact import MAX_FILE_BYTES, read_metadata
from finpulse.models.data import DEFAULT_DATA_ROOT, load_labelled
from finpulse.models.toolchain import dev_split_of

pytestmark = [pytest.mark.slow, pytest.mark.integration]

SHIPPED = sorted(path.parent for path in SHIPPED_DIR.glob("*/metadata.json"))


def test_the_default_is_a_shipped_student() -> None:
    assert DEFAULT_MODEL_DIR in SHIPPED
    metadata = read_metadata(DEFAULT_MODEL_DIR)
    assert metadata.kind == "student" and metadata.architecture["layers"] <= 3


@pytest.mark.parametrize("model_dir", SHIPPED, ids=lambda path: path.name)
def test_shipped_folder_is_complete_and_every_file_is_small(model_dir: Path) -> None:
    metadata = read_metadata(model_dir)
    assert metadata.version == model_dir.name
    for name in ("model.int8.onnx", "tokenizer.json", "README.md", "pytorch/config.json"):
        assert (model_dir / name).is_file(), name
    assert all(p.stat().st_size <= MAX_FILE_BYTES for p in model_dir.rglob("*") if p.is_file())


def test_scoring_imports_neither_torch_nor_transformers() -> None:
    code = (
        "import sys; from finpulse.models import DEFAULT_MODEL_DIR, BatchScorer; "
        "s = BatchScorer.load(DEFAULT_MODEL_DIR, threads=1); "
        "print(s.score(['$AAPL beats estimates']).labels[0]); "
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'heavy import'"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() in {"bearish", "bullish", "neutral"}


@pytest.mark.parametrize("model_dir", SHIPPED, ids=lambda path: path.name)
def test_int8_graph_agrees_with_pytorch_on_the_dev_split(model_dir: Path) -> None:
    from finpulse.models.tokenization import encode, load_tokenizer
    from finpulse.models.training import predict_logits
    from finpulse.models.weights import load_classifier

    dev = dev_split_of(model_dir, DEFAULT_DATA_ROOT / "train.csv")
    metadata = read_metadata(model_dir)
    token_ids = encode(load_tokenizer(model_dir, metadata.max_length), dev.texts)
    reference = predict_logits(load_classifier(model_dir), token_ids).argmax(axis=1)
    onnx = BatchScorer.load(model_dir, prefer_gpu=False).logits(dev.texts).argmax(axis=1)
    # Issue 4 holds the shipped student to 99 %; dynamic int8 error grows with depth, and the 6-layer
    # teacher (measured 98.6 % with per-channel scales) only serves as the bench's reference, held to 98 %.
    required = 0.99 if metadata.kind == "student" else 0.98
    assert np.mean(onnx == reference) >= required


# How far a card's valid.csv figures may move on another x86 CPU. The int8 weights are 7-bit, so AVX2
# (int16 pair sums) and AVX-512 VNNI / AMX (int32) compute the same integer products; what still differs
# is the fp32 work around them (attention, softmax, LayerNorm, GELU), whose rounding can only flip a text
# that sits on a class boundary. Measured: the 1- and 2-layer students label all 2,388 texts alike on an
# AVX-512 VNNI + AMX Xeon and on an emulated Zen 3 (qemu-user -cpu EPYC-Milan: AVX2, no VNNI), with
# probabilities within 0.004 (the 6-layer teacher, on the first 1,024 texts: alike, within 0.06), and the
# 1-layer card's figures are bit-identical on a real Zen 3 and the Xeon. 3e-3 (7 texts of accuracy)
# leaves room for near-ties on other CPUs.
CPU_TOLERANCE = 3e-3


@pytest.mark.parametrize("model_dir", SHIPPED, ids=lambda path: path.name)
def test_card_metrics_are_what_eval_measures_now(model_dir: Path) -> None:
    from rich.console import Console

    from finpulse.models.toolchain import evaluate_artifact

    recorded = read_metadata(model_dir).metrics["valid"]
    valid = load_labelled(DEFAULT_DATA_ROOT / "valid.csv")
    # Measured as `finpulse model eval`/`card` measure (same chunks): dynamic int8 quantizes a batch's
    # activations with one scale, so other batch boundaries alone would move a few labels.
    measured = evaluate_artifact(model_dir, valid, console=Console(stderr=True, quiet=True), prefer_gpu=False)
    assert measured.n == recorded["n"]
    assert measured.accuracy == pytest.approx(recorded["accuracy"], abs=CPU_TOLERANCE)
    assert measured.macro_f1 == pytest.approx(recorded["macro_f1"], abs=CPU_TOLERANCE)
    card = (model_dir / "README.md").read_text(encoding="utf-8")
    assert f"| accuracy | {recorded['accuracy']:.4f} |" in card
    assert f"measured on {recorded['cpu']}" in card


@pytest.mark.parametrize("model_dir", SHIPPED, ids=lambda path: path.name)
def test_int8_weights_are_7_bit(model_dir: Path) -> None:
    """8-bit weights overflow the int16 pair sums of AVX2 kernels, so scores would depend on the CPU."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(model_dir / "model.int8.onnx")).graph
    weights = [numpy_helper.to_array(t) for t in graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert weights, "no int8 weights: not a quantized graph"
    assert max(int(np.abs(w.astype(np.int16)).max()) for w in weights) <= 64
    assert read_metadata(model_dir).training["int8"]["reduce_range"] is True
