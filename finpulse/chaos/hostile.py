"""Hostile inputs for the raw topics: every way a producer can get a message wrong, seeded and repeatable.

Each input is a ``traffic.Message`` whose ``category`` says what is wrong with it. Those that still make a
valid event (unknown fields, control characters, a huge but legal text or id…) carry the event's
identity and may be stored; the others carry none and belong in the DLQ. The accounting accepts either
place for a hostile input; what it refuses is a message in neither.

Example:
    >>> inputs = hostile_inputs(40, seed=1, run_id="doc")
    >>> len(inputs), {m.category for m in inputs} == set(CATEGORIES)
    (40, True)
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Protocol

from finpulse.chaos.traffic import Message
from finpulse.feed import SOCIAL_TOPIC
from finpulse.identity import EventKey

TEN_MB = 10 * 1024 * 1024


class _Post(Protocol):
    """Makes a valid social post as a dict, for a builder to spoil; every post of a run has one date."""

    def __call__(self, event_id: str, text: object = ..., **extra: object) -> dict: ...


def _post_at(created_at: datetime) -> _Post:
    stamp = created_at.astimezone(UTC).isoformat().replace("+00:00", "Z")

    def post(event_id: str, text: object = "$AAPL beats estimates, shares jump", **extra: object) -> dict:
        return {"id": event_id, "platform": "x", "author": "a", "created_at": stamp, "text": text} | extra

    return post


def _event(event_id: str, document: dict, category: str) -> Message:
    identity = EventKey("social", str(document.get("platform", "")).lower(), event_id)
    return Message(SOCIAL_TOPIC, json.dumps(document).encode(), event_id.encode(), identity, category)


def _bad(event_id: str, value: bytes, category: str) -> Message:
    return Message(SOCIAL_TOPIC, value, event_id.encode(), None, category)


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def _bad_json(i: str, rng: random.Random, post: _Post) -> Message:
    cut = json.dumps(post(i)).encode()
    return _bad(i, cut[: rng.randint(1, len(cut) - 1)], "bad_json")


def _bad_utf8(i: str, rng: random.Random, post: _Post) -> Message:
    return _bad(i, json.dumps(post(i, "PLACEHOLDER")).encode().replace(b"PLACEHOLDER", b"\xff\xfe\xc3("), "bad_utf8")


def _wrong_types(i: str, rng: random.Random, post: _Post) -> Message:
    field, value = rng.choice([("text", 42), ("created_at", "yesterday"), ("id", ["x"]), ("tickers", "AAPL")])
    return _bad(i, json.dumps(post(i) | {field: value}).encode(), "wrong_types")


def _missing_field(i: str, rng: random.Random, post: _Post) -> Message:
    document = post(i)
    del document[rng.choice(["text", "platform", "created_at"])]
    return _bad(i, json.dumps(document).encode(), "missing_field")


def _empty_text(i: str, rng: random.Random, post: _Post) -> Message:
    return _bad(i, json.dumps(post(i, rng.choice(["", " ", "\x00\x07 ", "\u200b"]))).encode(), "empty_text")


def _huge_text(i: str, rng: random.Random, post: _Post) -> Message:
    # under the default 1 MB limit: a legal event, scored on its first max_text_chars characters
    return _event(i, post(i, "$TSLA recall widens " + "word " * rng.randint(20_000, 150_000)), "huge_text")


def _ten_mb(i: str, rng: random.Random, post: _Post) -> Message:
    return _bad(i, json.dumps(post(i, "$NVDA " + "x" * TEN_MB)).encode(), "ten_mb")


def _deeply_nested(i: str, rng: random.Random, post: _Post) -> Message:
    return _bad(
        i,
        json.dumps(post(i)).encode()[:-1] + b', "nested": ' + _nested(rng.randint(5_000, 100_000)).encode() + b"}",
        "deeply_nested",
    )


def _control_chars(i: str, rng: random.Random, post: _Post) -> Message:
    return _event(i, post(i, "Tesla\x00 recalls \x1b2M cars\tin the\x7f US\r\n$TSLA"), "control_chars")


def _huge_id(i: str, rng: random.Random, post: _Post) -> Message:
    # 256 characters is the longest id the schema takes; longer ones belong in the DLQ
    event_id = (i + "-" + "9" * rng.choice([256, 10_000]))[: rng.choice([256, 10_000])]
    document = post(event_id)
    message = _event(event_id, document, "huge_id")
    return message if len(event_id) <= 256 else _bad(event_id, message.value, "huge_id")


def _unknown_fields(i: str, rng: random.Random, post: _Post) -> Message:
    return _event(i, post(i, **{"likes": 10, "x-extra": {"a": [1, 2]}, "__proto__": None}), "unknown_fields")


def _not_an_object(i: str, rng: random.Random, post: _Post) -> Message:
    return _bad(i, rng.choice([b"null", b"[]", b"42", b'"text"', b""]), "not_an_object")


CATEGORIES: dict[str, Callable[[str, random.Random, _Post], Message]] = {
    "bad_json": _bad_json,
    "bad_utf8": _bad_utf8,
    "wrong_types": _wrong_types,
    "missing_field": _missing_field,
    "empty_text": _empty_text,
    "huge_text": _huge_text,
    "ten_mb": _ten_mb,
    "deeply_nested": _deeply_nested,
    "control_chars": _control_chars,
    "huge_id": _huge_id,
    "unknown_fields": _unknown_fields,
    "not_an_object": _not_an_object,
    "duplicate": _unknown_fields,  # stands for a copy of an earlier input, made in hostile_inputs
}
# Costly to build, send and carry: a few are enough to show how each is handled.
_RARE = {"ten_mb": 0.005, "huge_text": 0.02, "deeply_nested": 0.02}


def hostile_inputs(
    count: int, *, seed: int, run_id: str, created_at: datetime | Sequence[datetime] | None = None
) -> list[Message]:
    """``count`` hostile messages, every category present once ``count >= len(CATEGORIES)``.

    ``created_at`` dates the posts: one date for all, or one per input in order (default: now). Dated
    like the feed around them, those that still make a valid event arrive on time, as a live producer's
    would (``hostile_inputs._mixed`` dates each like the valid event it is put before).
    """
    dates = [created_at or datetime.now(UTC)] * count if not isinstance(created_at, Sequence) else created_at
    if len(dates) != count:
        raise ValueError(f"{len(dates)} dates for {count} hostile inputs")
    rng = random.Random(f"finpulse-hostile:{seed}")
    names = list(CATEGORIES)
    common = [n for n in names if n not in _RARE]
    weights = [_RARE.get(n, (1 - sum(_RARE.values())) / len(common)) for n in names]
    plan = names[:count] + rng.choices(names, weights=weights, k=max(0, count - len(names)))
    rng.shuffle(plan)
    if plan and plan[0] == "duplicate":  # a duplicate needs an earlier input to copy
        swap = next((k for k, name in enumerate(plan) if name != "duplicate"), 0)
        plan[0], plan[swap] = plan[swap], plan[0]
    out: list[Message] = []
    for index, category in enumerate(plan):
        if category == "duplicate" and out:  # the same bytes again, as a retrying producer would send
            original = rng.choice(out)
            out.append(Message(original.topic, original.value, original.key, original.identity, "duplicate"))
            continue
        out.append(CATEGORIES[category](f"{run_id}-h{index:05d}", rng, _post_at(dates[index])))
    return out


def mix_slots(valid: int, hostile: int, *, seed: int) -> list[int]:
    """Where ``mix`` puts each hostile input: before the valid message of that index (ascending)."""
    rng = random.Random(f"finpulse-hostile-mix:{seed}")
    return sorted(rng.randrange(valid + 1) for _ in range(hostile))


def mix(
    valid: list[Message], hostile: list[Message], *, seed: int, slots: Sequence[int] | None = None
) -> list[Message]:
    """The valid messages in order, with the hostile ones spread among them at random places.

    ``slots``: where each goes, from ``mix_slots`` (default: ``mix_slots`` with ``seed``).
    """
    slots = mix_slots(len(valid), len(hostile), seed=seed) if slots is None else slots
    mixed: list[Message] = []
    previous = 0
    for slot, message in zip(slots, hostile, strict=True):
        mixed.extend(valid[previous:slot])
        mixed.append(message)
        previous = slot
    mixed.extend(valid[previous:])
    return mixed
