from __future__ import annotations

import json

import pytest

from finpulse.entities import EntityLinker
from finpulse.settings import Settings
from finpulse.streams.validate import EventParser, RawMessage

SETTINGS = Settings(topic_prefix="p.", max_message_bytes=2048, max_text_chars=64)
NEWS, SOCIAL = SETTINGS.topic("news.raw"), SETTINGS.topic("social.raw")


def message(topic: str, value: bytes | dict, offset: int = 0, partition: int = 0) -> RawMessage:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    return RawMessage(
        topic=topic, partition=partition, offset=offset, timestamp_ms=1_795_000_000_000, key=None, value=raw
    )


@pytest.fixture(scope="module")
def parser() -> EventParser:
    return EventParser(SETTINGS, EntityLinker.default())


def test_news_and_posts_become_normalized_linked_events(parser: EventParser) -> None:
    batch = parser.parse(
        [
            message(NEWS, {"id": "n1", "source": "Reuters", "published_at": "2026-11-25T10:00:00+02:00",
                           "headline": "Microsoft raises dividend", "body": "Shares of Nvidia\x00 rose",
                           "tickers": ["ORCL"]}),
            message(SOCIAL, {"id": "s1", "platform": "X", "created_at": "2026-11-25T08:00:00Z",
                             "text": "$tsla to the moon \U0001F680"}, offset=7, partition=1),
        ]
    )  # fmt: skip
    assert batch.rejected == []
    news, post = batch.events
    assert (news.kind, news.source, news.text) == (
        "news",
        "reuters",
        "Microsoft raises dividend\nShares of Nvidia rose",
    )
    assert news.tickers == ["ORCL", "MSFT", "NVDA"]  # explicit tickers first, then linked ones
    assert news.event_time.isoformat() == "2026-11-25T08:00:00+00:00"
    assert (post.kind, post.source, post.tickers) == ("social", "x", ["TSLA"])
    assert (post.source_topic, post.partition, post.offset) == (SOCIAL, 1, 7)
    assert post.ingested_at.timestamp() == 1_795_000_000
    assert (news.event_id, news.source_id) == ("news:reuters:n1", "n1")
    assert (post.event_id, post.source_id) == ("social:x:s1", "s1")


def test_the_same_id_from_different_feeds_names_different_events(parser: EventParser) -> None:
    at = "2026-11-25T08:00:00Z"
    batch = parser.parse(
        [
            message(NEWS, {"id": "42", "source": "reuters", "published_at": at, "headline": "Apple beats"}),
            message(NEWS, {"id": "42", "source": "Bloomberg", "published_at": at, "headline": "Apple beats"}),
            message(SOCIAL, {"id": "42", "platform": "x", "created_at": at, "text": "Apple beats"}),
            message(NEWS, {"id": "a:b", "source": "odd:feed%", "published_at": at, "headline": "Apple beats"}),
            message(NEWS, {"id": "42", "source": "REUTERS", "published_at": at, "headline": "Apple beats"}),
        ]
    )
    assert [e.event_id for e in batch.events] == [
        "news:reuters:42", "news:bloomberg:42", "social:x:42", "news:odd%3Afeed%25:a:b", "news:reuters:42",
    ]  # fmt: skip
    assert {e.source_id for e in batch.events} == {"42", "a:b"}


def test_text_is_cut_to_the_scoring_bound(parser: EventParser) -> None:
    post = {"id": "s", "platform": "x", "created_at": "2026-11-25T08:00:00Z", "text": "word " * 100}
    (event,) = parser.parse([message(SOCIAL, post)]).events
    assert len(event.text) <= SETTINGS.max_text_chars


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"{not json", "invalid_json"),
        (b'{"id": "x", "text": "\xc3\x28"}', "invalid_utf8"),
        ({"id": "x", "platform": "x", "created_at": "2026-11-25T08:00:00Z"}, "invalid_event"),
        ({"id": "x", "platform": "x", "created_at": "2026-11-25T08:00:00Z", "text": ["a"]}, "invalid_event"),
        (
            {"id": "x", "platform": "x", "created_at": "2026-11-25T08:00:00Z", "text": "\x00\x01\u200b"},
            "empty_text",
        ),
        ({"id": "x", "platform": "x", "created_at": "2026-11-25T08:00:00Z", "text": "y" * 3000}, "too_large"),
    ],
)
def test_bad_messages_are_rejected_with_a_reason_and_keep_their_bytes(parser: EventParser, value, reason: str) -> None:
    bad = message(SOCIAL, value, offset=42)
    batch = parser.parse([message(SOCIAL, {"id": "ok", "platform": "x", "created_at": "2026-11-25T08:00:00Z",
                                           "text": "fine"}, offset=41), bad])  # fmt: skip
    assert [e.source_id for e in batch.events] == ["ok"]
    (rejected,) = batch.rejected
    assert rejected.reason == reason
    assert rejected.error
    assert rejected.message is bad
    assert rejected.dlq_id == f"{SOCIAL}:0:42:1795000000000"


def test_batch_token_names_offset_ranges_per_partition() -> None:
    from finpulse.streams.pipeline import batch_token

    messages = [message(SOCIAL, b"{}", offset=o, partition=p) for p, o in [(1, 5), (0, 9), (1, 3), (0, 10)]]
    assert batch_token(messages) == f"{SOCIAL}:0:9-10,{SOCIAL}:1:3-5"
