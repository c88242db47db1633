"""Labelled text files (CSV or JSONL) and the dev split carved from the training file.

``valid.csv`` of twitter-financial-news is the public test split: code here only loads it; every tuning
and checkpoint choice uses :func:`split_dev`, a stratified, deterministic dev set carved from ``train.csv``.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from finpulse.models.exceptions import DataError
from finpulse.models.labels import LABELS, parse_label

DEFAULT_DATA_ROOT = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "twitter-financial-news"
DEV_FRACTION = 0.1
DEV_SEED = 20240601


@dataclass(frozen=True)
class LabelledTexts:
    """Texts with class ids (see :data:`finpulse.models.labels.LABELS`)."""

    texts: list[str]
    labels: np.ndarray  # int64 (n,)

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.labels):
            raise ValueError(f"{len(self.texts)} texts but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, indices: np.ndarray) -> LabelledTexts:
        return LabelledTexts([self.texts[i] for i in indices], self.labels[indices])

    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(self.labels, minlength=len(LABELS))
        return {name: int(count) for name, count in zip(LABELS, counts, strict=True)}


def load_labelled(path: Path, *, text_col: str = "text", label_col: str = "label") -> LabelledTexts:
    """Read a CSV or JSONL file (by suffix; ``.json``/``.jsonl``/``.ndjson`` are JSON lines).

    Raises:
        DataError: the file is missing or empty, a column is missing, a text is empty or a label unknown;
            the message names the file, the row and the offending value.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    texts: list[str] = []
    labels: list[int] = []
    for line_no, row in _rows(path):
        for column in (text_col, label_col):
            if column not in row:
                found = ", ".join(sorted(map(str, row))) or "none"
                raise DataError(f"{path}: column {column!r} not found (columns: {found})")
        text = row[text_col]
        if text is None or not str(text).strip():
            raise DataError(f"{path}:{line_no}: empty text in column {text_col!r}")
        try:
            labels.append(parse_label(row[label_col]))
        except ValueError as err:
            raise DataError(f"{path}:{line_no}: {err}") from err
        texts.append(str(text))
    if not texts:
        raise DataError(f"{path}: no rows")
    return LabelledTexts(texts, np.asarray(labels, dtype=np.int64))


def _rows(path: Path) -> Iterator[tuple[int, dict[str, object]]]:
    if path.suffix.lower() in {".jsonl", ".json", ".ndjson"}:
        return _jsonl_rows(path)
    return _csv_rows(path)


def _csv_rows(path: Path) -> Iterator[tuple[int, dict[str, object]]]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None:
            raise DataError(f"{path}: empty file (no header, no rows)")
        for row in reader:
            yield reader.line_num, row


def _jsonl_rows(path: Path) -> Iterator[tuple[int, dict[str, object]]]:
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}:{line_no}: not valid JSON ({err.msg})") from err
            if not isinstance(row, dict):
                raise DataError(f"{path}:{line_no}: expected a JSON object per line, got {type(row).__name__}")
            yield line_no, row


def split_dev(
    data: LabelledTexts, *, fraction: float = DEV_FRACTION, seed: int = DEV_SEED
) -> tuple[LabelledTexts, LabelledTexts]:
    """Deterministic stratified split into (train, dev): the same input always yields the same dev rows."""
    if not 0 < fraction < 1:
        raise ValueError(f"dev fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    dev_indices: list[np.ndarray] = []
    for label in np.unique(data.labels):
        members = np.flatnonzero(data.labels == label)
        count = max(1, round(len(members) * fraction)) if len(members) > 1 else 0
        dev_indices.append(rng.permutation(members)[:count])
    dev = np.sort(np.concatenate(dev_indices))
    train = np.setdiff1d(np.arange(len(data)), dev)
    return data.subset(train), data.subset(dev)


def twitter_financial_news(root: Path = DEFAULT_DATA_ROOT) -> tuple[LabelledTexts, LabelledTexts]:
    """The project's data set: (train.csv, valid.csv). Only evaluate on the second."""
    return load_labelled(Path(root) / "train.csv"), load_labelled(Path(root) / "valid.csv")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_texts(path: Path, *, text_col: str = "text") -> list[str]:
    """The texts of a CSV/JSONL file (no labels needed), e.g. transfer text or benchmark input."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    texts: list[str] = []
    for _, row in _rows(path):
        if text_col not in row:
            raise DataError(f"{path}: column {text_col!r} not found (columns: {', '.join(sorted(map(str, row)))})")
        if row[text_col] is not None and str(row[text_col]).strip():
            texts.append(str(row[text_col]))
    if not texts:
        raise DataError(f"{path}: no rows")
    return texts
