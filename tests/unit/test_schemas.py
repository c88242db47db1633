from __future__ import annotations

import pytest
from pydantic import ValidationError

from finpulse.schemas import NewsArticle, SocialPost


def test_news_article_parses_and_normalizes_tickers() -> None:
    article = NewsArticle.model_validate_json(
        '{"id": "n1", "source": "reuters", "published_at": "2026-11-25T09:30:00+01:00",'
        ' "headline": " Apple beats ", "tickers": ["$aapl", " msft "], "unknown": 1}'
    )
    assert article.headline == "Apple beats"
    assert article.tickers == ["AAPL", "MSFT"]
    assert article.published_at.utcoffset() is not None
    assert article.body == "" and article.url is None


@pytest.mark.parametrize(
    ("document", "field"),
    [
        ('{"id": "s1", "platform": "x", "created_at": "2026-11-25T09:30:00Z"}', "text"),
        ('{"id": "s1", "platform": "x", "created_at": "yesterday", "text": "hi"}', "created_at"),
        ('{"id": "", "platform": "x", "created_at": "2026-11-25T09:30:00Z", "text": "hi"}', "id"),
        ('{"id": "s1", "platform": "x", "created_at": "2026-11-25T09:30:00Z", "text": 42}', "text"),
    ],
)
def test_social_post_errors_name_the_field(document: str, field: str) -> None:
    with pytest.raises(ValidationError) as error:
        SocialPost.model_validate_json(document)
    assert field in {str(e["loc"][0]) for e in error.value.errors()}


def test_naive_times_are_read_as_utc() -> None:
    post = SocialPost.model_validate_json(
        '{"id": "s", "platform": "x", "created_at": "2026-11-25T09:30:00", "text": "t"}'
    )
    assert post.created_at.isoformat() == "2026-11-25T09:30:00+00:00"
