"""Event identity: which messages are the same event.

Feeds choose their own ids, independently: a Reuters article and a post on X may both be ``1001``. An
event is therefore named by its kind, its source (the outlet of a news article, the platform of a social
post) and the feed's own id: ``<kind>:<source>:<id>``. A ``:`` in the source is percent-encoded (and so is
``%``, which keeps the encoding reversible), so an event id splits on its first two colons whatever the
raw id holds. The stored source is lower-cased before it is named (``Reuters`` and ``reuters`` are one
outlet); callers pass it that way.

Migration ``0005_event_identity`` builds the same ids in SQL from stored rows; the two must agree
(``tests/integration/sinks/test_migrations.py`` checks it).
"""

from __future__ import annotations

from typing import NamedTuple


class EventKey(NamedTuple):
    kind: str
    source: str
    source_id: str


def event_id(kind: str, source: str, source_id: str) -> str:
    """The stored identity of the message ``source_id`` of ``kind`` (``news``/``social``) from ``source``.

    >>> event_id("news", "reuters", "1001")
    'news:reuters:1001'
    >>> event_id("social", "my:feed 100%", "a:b")
    'social:my%3Afeed 100%25:a:b'
    """
    return f"{kind}:{_encode(source)}:{source_id}"


def split_event_id(value: str) -> EventKey:
    """The kind, source and raw id an ``event_id`` was built from.

    >>> split_event_id("social:my%3Afeed 100%25:a:b")
    EventKey(kind='social', source='my:feed 100%', source_id='a:b')
    >>> split_event_id("1001")
    Traceback (most recent call last):
    ...
    ValueError: not an event id of the form <kind>:<source>:<id>: '1001'
    """
    parts = value.split(":", 2)
    if len(parts) != 3:
        raise ValueError(f"not an event id of the form <kind>:<source>:<id>: {value!r}")
    kind, source, source_id = parts
    return EventKey(kind, _decode(source), source_id)


def _encode(source: str) -> str:
    return source.replace("%", "%25").replace(":", "%3A")


def _decode(source: str) -> str:
    return source.replace("%3A", ":").replace("%25", "%")
