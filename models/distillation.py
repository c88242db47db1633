"""Distilling a fine-tuned teacher (or an ensemble of them) into a student with fewer layers.

The student copies the teacher's embeddings, pooler, classifier and a chosen subset of its transformer
layers, then learns from

* soft targets: KL divergence to the teachers' mean logits at temperature ``T`` (scaled by T²),
* hard labels: class-weighted cross-entropy on the labelled rows,
* optionally hidden states: MSE between each student layer's output and the output of the teacher layer it
  was copied from (and between the embeddings), as in TinyBERT, which keeps the shallow stack in the
  representation space the copied classifier expects.

Unlabelled transfer text is pseudo-labelled by the teachers: it contributes soft targets (and hidden
states) but no hard label. The epoch with the best dev macro-F1 is kept.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from rich.console import Console

from finpulse.models.augmentation import augment
from finpulse.models.calibration import softmax
from finpulse.models.data import read_texts
from finpulse.models.evaluation import EvalReport, evaluate
from finpulse.models.tokenization import encode, load_tokenizer, pad_bucket
from finpulse.models.training import (
    ClassWeighting,
    DataConfig,
    FitConfig,
    TrainedClassifier,
    class_weights,
    fit,
    predict_logits,
    to_torch,
)
from finpulse.models.weights import load_classifier

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel

UNLABELLED = -1


@dataclass(frozen=True)
class DistillConfig:
    teachers: tuple[Path, ...]  # model folders; the first one also initialises the student
    data: DataConfig
    fit: FitConfig = field(default_factory=lambda: FitConfig(epochs=8, learning_rate=1e-4))
    student_layers: tuple[int, ...] = (0, 5)  # teacher layers copied into the student, in order
    temperature: float = 2.0
    soft_weight: float = 0.5  # the hard-label CE gets 1 - soft_weight
    hidden_weight: float = 0.0
    class_weighting: ClassWeighting = "sqrt_inverse"
    max_length: int = 64
    transfer_files: tuple[Path, ...] = ()
    transfer_text_col: str = "text"
    augment_copies: int = 0  # perturbed copies of each training text, labelled by the teachers

    def __post_init__(self) -> None:
        if not self.teachers:
            raise ValueError("distillation needs at least one teacher folder")
        if not 1 <= len(self.student_layers) <= 3:
            raise ValueError(f"a student keeps 1 to 3 teacher layers, got {list(self.student_layers)}")
        if list(self.student_layers) != sorted(set(self.student_layers)) or min(self.student_layers) < 0:
            raise ValueError(f"student_layers must be increasing layer indices, got {list(self.student_layers)}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not 0 <= self.soft_weight <= 1:
            raise ValueError(f"soft_weight must be in [0, 1], got {self.soft_weight}")
        if self.augment_copies < 0:
            raise ValueError(f"augment_copies must be >= 0, got {self.augment_copies}")
        if self.hidden_weight < 0:
            raise ValueError(f"hidden_weight must be >= 0, got {self.hidden_weight}")

    def to_dict(self) -> dict[str, Any]:
        from finpulse.models.training import _jsonable

        return _jsonable(asdict(self))


def make_student(teacher: PreTrainedModel, layers: tuple[int, ...]) -> PreTrainedModel:
    """A copy of ``teacher`` that keeps only the transformer ``layers`` (embeddings and heads unchanged)."""
    import torch

    depth = teacher.config.num_hidden_layers
    if max(layers) >= depth:
        raise ValueError(f"teacher has {depth} layers; cannot copy layer {max(layers)}")
    student = copy.deepcopy(teacher)
    encoder = student.base_model.encoder
    encoder.layer = torch.nn.ModuleList([encoder.layer[i] for i in layers])
    student.config.num_hidden_layers = len(layers)
    return student.train()


def teacher_logits(teachers: list[PreTrainedModel], token_ids: list[np.ndarray]) -> np.ndarray:
    """Mean logits of the teachers (an ensemble is a stronger, better calibrated teacher than one seed)."""
    return np.mean([predict_logits(t, token_ids) for t in teachers], axis=0).astype(np.float32)


def teacher_hidden_states(
    teacher: PreTrainedModel, token_ids: list[np.ndarray], layers: list[int], batch_size: int = 64
) -> list[torch.Tensor]:
    """Per text, the teacher's hidden states at ``layers`` (k, tokens, hidden) in fp16, computed once.

    Caching them makes hidden-state distillation cost no teacher forward pass per training step.
    """
    import torch

    from finpulse.models.tokenization import length_buckets

    cache: list[torch.Tensor] = [torch.empty(0)] * len(token_ids)
    lengths = np.fromiter((len(ids) for ids in token_ids), dtype=np.int64, count=len(token_ids))
    with torch.inference_mode():
        for indices in length_buckets(lengths, batch_size):
            input_ids, attention_mask = to_torch(pad_bucket(token_ids, indices))
            states = teacher(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
            stacked = torch.stack([states.hidden_states[i] for i in layers], dim=1).half()
            for row, index in enumerate(indices):
                cache[index] = stacked[row, :, : lengths[index]].clone()
    return cache


def _padded_targets(cache: list[torch.Tensor], indices: np.ndarray, width: int) -> torch.Tensor:
    """(k, batch, width, hidden) fp32 targets; padding positions are masked out of the loss anyway."""
    import torch

    first = cache[indices[0]]
    target = torch.zeros((first.shape[0], len(indices), width, first.shape[-1]))
    for row, index in enumerate(indices):
        states = cache[index]
        target[:, row, : states.shape[1]] = states.float()
    return target


def distill(config: DistillConfig, console: Console | None = None) -> TrainedClassifier:
    import torch
    import torch.nn.functional as F

    console = console or Console(stderr=True)
    torch.manual_seed(config.fit.seed)
    torch.set_num_threads(config.fit.threads)
    train, dev = config.data.load()
    transfer = [text for path in config.transfer_files for text in read_texts(path, text_col=config.transfer_text_col)]
    transfer += augment(train.texts, copies=config.augment_copies, seed=config.fit.seed)
    console.log(f"train {len(train)} labelled + {len(transfer)} transfer texts, dev {len(dev)}")
    tokenizer = load_tokenizer(config.teachers[0], config.max_length)
    texts = train.texts + transfer
    hard = np.concatenate([train.labels, np.full(len(transfer), UNLABELLED, dtype=np.int64)])
    token_ids, dev_ids = encode(tokenizer, texts), encode(tokenizer, dev.texts)
    lengths = np.fromiter((len(ids) for ids in token_ids), dtype=np.int64, count=len(token_ids))

    teachers = [load_classifier(path) for path in config.teachers]
    with console.status(f"soft targets from {len(teachers)} teacher(s) on {len(texts)} texts"):
        soft = torch.from_numpy(teacher_logits(teachers, token_ids))
        dev_teacher = evaluate(dev.labels, softmax(teacher_logits(teachers, dev_ids)))
    console.log(f"teacher(s) on dev: accuracy {dev_teacher.accuracy:.4f}, macro-F1 {dev_teacher.macro_f1:.4f}")
    hidden_index = [0, *(layer + 1 for layer in config.student_layers)]  # hidden_states[0] = embeddings
    hidden_targets = teacher_hidden_states(teachers[0], token_ids, hidden_index) if config.hidden_weight > 0 else None
    student = make_student(teachers[0], config.student_layers)
    teachers.clear()
    weights = torch.from_numpy(class_weights(train.labels, config.class_weighting))
    labels = torch.from_numpy(hard)
    T = config.temperature

    def batch_loss(indices: np.ndarray) -> torch.Tensor:
        input_ids, attention_mask = to_torch(pad_bucket(token_ids, indices))
        out = student(
            input_ids=input_ids,
            attention_mask=attention_mask,
            output_hidden_states=hidden_targets is not None,
        )
        kd = F.kl_div(
            F.log_softmax(out.logits / T, dim=-1), F.softmax(soft[indices] / T, dim=-1), reduction="batchmean"
        )
        loss = config.soft_weight * kd * (T * T)
        batch_labels = labels[indices]
        if config.soft_weight < 1 and bool((batch_labels != UNLABELLED).any()):
            ce = F.cross_entropy(out.logits, batch_labels, weight=weights, ignore_index=UNLABELLED)
            loss = loss + (1 - config.soft_weight) * ce
        if hidden_targets is not None:
            target = _padded_targets(hidden_targets, indices, input_ids.shape[1])
            mask = attention_mask[None, :, :, None].float()
            student_states = torch.stack(out.hidden_states)
            mse = (((student_states - target) ** 2) * mask).sum() / (mask.sum() * target.shape[0] * target.shape[-1])
            loss = loss + config.hidden_weight * mse
        return loss

    def dev_score() -> EvalReport:
        return evaluate(dev.labels, softmax(predict_logits(student, dev_ids)))

    history = fit(
        student,
        lengths=lengths,
        batch_loss=batch_loss,
        dev_score=dev_score,
        config=config.fit,
        console=console,
        description=f"student {len(config.student_layers)}L",
    )
    return TrainedClassifier(student, Path(config.teachers[0]), config.max_length, dev, dev_score(), history)
