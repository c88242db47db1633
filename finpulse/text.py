"""Text normalization applied to every event before scoring and storage.

Rules:

1. Line breaks are unified to ``\\n`` (``\\r\\n``, ``\\r``, vertical tab, form feed, NEL, U+2028/U+2029).
2. Control and format characters (Unicode categories Cc and Cf) are removed, except newline, tab,
   ZERO WIDTH JOINER and the tag characters U+E0020..U+E007F: those glue emoji sequences (👨‍👩‍👧,
   subdivision flags) together, so dropping them would split one emoji into several. Lone surrogates
   (category Cs, which ``json.loads`` makes of escapes such as ``"\\ud83d"``) are removed too: they
   cannot be encoded as UTF-8 and would break the insert.
3. Horizontal whitespace: a run of two or more whitespace characters, or any single exotic space
   (no-break space, ideographic space, ...), becomes one space; a lone tab stays a tab.
4. Spaces around line breaks are dropped, and three or more line breaks become one blank line.
5. Leading and trailing whitespace is stripped.
6. Unicode NFC, so that the same visible text is stored and tokenized the same way.
7. The text is cut to ``max_chars`` characters.

Emptiness is the caller's decision: an event whose text normalizes to ``""`` goes to the DLQ.

Example:
    >>> normalize_text("  Apple\\u200b  beats\\x00 estimates 🚀\\r\\n\\r\\n\\r\\nmore ", max_chars=100)
    'Apple beats estimates 🚀\\n\\nmore'
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

# Tab and newline are content; ZWJ and the tag characters (U+E0020..U+E007F) are parts of emoji sequences.
_KEPT_CONTROLS = frozenset({"\t", "\n", "\u200d", *map(chr, range(0xE0020, 0xE0080))})
_LINE_BREAK = re.compile(r"\r\n?|[\v\f\x85\u2028\u2029]")


def _removed_characters() -> str:
    # Cf lives only in planes 0, 1 and 14; scanning just those keeps import time low (~30 ms vs ~250 ms).
    planes = (range(0x20000), range(0xE0000, 0xE1000))
    removed = [
        chr(codepoint)
        for plane in planes
        for codepoint in plane
        if unicodedata.category(chr(codepoint)) in ("Cc", "Cf", "Cs") and chr(codepoint) not in _KEPT_CONTROLS
    ]
    return "".join(removed)


def _whitespace_characters() -> str:
    return "".join(chr(codepoint) for codepoint in range(0x10000) if chr(codepoint).isspace())


def _character_class(characters: str) -> str:
    # Consecutive code points become ranges: a class of ranges compiles to a bitmap, a list of
    # single characters to a slow linear scan.
    codepoints = sorted(ord(c) for c in characters)
    ranges: list[list[int]] = []
    for codepoint in codepoints:
        if ranges and codepoint <= ranges[-1][1] + 1:
            ranges[-1][1] = max(ranges[-1][1], codepoint)
        else:
            ranges.append([codepoint, codepoint])
    parts = (re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}" for a, b in ranges)
    return "[" + "".join(parts) + "]"


_REMOVED_CHARACTERS = _removed_characters()
_WHITESPACE = _whitespace_characters()
_REMOVED = re.compile(_character_class(_REMOVED_CHARACTERS) + "+")
# Any exotic space, or a space or tab followed by more horizontal whitespace: a lone tab is kept.
_EXOTIC_SPACES = "".join(sorted(set(_WHITESPACE) - {" ", "\t", "\n"}))
_HORIZONTAL_SPACE = re.compile(_character_class(_EXOTIC_SPACES) + r"[^\S\n]*|[ \t][^\S\n]+")
_AROUND_LINE_BREAKS = re.compile(r"[^\S\n]*\n\s*")
# One fast scan for anything the steps below would change (most short texts have nothing): a character
# that is removed or rewritten, or two whitespace characters in a row. It starts with a character class,
# so the regex engine skips ahead with a bitmap instead of trying alternatives at every position.
_SUSPECT = _REMOVED_CHARACTERS + _EXOTIC_SPACES + "\n"
_NEEDS_WORK = re.compile(_character_class(_SUSPECT) + r"|\s\s")


def _line_break_run(match: re.Match[str]) -> str:
    return "\n\n" if match.group().count("\n") > 1 else "\n"


def _clean_characters(text: str) -> str:
    text = _LINE_BREAK.sub("\n", text)
    text = _REMOVED.sub("", text)
    text = _HORIZONTAL_SPACE.sub(" ", text)
    if "\n" in text:
        text = _AROUND_LINE_BREAKS.sub(_line_break_run, text)
    return text.strip()


def normalize_text(text: str, *, max_chars: int) -> str:
    """Return ``text`` normalized as described in the module docstring and cut to ``max_chars``.

    ``max_chars`` is ``Settings.max_text_chars`` (``FINPULSE_MAX_TEXT_CHARS``) in the pipeline.

    Example:
        >>> normalize_text("line one\\t\\tline\\u00a0two\\n\\n\\n\\nend", max_chars=12)
        'line one lin'
    """
    if max_chars < 1:
        raise ValueError(f"max_chars must be at least 1, got {max_chars}")
    if _NEEDS_WORK.search(text) or text[:1].isspace() or text[-1:].isspace():
        text = _clean_characters(text)
    # NFC after the removals: dropping a control character can bring a letter and an accent together.
    if not text.isascii():
        text = unicodedata.normalize("NFC", text)
    if len(text) > max_chars:
        text = text[:max_chars].rstrip()
    return text


def normalize_texts(texts: Iterable[str], *, max_chars: int) -> list[str]:
    """``normalize_text`` over a batch."""
    return [normalize_text(text, max_chars=max_chars) for text in texts]
