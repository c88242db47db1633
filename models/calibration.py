"""Temperature scaling (Guo et al., 2017) and expected calibration error.

The temperature is fitted on the dev split carved from ``train.csv``; it divides the logits before the
softmax, so argmax labels never change, only how confident the probabilities are.
"""

from __future__ import annotations

import numpy as np

ECE_BINS = 15


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of ``logits / temperature`` in float32."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    scaled -= scaled.max(axis=1, keepdims=True)
    exp = np.exp(scaled)
    return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)


def negative_log_likelihood(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    log_norm = np.logaddexp.reduce(scaled, axis=1)
    return float(np.mean(log_norm - scaled[np.arange(len(labels)), labels]))


def fit_temperature(logits: np.ndarray, labels: np.ndarray, *, bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """The temperature that minimises the dev split's negative log-likelihood."""
    from scipy.optimize import minimize_scalar

    if len(logits) == 0:
        raise ValueError("cannot fit a temperature on zero examples")
    # Search log T: the NLL is far better conditioned there than in T.
    result = minimize_scalar(
        lambda log_t: negative_log_likelihood(logits, labels, float(np.exp(log_t))),
        bounds=(np.log(bounds[0]), np.log(bounds[1])),
        method="bounded",
        options={"xatol": 1e-4},
    )
    return float(np.exp(result.x))


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, n_bins: int = ECE_BINS) -> float:
    """ECE over ``n_bins`` equal-width confidence bins: sum over bins of |accuracy - confidence| x share."""
    if len(labels) == 0:
        raise ValueError("ECE of zero examples is undefined")
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    # Right-closed bins (a, b]: a confidence of exactly 1.0 lands in the last bin.
    bin_of = np.clip(np.ceil(confidence * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        members = bin_of == b
        if members.any():
            ece += abs(correct[members].mean() - confidence[members].mean()) * members.mean()
    return float(ece)
