"""Cheap text perturbations that give distillation more teacher-labelled text (TinyBERT's lesson).

The variants carry no label of their own: the teacher labels them (soft targets), so a perturbation that
changes the sentiment only teaches the student what the teacher thinks of the new text.

Example:
    >>> augment(["$AAPL jumps 5% after earnings beat https://t.co/x"], copies=1, seed=1)  # doctest: +SKIP
    ['$MSFT jumps 7% earnings beat https://t.co/x']
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

CASHTAG = re.compile(r"^\$[A-Za-z]{1,6}[:,.]?$")
NUMBER = re.compile(r"^[-+$]?\d[\d,.]*%?$")


def augment(texts: Sequence[str], *, copies: int = 1, seed: int = 13, p_delete: float = 0.1) -> list[str]:
    """``copies`` perturbed variants per text: word deletion, one adjacent swap, swapped cashtags/numbers."""
    if copies < 0:
        raise ValueError(f"copies must be >= 0, got {copies}")
    rng = random.Random(seed)
    cashtags = sorted({w.rstrip(":,.") for t in texts for w in t.split() if CASHTAG.match(w)}) or ["$SPY"]
    variants: list[str] = []
    for _ in range(copies):
        for text in texts:
            variant = _perturb(text.split(), rng, cashtags, p_delete)
            variants.append(variant if variant.strip() else text)
    return variants


def _perturb(words: list[str], rng: random.Random, cashtags: list[str], p_delete: float) -> str:
    out: list[str] = []
    for word in words:
        if CASHTAG.match(word):
            out.append(rng.choice(cashtags) + word[len(word.rstrip(":,.")) :])
        elif NUMBER.match(word) and rng.random() < 0.5:
            out.append(_other_number(word, rng))
        elif word.startswith("http") or rng.random() >= p_delete:
            out.append(word)
    if len(out) > 3:
        i = rng.randrange(len(out) - 1)
        out[i], out[i + 1] = out[i + 1], out[i]
    return " ".join(out)


def _other_number(word: str, rng: random.Random) -> str:
    digits = re.sub(r"\d", lambda _: str(rng.randrange(10)), word)
    # A leading zero reads oddly ("05%"); keep the first digit non-zero when the original's was.
    return re.sub(r"^([-+$]?)0(?=\d)", lambda m: m.group(1) + str(rng.randrange(1, 10)), digits)
