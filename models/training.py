"""Fine-tuning a sequence classifier (the teacher) with length-bucketed batches and class-weighted CE.

The loop (:func:`fit`) is shared with distillation: it takes a per-batch loss and a dev-split scorer, and
keeps the weights of the epoch with the best dev score. Long runs (the 110M MPNet teacher) pass a
:class:`~finpulse.models.checkpoint.Checkpoints` folder and resume from it bit for bit. ``valid.csv`` never
enters here.
"""

from __future__ import annotations

import collections
import copy
import datetime
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from finpulse.models.calibration import softmax
from finpulse.models.checkpoint import Checkpoints, LoopPosition
from finpulse.models.data import DEV_FRACTION, DEV_SEED, LabelledTexts, load_labelled, split_dev
from finpulse.models.evaluation import EvalReport, evaluate
from finpulse.models.labels import LABELS
from finpulse.models.tokenization import EncodedBatch, encode, length_buckets, load_tokenizer, pad_bucket
from finpulse.models.weights import default_base_model, load_classifier

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel

ClassWeighting = Literal["none", "sqrt_inverse", "inverse"]


@dataclass(frozen=True)
class FitConfig:
    """Optimiser and schedule of one training run."""

    epochs: int = 5
    learning_rate: float = 1e-4
    batch_size: int = 32
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    seed: int = 13
    threads: int = 2
    max_steps: int | None = None  # cut an epoch short (tiny test runs)

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if not 0 < self.learning_rate < 1:
            raise ValueError(f"learning_rate must be in (0, 1), got {self.learning_rate}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1 when set, got {self.max_steps}")


@dataclass(frozen=True)
class DataConfig:
    """Which labelled file trains the model and how its dev split is carved."""

    train_file: Path
    text_col: str = "text"
    label_col: str = "label"
    dev_fraction: float = DEV_FRACTION
    dev_seed: int = DEV_SEED
    limit_rows: int | None = None  # a deterministic sample of the file (tiny test runs)

    def __post_init__(self) -> None:
        if not 0 < self.dev_fraction < 1:
            raise ValueError(f"dev_fraction must be in (0, 1), got {self.dev_fraction}")
        if self.limit_rows is not None and self.limit_rows < 20:
            raise ValueError(f"limit_rows must be >= 20 when set, got {self.limit_rows}")

    def load(self) -> tuple[LabelledTexts, LabelledTexts]:
        """(train minus dev, dev)."""
        data = load_labelled(self.train_file, text_col=self.text_col, label_col=self.label_col)
        if self.limit_rows is not None and self.limit_rows < len(data):
            sample = np.random.default_rng(self.dev_seed).permutation(len(data))[: self.limit_rows]
            data = data.subset(np.sort(sample))
        return split_dev(data, fraction=self.dev_fraction, seed=self.dev_seed)


@dataclass(frozen=True)
class TeacherConfig:
    data: DataConfig
    fit: FitConfig = field(default_factory=FitConfig)
    base_model: Path = field(default_factory=default_base_model)
    max_length: int = 64
    class_weighting: ClassWeighting = "sqrt_inverse"

    def __post_init__(self) -> None:
        if not 8 <= self.max_length <= 512:
            raise ValueError(f"max_length must be in [8, 512], got {self.max_length}")
        if self.class_weighting not in ("none", "sqrt_inverse", "inverse"):
            raise ValueError(f"class_weighting must be none|sqrt_inverse|inverse, got {self.class_weighting!r}")
        if not (Path(self.base_model) / "config.json").is_file():
            raise ValueError(f"base_model {self.base_model} is not a Hugging Face model folder (no config.json)")

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(asdict(self))


@dataclass(frozen=True)
class EpochRecord:
    epoch: int
    train_loss: float
    dev_macro_f1: float
    dev_accuracy: float
    seconds: float


@dataclass
class TrainedClassifier:
    """A fine-tuned model (best dev epoch) and what packaging, calibration and the card need."""

    model: PreTrainedModel
    tokenizer_dir: Path
    max_length: int
    dev: LabelledTexts
    dev_report: EvalReport
    history: list[EpochRecord]


def class_weights(labels: np.ndarray, weighting: ClassWeighting) -> np.ndarray:
    """Per-class loss weights, mean 1: ``sqrt_inverse`` (1/sqrt(freq)) lifts the minority classes gently."""
    counts = np.bincount(labels, minlength=len(LABELS)).astype(np.float64)
    counts = np.maximum(counts, 1.0)
    if weighting == "none":
        weights = np.ones_like(counts)
    elif weighting == "sqrt_inverse":
        weights = 1.0 / np.sqrt(counts)
    else:
        weights = 1.0 / counts
    return (weights / weights.mean()).astype(np.float32)


def shuffled_length_batches(
    lengths: np.ndarray, batch_size: int, rng: np.random.Generator, pool_batches: int = 50
) -> list[np.ndarray]:
    """Random batches of similar-length texts: sort within random pools, then shuffle the batch order."""
    order = rng.permutation(len(lengths))
    pool = batch_size * pool_batches
    batches: list[np.ndarray] = []
    for start in range(0, len(order), pool):
        chunk = order[start : start + pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def pad_token_id(model: PreTrainedModel) -> int:
    """The id padding positions carry: 0 in BERT vocabularies, 1 in MPNet's (its position ids skip it)."""
    return int(model.config.pad_token_id or 0)


def to_torch(batch: EncodedBatch) -> tuple[torch.Tensor, torch.Tensor]:
    import torch

    return torch.from_numpy(batch.input_ids), torch.from_numpy(batch.attention_mask)


def predict_logits(model: PreTrainedModel, token_ids: Sequence[np.ndarray], batch_size: int = 64) -> np.ndarray:
    """Logits (n, classes) in input order, computed in length buckets."""
    import torch

    logits = np.zeros((len(token_ids), model.config.num_labels), dtype=np.float32)
    pad_id = pad_token_id(model)
    lengths = np.fromiter((len(ids) for ids in token_ids), dtype=np.int64, count=len(token_ids))
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for indices in length_buckets(lengths, batch_size):
            input_ids, attention_mask = to_torch(pad_bucket(token_ids, indices, pad_id))
            logits[indices] = model(input_ids=input_ids, attention_mask=attention_mask).logits.float().numpy()
    model.train(was_training)
    return logits


def fit(
    model: PreTrainedModel,
    *,
    lengths: np.ndarray,
    batch_loss: Callable[[np.ndarray], torch.Tensor],
    dev_score: Callable[[], EvalReport],
    config: FitConfig,
    console: Console,
    description: str,
    checkpoints: Checkpoints | None = None,
    log_every: int | None = None,
) -> list[EpochRecord]:
    """Train with AdamW + linear warmup/decay; afterwards ``model`` holds the best dev macro-F1 epoch.

    ``batch_loss(indices)`` runs the forward pass of the training rows ``indices`` and returns the loss.
    With ``checkpoints`` the run resumes from the folder's checkpoint if there is one, saves one every
    ``checkpoints.every_steps`` steps and at every epoch's end, and ends with the weights an uninterrupted
    run would have. ``log_every`` logs a line (loss, texts/s, ETA) every that many steps, for log files.
    """
    import torch
    from transformers import get_linear_schedule_with_warmup

    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    rng = np.random.default_rng(config.seed)
    steps_per_epoch = -(-len(lengths) // config.batch_size)
    if config.max_steps is not None:
        steps_per_epoch = min(steps_per_epoch, config.max_steps)
    total_steps = steps_per_epoch * config.epochs

    decay = [p for n, p in model.named_parameters() if p.requires_grad and not _no_decay(n)]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and _no_decay(n)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.learning_rate,
    )
    schedule = get_linear_schedule_with_warmup(optimizer, int(config.warmup_ratio * total_steps), total_steps)

    position = LoopPosition(fingerprint=run_fingerprint(config, lengths), data_order_seed=config.seed)
    if checkpoints is not None and (resumed := checkpoints.load(model, optimizer, schedule, position.fingerprint)):
        position = resumed
        rng.bit_generator.state = position.epoch_rng
        console.log(f"{description}: resuming from {checkpoints.folder}, epoch {position.epoch} step {position.step}")
    history = [EpochRecord(**record) for record in position.history]
    best_state = checkpoints.load_best(position.best_epoch) if checkpoints and position.best_epoch else None
    meter = _RateMeter(total_steps, done=(position.epoch - 1) * steps_per_epoch + position.step)
    with _progress(console) as progress:
        task = progress.add_task(description, total=total_steps, completed=meter.done, loss=float("nan"))
        for epoch in range(position.epoch, config.epochs + 1):
            if epoch != position.epoch:  # a fresh epoch, not the one a checkpoint resumed inside
                position.epoch, position.step, position.losses, position.epoch_seconds = epoch, 0, [], 0.0
            position.epoch_rng = rng.bit_generator.state
            started = time.perf_counter()
            model.train()
            batches = shuffled_length_batches(lengths, config.batch_size, rng)[:steps_per_epoch]
            for indices in batches[position.step :]:
                step_started = time.perf_counter()
                loss = batch_loss(indices)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                optimizer.step()
                schedule.step()
                position.step += 1
                position.losses.append(float(loss.detach()))
                meter.add(len(indices), time.perf_counter() - step_started)
                running_loss = float(np.mean(position.losses[-50:]))
                progress.update(task, advance=1, loss=running_loss)
                if log_every is not None and meter.done % log_every == 0:
                    console.log(
                        f"{description} epoch {epoch}/{config.epochs}, {meter.summary()}, loss {running_loss:.4f}"
                    )
                if checkpoints is not None and checkpoints.due(meter.done):
                    position.epoch_seconds += time.perf_counter() - started
                    started = time.perf_counter()
                    checkpoints.save(model, optimizer, schedule, position)
            report = dev_score()
            record = EpochRecord(
                epoch,
                float(np.mean(position.losses)),
                report.macro_f1,
                report.accuracy,
                position.epoch_seconds + time.perf_counter() - started,
            )
            history.append(record)
            console.log(
                f"{description} epoch {epoch}/{config.epochs}: loss {record.train_loss:.4f}, "
                f"dev macro-F1 {record.dev_macro_f1:.4f}, dev acc {record.dev_accuracy:.4f} "
                f"({record.seconds:.0f}s)"
            )
            if report.macro_f1 > position.best_f1:
                position.best_f1, position.best_epoch = report.macro_f1, epoch
                best_state = copy.deepcopy(model.state_dict())
                if checkpoints is not None:
                    checkpoints.save_best(model, epoch)
            if checkpoints is not None:
                position.history = [asdict(item) for item in history]
                position.epoch, position.step, position.losses, position.epoch_seconds = epoch + 1, 0, [], 0.0
                position.epoch_rng = rng.bit_generator.state
                checkpoints.save(model, optimizer, schedule, position)
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return history


def run_fingerprint(config: FitConfig, lengths: np.ndarray) -> str:
    """What makes two runs the same run: every setting but the thread count, and the training texts' lengths."""
    settings = {key: value for key, value in asdict(config).items() if key != "threads"}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    digest.update(np.ascontiguousarray(lengths, dtype=np.int64).tobytes())
    return digest.hexdigest()[:16]


def train_teacher(
    config: TeacherConfig,
    console: Console | None = None,
    *,
    checkpoints: Checkpoints | None = None,
    log_every: int | None = None,
) -> TrainedClassifier:
    """Fine-tune ``config.base_model`` on the training file minus its dev split (resumable: see :func:`fit`)."""
    import torch
    import torch.nn.functional as F

    console = console or Console(stderr=True)
    train, dev = config.data.load()
    console.log(f"train {len(train)} rows {train.class_counts()}, dev {len(dev)} rows {dev.class_counts()}")
    tokenizer = load_tokenizer(config.base_model, config.max_length)
    train_ids, dev_ids = encode(tokenizer, train.texts), encode(tokenizer, dev.texts)
    lengths = np.fromiter((len(ids) for ids in train_ids), dtype=np.int64, count=len(train_ids))

    torch.manual_seed(config.fit.seed)
    model = load_classifier(config.base_model)
    weights = torch.from_numpy(class_weights(train.labels, config.class_weighting))
    labels = torch.from_numpy(train.labels)
    pad_id = pad_token_id(model)

    def batch_loss(indices: np.ndarray) -> torch.Tensor:
        input_ids, attention_mask = to_torch(pad_bucket(train_ids, indices, pad_id))
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
        return F.cross_entropy(logits, labels[indices], weight=weights)

    def dev_score() -> EvalReport:
        return evaluate(dev.labels, softmax(predict_logits(model, dev_ids)))

    history = fit(
        model,
        lengths=lengths,
        batch_loss=batch_loss,
        dev_score=dev_score,
        config=config.fit,
        console=console,
        description="teacher",
        checkpoints=checkpoints,
        log_every=log_every,
    )
    return TrainedClassifier(model, Path(config.base_model), config.max_length, dev, dev_score(), history)


def _no_decay(name: str) -> bool:
    return name.endswith("bias") or "LayerNorm" in name or "layer_norm" in name


class _RateMeter:
    """A rate (texts/s) and an ETA from the last ``window`` steps, so they follow the machine's current load."""

    def __init__(self, total_steps: int, done: int, window: int = 100) -> None:
        self.total_steps, self.done = total_steps, done
        self.recent: collections.deque[tuple[int, float]] = collections.deque(maxlen=window)

    def add(self, texts: int, seconds: float) -> None:
        self.done += 1
        self.recent.append((texts, seconds))

    def summary(self) -> str:
        seconds = sum(step_seconds for _, step_seconds in self.recent)
        rate = sum(texts for texts, _ in self.recent) / seconds if seconds else 0.0
        left = (self.total_steps - self.done) * seconds / len(self.recent) if self.recent else 0.0
        return f"step {self.done}/{self.total_steps}, {rate:.1f} texts/s, ETA {datetime.timedelta(seconds=round(left))}"


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    if isinstance(value, Path):
        return str(value)
    return value
