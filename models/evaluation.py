"""Classification metrics of a model's probabilities against gold labels."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from finpulse.models.calibration import expected_calibration_error
from finpulse.models.labels import LABELS


@dataclass(frozen=True)
class ClassMetrics:
    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class EvalReport:
    """What ``finpulse model eval --json`` prints; ``confusion[true][predicted]`` counts texts."""

    accuracy: float
    macro_f1: float
    ece: float
    n: int
    per_class: dict[str, ClassMetrics]
    confusion: dict[str, dict[str, int]]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def evaluate(labels: np.ndarray, probabilities: np.ndarray) -> EvalReport:
    """Accuracy, macro-F1, per-class P/R/F1, ECE (15 bins) and the confusion matrix.

    Example:
        >>> p = np.array([[0.9, 0.05, 0.05], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6], [0.6, 0.2, 0.2]])
        >>> evaluate(np.array([0, 1, 2, 2]), p).accuracy
        0.75
    """
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) == 0:
        raise ValueError("cannot evaluate zero examples")
    if probabilities.shape != (len(labels), len(LABELS)):
        raise ValueError(f"probabilities of shape {probabilities.shape}, expected {(len(labels), len(LABELS))}")
    predicted = probabilities.argmax(axis=1)
    class_ids = list(range(len(LABELS)))
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predicted, labels=class_ids, zero_division=0
    )
    matrix = confusion_matrix(labels, predicted, labels=class_ids)
    return EvalReport(
        accuracy=float(np.mean(predicted == labels)),
        macro_f1=float(np.mean(f1)),
        ece=expected_calibration_error(probabilities, labels),
        n=int(len(labels)),
        per_class={
            name: ClassMetrics(float(precision[i]), float(recall[i]), float(f1[i]), int(support[i]))
            for i, name in enumerate(LABELS)
        },
        confusion={true: {pred: int(matrix[i, j]) for j, pred in enumerate(LABELS)} for i, true in enumerate(LABELS)},
    )
