import gzip
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from finpulse.replay import ReplayError, ReplayRecord, iter_records, parse_time
from finpulse.schemas import NewsArticle, SocialPost

NOW = datetime(2025, 3, 3, 12, 0, tzinfo=UTC)
VALID_CSV = Path(__file__).resolve().parents[3] / "shared" / "data" / "twitter-financial-news" / "valid.csv"


def clock() -> datetime:
    return NOW


def replay(path: Path, **kwargs: object) -> list[ReplayRecord]:
    return list(iter_records(path, clock=clock, **kwargs))  # type: ignore[arg-type]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def jsonl(path: Path, *rows: object) -> Path:
    return write(path, "".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))


def test_csv_replays_as_social_posts_with_derived_ids_now_and_source(tmp_path: Path) -> None:
    path = write(
        tmp_path / "twitter-financial-news" / "valid.csv", 'text,label\n$AAPL beats,1\n"multi\nline",2\n'
    )
    records = replay(path)
    assert [(r.topic_name, r.key, r.row, r.error) for r in records] == [
        ("social.raw", b"valid-1", 1, None),
        ("social.raw", b"valid-2", 2, None),
    ]
    post = SocialPost.model_validate_json(records[0].value)
    assert post == SocialPost(id="valid-1", platform="twitter", created_at=NOW, text="$AAPL beats")
    assert "label" not in json.loads(records[0].value)
    assert SocialPost.model_validate_json(records[1].value).text == "multi\nline"


def test_source_falls_back_to_the_file_stem_and_can_be_given(tmp_path: Path) -> None:
    path = write(tmp_path / "desk_notes.csv", "text\nhello\n")
    assert json.loads(replay(path)[0].value)["platform"] == "desk_notes"
    assert json.loads(replay(path, source="stocktwits")[0].value)["platform"] == "stocktwits"


def test_text_column_option(tmp_path: Path) -> None:
    path = write(tmp_path / "posts.csv", "tweet,author,created_at\nTesla up,ann,2024-05-01T10:00:00Z\n")
    post = SocialPost.model_validate_json(replay(path, text_col="tweet")[0].value)
    assert (post.text, post.author, post.created_at) == (
        "Tesla up",
        "ann",
        datetime(2024, 5, 1, 10, tzinfo=UTC),
    )


def test_csv_as_news_maps_the_text_column_to_the_headline(tmp_path: Path) -> None:
    path = write(
        tmp_path / "wire.csv", "title,body,source,tickers\nApple beats,Shares rose.,reuters,AAPL|msft\n"
    )
    [record] = replay(path, kind="news", text_col="title")
    assert record.topic_name == "news.raw"
    article = NewsArticle.model_validate_json(record.value)
    assert (article.headline, article.body, article.source) == ("Apple beats", "Shares rose.", "reuters")
    assert article.tickers == ["AAPL", "MSFT"]
    assert article.published_at == NOW


def test_csv_kind_is_inferred_per_row_from_the_headline(tmp_path: Path) -> None:
    path = write(tmp_path / "mixed.csv", "headline,text\nApple beats,\n,$TSLA to the moon\n")
    assert [r.topic_name for r in replay(path)] == ["news.raw", "social.raw"]


def test_jsonl_rows(tmp_path: Path) -> None:
    path = jsonl(
        tmp_path / "feed.jsonl",
        {
            "id": "n1",
            "headline": "Nvidia rallies",
            "source": "ft",
            "published_at": "2024-05-01T10:00:00+02:00",
        },
        {"text": "$AAPL 🚀", "platform": "x", "created_at": 1714564800000, "tickers": ["aapl"], "extra": 1},
        "",
        {"id": 42, "text": "naive time", "created_at": "2024-05-01 12:00:00"},
    )
    news, post, naive = replay(path)
    assert news.topic_name == "news.raw" and news.key == b"n1"
    assert NewsArticle.model_validate_json(news.value).published_at == datetime(2024, 5, 1, 8, tzinfo=UTC)
    social = SocialPost.model_validate_json(post.value)
    assert (post.key, social.created_at, social.tickers) == (
        b"feed-2",
        datetime(2024, 5, 1, 12, tzinfo=UTC),
        ["AAPL"],
    )
    assert (naive.key, naive.row) == (b"42", 4)  # blank line 3 is skipped, row numbers stay line numbers
    assert SocialPost.model_validate_json(naive.value).created_at == datetime(2024, 5, 1, 12, tzinfo=UTC)


def test_gzipped_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "feed.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"text": "hello"}\n'))
    [record] = replay(path)
    assert (record.key, record.error) == (b"feed-1", None)


def test_bad_rows_are_kept_with_a_reason(tmp_path: Path) -> None:
    path = write(
        tmp_path / "bad.jsonl",
        '{"text": "fine"}\n'
        "{not json\n"
        "[1, 2]\n"
        '{"text": ""}\n'
        '{"text": "when?", "created_at": "yesterday-ish"}\n'
        '{"text": 5}\n',
    )
    path.write_bytes(path.read_bytes() + b'{"text": "caf\xe9"}\n')
    records = replay(path)
    assert [r.row for r in records] == [1, 2, 3, 4, 5, 6, 7]
    fine, not_json, array, empty, bad_time, number, latin1 = records
    assert fine.error is None
    assert not_json.value == b"{not json" and not_json.error and "invalid JSON" in not_json.error
    assert array.value == b"[1, 2]" and array.error == "not a JSON object"
    assert empty.error and empty.error.startswith("text:")
    assert bad_time.error and "created_at" in bad_time.error
    assert json.loads(bad_time.value)["created_at"] == "yesterday-ish"
    assert number.error and "text" in number.error
    assert latin1.value == b'{"text": "caf\xe9"}' and latin1.error == "invalid UTF-8"
    assert all(r.topic_name == "social.raw" and r.key for r in records)


def test_csv_with_invalid_utf8_keeps_the_original_bytes(tmp_path: Path) -> None:
    path = tmp_path / "latin.csv"
    path.write_bytes(b"text\ncaf\xe9 au lait\nfine\n")
    broken, fine = replay(path)
    assert broken.error and b"caf\xe9 au lait" in broken.value
    with pytest.raises(UnicodeDecodeError):
        broken.value.decode("utf-8")
    assert fine.error is None


def test_kind_forces_the_topic_even_for_unparsable_lines(tmp_path: Path) -> None:
    path = write(tmp_path / "wire.jsonl", "oops\n")
    [record] = replay(path, kind="news")
    assert (record.topic_name, record.error) == ("news.raw", "invalid JSON: Expecting value at column 1")


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("notes.txt", "text\nx\n", "unknown format"),
        ("no_text.csv", "body,label\nx,1\n", r"no text column; expected one of \['text', 'headline'\]"),
    ],
)
def test_files_that_cannot_be_replayed_fail_at_once(
    tmp_path: Path, name: str, content: str, message: str
) -> None:
    path = write(tmp_path / name, content)
    with pytest.raises(ReplayError, match=message):
        iter_records(path)


def test_missing_file_fails_at_once(tmp_path: Path) -> None:
    with pytest.raises(ReplayError, match="cannot open"):
        iter_records(tmp_path / "missing.jsonl")


def test_records_are_produced_lazily(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "big.jsonl", *({"text": f"post {i}"} for i in range(1000)))
    records = iter_records(path, clock=clock)
    assert isinstance(records, Iterator)
    assert next(records).key == b"big-1"


def test_parse_time_forms() -> None:
    expected = datetime(2018, 10, 10, 20, 19, 24, tzinfo=UTC)
    for value in (
        "2018-10-10T20:19:24Z",
        "2018-10-10T22:19:24+02:00",
        "2018-10-10 20:19:24",
        "Wed, 10 Oct 2018 20:19:24 GMT",
        "Wed Oct 10 20:19:24 +0000 2018",
        1539202764,
        "1539202764000",
    ):
        assert parse_time(value) == expected, value
    assert parse_time("not a time") is None
    assert parse_time(True) is None


@pytest.mark.skipif(not VALID_CSV.exists(), reason="shared data set not present")
def test_the_public_test_split_replays_as_valid_twitter_posts() -> None:
    records = list(iter_records(VALID_CSV, clock=clock))
    assert len(records) > 2000
    assert all(r.error is None and r.topic_name == "social.raw" for r in records)
    first = SocialPost.model_validate_json(records[0].value)
    assert (first.id, first.platform) == ("valid-1", "twitter")
