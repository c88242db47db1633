"""Class names, their ids, and the synonyms accepted in labelled files."""

from __future__ import annotations

# Class index order of every model = the ids of the twitter-financial-news data set.
LABELS: tuple[str, ...] = ("bearish", "bullish", "neutral")
BEARISH, BULLISH, NEUTRAL = 0, 1, 2

LABEL_SYNONYMS: dict[str, int] = {
    "bearish": BEARISH,
    "negative": BEARISH,
    "bullish": BULLISH,
    "positive": BULLISH,
    "neutral": NEUTRAL,
}


def parse_label(value: object) -> int:
    """Map an id (0/1/2, also as text or float like ``2.0``) or a case-insensitive name to a class id.

    Example:
        >>> parse_label("Positive"), parse_label("0"), parse_label(2)
        (1, 0, 2)
    """
    if isinstance(value, bool):
        raise ValueError(f"label {value!r} is neither an id 0/1/2 nor one of {sorted(LABEL_SYNONYMS)}")
    if isinstance(value, int | float):
        return _label_from_number(value)
    text = str(value).strip().lower()
    if text in LABEL_SYNONYMS:
        return LABEL_SYNONYMS[text]
    try:
        return _label_from_number(float(text))
    except ValueError:
        raise ValueError(f"label {value!r} is neither an id 0/1/2 nor one of {sorted(LABEL_SYNONYMS)}") from None


def _label_from_number(value: float) -> int:
    if value in (0, 1, 2):
        return int(value)
    raise ValueError(f"label {value!r} is neither an id 0/1/2 nor one of {sorted(LABEL_SYNONYMS)}")
