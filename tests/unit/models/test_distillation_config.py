from pathlib import Path

import pytest

from finpulse.models.distillation import DistillConfig
from finpulse.models.training import DataConfig, FitConfig

DATA = DataConfig(Path("train.csv"))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"teachers": ()}, "at least one teacher"),
        ({"student_layers": (0, 1, 2, 3)}, "1 to 3 teacher layers"),
        ({"student_layers": (5, 0)}, "increasing layer indices"),
        ({"temperature": 0.0}, "temperature must be > 0"),
        ({"soft_weight": 1.5}, "soft_weight must be in"),
        ({"augment_copies": -1}, "augment_copies must be >= 0"),
    ],
)
def test_bad_settings_fail_at_construction_naming_the_value(changes: dict, message: str) -> None:
    settings = {"teachers": (Path("teacher"),), "data": DATA} | changes
    with pytest.raises(ValueError, match=message):
        DistillConfig(**settings)


def test_fit_config_validates() -> None:
    with pytest.raises(ValueError, match="learning_rate"):
        FitConfig(learning_rate=0)
    with pytest.raises(ValueError, match="epochs"):
        FitConfig(epochs=0)
