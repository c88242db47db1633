"""Sentiment model toolchain and the shipped artifacts.

Importing this package (and :class:`BatchScorer`) loads numpy, tokenizers and onnxruntime only; torch and
transformers are imported lazily by the training, distillation and export code.
"""

from pathlib import Path

from finpulse.models.labels import LABELS
from finpulse.models.scorer import BatchScorer, Scores

SHIPPED_DIR = Path(__file__).resolve().parent
# The version the pipeline scores with unless FINPULSE_MODEL_DIR says otherwise.
DEFAULT_MODEL_DIR: Path = SHIPPED_DIR / "minilm-l1-finsent-student-v1"

__all__ = ["DEFAULT_MODEL_DIR", "LABELS", "SHIPPED_DIR", "BatchScorer", "Scores"]
