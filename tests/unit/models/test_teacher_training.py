"""The MPNet teacher's training path on a tiny random-initialised MPNet: end to end, and stop-then-resume.

The base is a 2-layer MPNet with hidden size 32 and a WordPiece vocabulary trained on the test's own texts,
laid out like the unpacked all-mpnet-base-v2 folder (config.json, model.safetensors, tokenizer.json with
MPNet's special-token ids), so the real code path runs in seconds and never needs the 438 MB weights.
"""

from __future__ import annotations

import csv
import io
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from rich.console import Console
from typer.testing import CliRunner

from finpulse.cli.model import model_app
from finpulse.models.checkpoint import STATE_FILE, CheckpointError, Checkpoints
from finpulse.models.evaluation import EvalReport, evaluate
from finpulse.models.labels import LABELS
from finpulse.models.teacher import EVAL_FILE, METRICS_FILE
from finpulse.models.tokenization import encode, load_tokenizer, pad_bucket
from finpulse.models.training import FitConfig, fit, predict_logits, to_torch
from finpulse.models.weights import load_classifier

if TYPE_CHECKING:
    import torch

pytestmark = pytest.mark.slow

WORDS = {
    0: ["plunge", "miss", "downgrade", "lawsuit", "falls", "cut"],
    1: ["surge", "beat", "upgrade", "record", "rallies", "raise"],
    2: ["schedules", "announces", "meeting", "files", "reports", "hosts"],
}
TICKERS = ["$AAPL", "$TSLA", "$NVDA", "$AMZN", "$MSFT", "$JPM"]


def synthetic_rows(count: int, seed: int) -> list[tuple[str, int]]:
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        label = i % 3
        words = rng.sample(WORDS[label], 2) + rng.sample(WORDS[(label + 1) % 3], rng.randint(0, 1))
        rows.append((f"{rng.choice(TICKERS)} {' '.join(words)} after the quarter {i}", label))
    return rows


def write_csv(path: Path, rows: list[tuple[str, int]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def tiny_mpnet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer MPNet folder with a WordPiece tokenizer using MPNet's ids (<s>=0, <pad>=1, </s>=2)."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import MPNetConfig, MPNetModel

    folder = tmp_path_factory.mktemp("bases") / "tiny-mpnet"
    tokenizer = Tokenizer(models.WordPiece(unk_token="<unk>"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    special = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    trainer = trainers.WordPieceTrainer(vocab_size=300, special_tokens=special)
    tokenizer.train_from_iterator([text for text, _ in synthetic_rows(200, seed=1)], trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    config = MPNetConfig(
        vocab_size=tokenizer.get_vocab_size(),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=72,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
    )
    torch.manual_seed(0)
    MPNetModel(config).save_pretrained(folder)
    tokenizer.save(str(folder / "tokenizer.json"))
    return folder


@pytest.fixture(scope="module")
def data_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("data")
    return write_csv(folder / "train.csv", synthetic_rows(48, seed=2)), write_csv(
        folder / "valid.csv", synthetic_rows(24, seed=3)
    )


def invoke_teacher(*args: str) -> dict:
    result = CliRunner().invoke(model_app, ["teacher", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_teacher_command_trains_checkpoints_saves_fp32_and_evaluates(
    tiny_mpnet: Path, data_files: tuple[Path, Path], tmp_path: Path
) -> None:
    train_csv, valid_csv = data_files
    out = tmp_path / "teachers" / "tiny"
    args = ["--data", str(train_csv), "--eval-data", str(valid_csv), "--base-model", str(tiny_mpnet)]
    args += ["--out", str(out), "--checkpoint-every", "1", "--json"]
    document = invoke_teacher(*args)

    assert document["model"] == str(out) and document["n"] == 24
    assert {"accuracy", "macro_f1", "ece", "per_class", "confusion"} <= document.keys()
    assert set(document["per_class"]) == set(LABELS)
    assert json.loads((out / EVAL_FILE).read_text()) == document
    metrics = json.loads((out / METRICS_FILE).read_text())
    assert metrics["version"] == "mpnet-finsent-v1" and metrics["base"] == "all-mpnet-base-v2"
    assert metrics["recipe"]["fit"]["learning_rate"] == 3e-5 and metrics["recipe"]["fit"]["epochs"] == 2
    assert [record["epoch"] for record in metrics["history"]] == [1, 2]
    assert metrics["temperature"] > 0 and metrics["dev"]["n"] == 6  # 10 % of each class of 48 rows
    assert {"dev_macro_f1", "dev_accuracy", "train_loss"} <= metrics["history"][0].keys()
    assert metrics["valid"]["accuracy"] == document["accuracy"]
    assert not (out / "checkpoint").exists()  # removed once the final weights are written

    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), "pt") as weights:
        assert {str(weights.get_slice(key).get_dtype()) for key in weights.keys()} == {"F32"}
    reloaded = load_classifier(out)
    assert type(reloaded).__name__ == "MPNetForSequenceClassification"
    assert (out / "tokenizer.json").is_file()

    # A finished run is not repeated: the same document comes back and nothing is rewritten.
    weights_mtime = (out / "model.safetensors").stat().st_mtime_ns
    assert invoke_teacher(*args) == document
    assert (out / "model.safetensors").stat().st_mtime_ns == weights_mtime


class Killed(Exception):
    """Stands in for a process killed between two training steps."""


@dataclass
class FitRun:
    final: dict[str, np.ndarray]  # the weights fit() leaves (the best dev epoch's)
    epoch_ends: list[dict[str, np.ndarray]]  # the weights at each epoch's end reached by this process
    dev_f1: list[float]
    calls: int  # training steps this process took


def run_fit(base: Path, train_csv: Path, folder: Path, *, kill_at_call: int | None = None) -> FitRun:
    """A 2-epoch, 12-step fit of the tiny MPNet checkpointing every 2 steps; ``kill_at_call`` aborts it there."""
    import torch
    import torch.nn.functional as F

    from finpulse.models.calibration import softmax
    from finpulse.models.data import load_labelled

    data = load_labelled(train_csv)
    dev_rows = np.arange(len(data)) % 8 == 0
    train, dev = data.subset(np.flatnonzero(~dev_rows)), data.subset(np.flatnonzero(dev_rows))
    tokenizer = load_tokenizer(base, 32)
    train_ids, dev_ids = encode(tokenizer, train.texts), encode(tokenizer, dev.texts)
    torch.manual_seed(5)
    model = load_classifier(base)  # the head is initialised from the seed: the same model every run
    labels = torch.from_numpy(train.labels)
    calls = 0
    epoch_ends: list[dict[str, np.ndarray]] = []

    def batch_loss(indices: np.ndarray) -> torch.Tensor:
        nonlocal calls
        calls += 1
        if calls == kill_at_call:
            raise Killed
        input_ids, attention_mask = to_torch(pad_bucket(train_ids, indices, pad_id=1))
        return F.cross_entropy(model(input_ids=input_ids, attention_mask=attention_mask).logits, labels[indices])

    def dev_score() -> EvalReport:
        epoch_ends.append(weights_of(model))
        return evaluate(dev.labels, softmax(predict_logits(model, dev_ids)))

    history = fit(
        model,
        lengths=np.fromiter((len(ids) for ids in train_ids), dtype=np.int64),
        batch_loss=batch_loss,
        dev_score=dev_score,
        config=FitConfig(epochs=2, learning_rate=2e-3, batch_size=8, warmup_ratio=0.06, seed=7, threads=2),
        console=Console(file=io.StringIO()),
        description="tiny",
        checkpoints=Checkpoints(folder, every_steps=2),
        log_every=1,
    )
    return FitRun(weights_of(model), epoch_ends, [record.dev_macro_f1 for record in history], calls)


def weights_of(model: torch.nn.Module) -> dict[str, np.ndarray]:
    return {name: tensor.detach().numpy().copy() for name, tensor in model.state_dict().items()}


def assert_same_weights(expected: dict[str, np.ndarray], actual: dict[str, np.ndarray]) -> None:
    assert expected.keys() == actual.keys()
    for name, tensor in expected.items():
        assert np.array_equal(tensor, actual[name]), name


@pytest.fixture(scope="module")
def uninterrupted(tiny_mpnet: Path, data_files: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> FitRun:
    return run_fit(tiny_mpnet, data_files[0], tmp_path_factory.mktemp("uninterrupted"))


@pytest.mark.parametrize("kill_at_call", [6, 11], ids=["mid-epoch-1", "mid-epoch-2"])
def test_a_run_killed_and_resumed_ends_with_the_weights_of_an_uninterrupted_run(
    tiny_mpnet: Path, data_files: tuple[Path, Path], tmp_path: Path, uninterrupted: FitRun, kill_at_call: int
) -> None:
    train_csv, _ = data_files
    assert uninterrupted.calls == 12 and len(uninterrupted.epoch_ends) == 2  # 42 rows, batches of 8, 2 epochs

    with pytest.raises(Killed):
        run_fit(tiny_mpnet, train_csv, tmp_path / "resumed", kill_at_call=kill_at_call)
    assert (tmp_path / "resumed" / STATE_FILE).is_file()
    resumed = run_fit(tiny_mpnet, train_csv, tmp_path / "resumed")

    last_checkpoint = (kill_at_call - 1) // 2 * 2  # every 2 steps
    assert resumed.calls == uninterrupted.calls - last_checkpoint  # it picked up there, not from the start
    assert resumed.dev_f1 == uninterrupted.dev_f1
    # Every epoch end the resumed process reached, and the kept (best dev) weights, are bit for bit the same.
    assert resumed.epoch_ends
    for expected, actual in zip(uninterrupted.epoch_ends[-len(resumed.epoch_ends) :], resumed.epoch_ends, strict=True):
        assert_same_weights(expected, actual)
    assert_same_weights(uninterrupted.final, resumed.final)


def test_a_checkpoint_of_other_settings_is_refused(
    tiny_mpnet: Path, data_files: tuple[Path, Path], tmp_path: Path
) -> None:
    import torch

    train_csv, _ = data_files
    with pytest.raises(Killed):
        run_fit(tiny_mpnet, train_csv, tmp_path / "run", kill_at_call=4)
    model = load_classifier(tiny_mpnet)
    optimizer = torch.optim.AdamW(model.parameters())
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    with pytest.raises(CheckpointError, match="other settings or data"):
        Checkpoints(tmp_path / "run").load(model, optimizer, schedule, fingerprint="another-run")
