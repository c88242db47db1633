"""Event ids: built from kind, source and the feed's id, and split back into them."""

from __future__ import annotations

import doctest

import pytest

from finpulse import identity
from finpulse.identity import EventKey, event_id, split_event_id


def test_the_doctests_hold() -> None:
    assert doctest.testmod(identity).failed == 0


@pytest.mark.parametrize(
    ("kind", "source", "source_id"),
    [
        ("news", "reuters", "1001"),
        ("social", "x", "a:b:c"),
        ("news", "my:feed", ":"),
        ("news", "100%", "%3A"),
        ("news", "%3A", "x"),
        ("social", "%25:%", "id with spaces"),
        ("news", "", "x"),
    ],
)
def test_an_event_id_splits_back_into_what_it_was_built_from(kind: str, source: str, source_id: str) -> None:
    built = event_id(kind, source, source_id)
    assert split_event_id(built) == EventKey(kind, source, source_id)
    assert built.split(":", 2)[2] == source_id


def test_different_feeds_never_share_an_id() -> None:
    ids = {event_id(kind, source, "1") for kind in ("news", "social") for source in ("a", "a:b", "a%3Ab", "b")}
    assert len(ids) == 8
