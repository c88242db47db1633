import pytest

from finpulse.models.labels import LABELS, parse_label


def test_label_order_is_the_data_sets_ids() -> None:
    assert LABELS == ("bearish", "bullish", "neutral")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (0, 0),
        (1, 1),
        (2, 2),
        ("0", 0),
        ("2", 2),
        (" 1 ", 1),
        (2.0, 2),
        ("1.0", 1),
        ("bearish", 0),
        ("Negative", 0),
        ("BULLISH", 1),
        ("positive", 1),
        ("Neutral", 2),
        (" neutral\n", 2),
    ],
)
def test_ids_and_names_with_synonyms(raw: object, expected: int) -> None:
    assert parse_label(raw) == expected


@pytest.mark.parametrize("raw", ["3", -1, 1.5, "bull", "", "mixed", True, None])
def test_unknown_labels_are_refused_with_the_value_named(raw: object) -> None:
    with pytest.raises(ValueError, match="neither an id 0/1/2 nor one of"):
        parse_label(raw)
