"""Fast-tokenizer encoding and length-bucketed, per-bucket padded batches.

Training, export parity, evaluation and the runtime scorer all batch through here, so a text is cut and
padded the same way everywhere.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

TOKENIZER_FILE = "tokenizer.json"


@dataclass(frozen=True)
class EncodedBatch:
    """One padded bucket: ``indices`` are the positions of its rows in the caller's list."""

    indices: np.ndarray  # int64 (b,)
    input_ids: np.ndarray  # int64 (b, t)
    attention_mask: np.ndarray  # int64 (b, t)


def load_tokenizer(model_dir: Path, max_length: int) -> Tokenizer:
    """The folder's ``tokenizer.json``, truncating at ``max_length`` and never padding on its own."""
    if max_length < 8:
        raise ValueError(f"max_length must be at least 8 tokens, got {max_length}")
    tokenizer = Tokenizer.from_file(str(Path(model_dir) / TOKENIZER_FILE))
    # Shipped sentence-transformers tokenizers pad every text to a fixed 128: buckets pad instead.
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=max_length)
    return tokenizer


def encode(tokenizer: Tokenizer, texts: Sequence[str]) -> list[np.ndarray]:
    """Token ids per text (unpadded, with special tokens)."""
    return [np.asarray(encoding.ids, dtype=np.int64) for encoding in tokenizer.encode_batch(list(texts))]


def length_buckets(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Row indices grouped into batches of similar length (sorted by length, stable), shortest first."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = np.argsort(lengths, kind="stable")
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def pad_bucket(token_ids: Sequence[np.ndarray], indices: np.ndarray, pad_id: int = 0) -> EncodedBatch:
    width = max(len(token_ids[i]) for i in indices)
    input_ids = np.full((len(indices), width), pad_id, dtype=np.int64)
    attention_mask = np.zeros((len(indices), width), dtype=np.int64)
    for row, index in enumerate(indices):
        ids = token_ids[index]
        input_ids[row, : len(ids)] = ids
        attention_mask[row, : len(ids)] = 1
    return EncodedBatch(np.asarray(indices, dtype=np.int64), input_ids, attention_mask)


def bucketed_batches(tokenizer: Tokenizer, texts: Sequence[str], batch_size: int) -> Iterator[EncodedBatch]:
    """Encode once, then yield padded buckets; callers scatter results back by ``batch.indices``."""
    token_ids = encode(tokenizer, texts)
    lengths = np.fromiter((len(ids) for ids in token_ids), dtype=np.int64, count=len(token_ids))
    pad_id = tokenizer.token_to_id("[PAD]") or 0
    for indices in length_buckets(lengths, batch_size):
        yield pad_bucket(token_ids, indices, pad_id)
