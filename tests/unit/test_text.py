import random
import unicodedata

import pytest

from finpulse.text import normalize_text, normalize_texts


def norm(text: str, max_chars: int = 1000) -> str:
    return normalize_text(text, max_chars=max_chars)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("a\x00b\x07c\x1bd\x7fe", "abcde"),  # C0 controls and DEL
        ("zero\u200bwidth\ufeffbom", "zerowidthbom"),  # ZWSP and BOM (Cf)
        ("x\u202eevil\u202c y", "xevil y"),  # bidi overrides (Cf)
        ("soft\u00adhyphen", "softhyphen"),  # SOFT HYPHEN (Cf)
        ("c1\x9bcontrol", "c1control"),  # C1 control
        ("lone \ud83d surrogate", "lone surrogate"),  # what json.loads makes of "\ud83d"
    ],
)
def test_control_and_format_characters_are_removed(raw: str, expected: str) -> None:
    assert norm(raw) == expected


def test_newline_and_tab_are_kept() -> None:
    assert norm("line one\nline\ttwo") == "line one\nline\ttwo"


def test_line_breaks_are_unified_to_newline() -> None:
    assert norm("a\r\nb\rc\x0bd\x0ce\x85f\u2028g\u2029h") == "a\nb\nc\nd\ne\nf\ng\nh"


def test_nfc() -> None:
    decomposed = "Cafe\u0301 Nestle\u0301"
    assert norm(decomposed) == "Café Nestlé"
    assert unicodedata.is_normalized("NFC", norm(decomposed))


def test_emoji_are_kept_including_joined_sequences_and_flags() -> None:
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"
    england = "\U0001f3f4\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f"
    text = f"$TSLA to the moon 🚀🚀 {family} {england} 💎🙌"
    assert norm(text) == text


def test_whitespace_runs_collapse() -> None:
    assert norm("  many   spaces\u00a0\u00a0and\u3000exotic  \t tabs  ") == "many spaces and exotic tabs"


def test_single_tab_survives_but_tab_runs_collapse() -> None:
    assert norm("a\tb\t\tc") == "a\tb c"


def test_blank_lines_collapse_to_one_and_lines_are_trimmed() -> None:
    assert norm("para one  \n\n\n\n   para two \n  line") == "para one\n\npara two\nline"


def test_truncation_cuts_to_max_chars_without_trailing_space() -> None:
    assert norm("abcdef ghij", max_chars=7) == "abcdef"
    assert norm("abcdefghij", max_chars=4) == "abcd"
    assert len(norm("word " * 1000, max_chars=2000)) <= 2000


def test_truncation_counts_characters_after_normalization() -> None:
    assert norm("  \x00\x00ab  c", max_chars=4) == "ab c"


def test_text_that_normalizes_to_nothing_is_empty() -> None:
    assert norm("\x00\u200b \n\t \ufeff") == ""


def test_clean_text_is_returned_unchanged() -> None:
    text = "Apple beats estimates; shares up 3% (AAPL) https://t.co/x"
    assert norm(text) == text


def test_max_chars_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_chars"):
        normalize_text("x", max_chars=0)


def test_normalization_is_idempotent_and_output_is_valid_utf8() -> None:
    alphabet = "ab $\t\n\r \u00a0\u200b\u200d\x00\x85\u2028e\u0301🚀\ud83d\u3000\ufeff\u202e"
    rng = random.Random(7)
    for _ in range(300):
        raw = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        once = norm(raw, max_chars=25)
        assert norm(once, max_chars=25) == once
        once.encode("utf-8")
        assert once == once.strip()
        assert not any(unicodedata.category(c) in ("Cc", "Cs") and c not in "\n\t" for c in once)


def test_batch_matches_single() -> None:
    texts = ["  a  b ", "x\x00y", "", "ok"]
    assert normalize_texts(texts, max_chars=10) == [norm(t, max_chars=10) for t in texts]
