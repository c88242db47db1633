import numpy as np
import pytest

from finpulse.models.calibration import expected_calibration_error
from finpulse.models.evaluation import evaluate

# Six texts, classes bearish(0), bullish(1), neutral(2). Predictions (argmax): 0, 0, 1, 2, 2, 1.
LABELS = np.array([0, 0, 1, 1, 2, 2])
PROBS = np.array(
    [
        [0.90, 0.05, 0.05],  # true 0, pred 0, conf 0.90, correct
        [0.60, 0.30, 0.10],  # true 0, pred 0, conf 0.60, correct
        [0.10, 0.70, 0.20],  # true 1, pred 1, conf 0.70, correct
        [0.20, 0.35, 0.45],  # true 1, pred 2, conf 0.45, wrong
        [0.05, 0.15, 0.80],  # true 2, pred 2, conf 0.80, correct
        [0.30, 0.40, 0.30],  # true 2, pred 1, conf 0.40, wrong
    ]
)


def test_metrics_match_a_hand_computed_example() -> None:
    report = evaluate(LABELS, PROBS)
    assert report.n == 6
    assert report.accuracy == pytest.approx(4 / 6)
    # bearish: P 2/2, R 2/2, F1 1; bullish: P 1/2, R 1/2, F1 .5; neutral: P 1/2, R 1/2, F1 .5
    assert report.per_class["bearish"].precision == pytest.approx(1.0)
    assert report.per_class["bullish"].recall == pytest.approx(0.5)
    assert report.per_class["neutral"].f1 == pytest.approx(0.5)
    assert report.per_class["neutral"].support == 2
    assert report.macro_f1 == pytest.approx((1 + 0.5 + 0.5) / 3)
    assert report.confusion == {
        "bearish": {"bearish": 2, "bullish": 0, "neutral": 0},
        "bullish": {"bearish": 0, "bullish": 1, "neutral": 1},
        "neutral": {"bearish": 0, "bullish": 1, "neutral": 1},
    }
    # 15 bins of width 1/15: conf .90 -> bin 13, .80 -> 11, .70 -> 10, .60 -> 8, .45 -> 6, .40 -> 5,
    # each alone in its bin: ECE = mean |correct - conf|.
    by_hand = (0.10 + 0.40 + 0.30 + 0.45 + 0.20 + 0.40) / 6
    assert report.ece == pytest.approx(by_hand)


def test_ece_pools_a_bin() -> None:
    probs = np.array([[0.9, 0.05, 0.05], [0.91, 0.05, 0.04]])
    # Both in bin (0.8667, 0.9333]: accuracy 0.5, mean confidence 0.905.
    assert expected_calibration_error(probs, np.array([0, 1])) == pytest.approx(0.405)


def test_json_shape() -> None:
    document = evaluate(LABELS, PROBS).to_dict()
    assert {"accuracy", "macro_f1", "ece", "n", "per_class", "confusion"} <= document.keys()
    assert document["per_class"]["bullish"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}


def test_refuses_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="shape"):
        evaluate(LABELS, PROBS[:, :2])
