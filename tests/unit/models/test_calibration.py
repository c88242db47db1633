import numpy as np
import pytest

from finpulse.models.calibration import expected_calibration_error, fit_temperature, softmax


def test_softmax_rows_sum_to_one_and_temperature_flattens() -> None:
    logits = np.array([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    sharp, flat = softmax(logits), softmax(logits, temperature=4.0)
    assert np.allclose(sharp.sum(axis=1), 1.0)
    assert flat[0].max() < sharp[0].max()
    assert np.allclose(sharp[1], 1 / 3)
    with pytest.raises(ValueError):
        softmax(logits, 0.0)


def test_temperature_recovers_overconfidence_and_lowers_ece() -> None:
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 1.5, size=(4000, 3))
    probs = softmax(true_logits)
    labels = np.array([rng.choice(3, p=p / p.sum()) for p in probs.astype(np.float64)])
    overconfident = 2.5 * true_logits
    temperature = fit_temperature(overconfident, labels)
    assert temperature == pytest.approx(2.5, rel=0.1)
    before = expected_calibration_error(softmax(overconfident), labels)
    after = expected_calibration_error(softmax(overconfident, temperature), labels)
    assert after < before / 2
