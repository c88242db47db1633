from finpulse.models.augmentation import augment

TEXTS = [
    "$AAPL jumps 5% after earnings beat https://t.co/abc",
    "$TSLA: deliveries miss estimates, shares fall 3.2%",
    "Fed holds rates steady",
]


def test_copies_are_deterministic_and_keep_urls() -> None:
    first, again = augment(TEXTS, copies=2, seed=3), augment(TEXTS, copies=2, seed=3)
    assert first == again and len(first) == 2 * len(TEXTS)
    assert "https://t.co/abc" in first[0] and "https://t.co/abc" in first[3]
    assert augment(TEXTS, copies=0) == []


def test_cashtags_are_drawn_from_the_corpus_tags() -> None:
    variants = augment(TEXTS, copies=20, seed=1)
    tags = {word.rstrip(":,.") for text in variants for word in text.split() if word.startswith("$")}
    assert tags == {"$AAPL", "$TSLA"}
    assert any(text.startswith("$TSLA jumps") for text in variants)
