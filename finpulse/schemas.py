"""Event schemas at the pipeline's boundaries: what arrives, what is scored, what is flagged."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

Kind = Literal["news", "social"]


def _assume_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


# Feeds often send naive timestamps; they are read as UTC rather than rejected.
EventTime = Annotated[datetime, AfterValidator(_assume_utc)]

Label = Literal["bearish", "neutral", "bullish"]


class _Inbound(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True, frozen=True)

    id: str = Field(min_length=1, max_length=256)
    tickers: list[str] | None = None

    @field_validator("tickers")
    @classmethod
    def _upper_tickers(cls, tickers: list[str] | None) -> list[str] | None:
        return None if tickers is None else [t.strip().lstrip("$").upper() for t in tickers if t.strip()]


class NewsArticle(_Inbound):
    """One message of ``news.raw``."""

    source: str = Field(min_length=1, max_length=128, description="Outlet, e.g. 'reuters'.")
    published_at: EventTime
    headline: str = Field(min_length=1)
    body: str = ""
    url: str | None = None


class SocialPost(_Inbound):
    """One message of ``social.raw``."""

    platform: str = Field(min_length=1, max_length=128, description="e.g. 'x', 'stocktwits', 'reddit'.")
    author: str = ""
    created_at: EventTime
    text: str = Field(min_length=1)


class TextEvent(BaseModel):
    """A news article or social post normalized to what scoring and storage need."""

    model_config = ConfigDict(frozen=True)

    event_id: str = Field(description="<kind>:<source>:<id>, see finpulse.identity.")
    source_id: str = Field(description="The message's own id, unique within its kind and source only.")
    kind: Kind
    source: str
    text: str
    tickers: list[str]
    event_time: datetime
    ingested_at: datetime
    source_topic: str = ""
    partition: int = -1
    offset: int = -1


class ScoredEvent(BaseModel):
    """One message of ``events.scored`` and one row of ``scored_events``."""

    event_id: str
    source_id: str
    kind: Kind
    source: str
    tickers: list[str]
    text: str
    label: Label
    p_bearish: float
    p_neutral: float
    p_bullish: float
    score: float = Field(description="p_bullish - p_bearish, in [-1, 1].")
    confidence: float = Field(description="Calibrated probability of the predicted label.")
    model_version: str
    event_time: datetime
    ingested_at: datetime
    scored_at: datetime


class RetrainSample(BaseModel):
    """One message of ``retrain.samples``: a scored event the model was unsure about."""

    event_id: str
    source_id: str
    text: str
    p_bearish: float
    p_neutral: float
    p_bullish: float
    label: Label
    confidence: float
    reason: str
    model_version: str
    flagged_at: datetime


Scope = Literal["ticker", "source", "market"]


class OpinionIndex(BaseModel):
    """One message of ``indexes`` and one row of ``opinion_index``: opinion in one window of event time.

    ``key`` is the ticker (scope ``ticker``), ``news``/``social`` or ``news:reuters``-style outlet/platform keys
    (scope ``source``), or ``all`` / a market code such as ``US`` or ``HK`` (scope ``market``).
    """

    scope: Scope
    key: str
    window_s: int = Field(description="Window size in seconds: 60, 300, 3600, 86400 by default.")
    window_start: datetime
    window_end: datetime
    buzz: int = Field(description="Events in the window.")
    mean_score: float
    net_sentiment: float = Field(description="(bullish - bearish) / total.")
    bullish_share: float
    neutral_share: float
    bearish_share: float
    dispersion: float = Field(description="Standard deviation of score.")
    buzz_z: float | None = Field(None, description="Buzz z-score against the key's previous closed windows.")
    sentiment_z: float | None = Field(None, description="Mean-score z-score against the same baseline.")
    baseline_windows: int = Field(0, description="Closed windows the z-scores are measured against.")
    late_events: int = Field(
        0, description="Events that arrived after the allowed lateness (counted in SQL only)."
    )
    closed: bool = Field(False, description="True once the window is final.")
    updated_at: datetime


class Alert(BaseModel):
    """One message of ``alerts`` and one row of ``alerts``: a rule firing for an entity, or its recovery."""

    alert_id: str = Field(description="Stable id of this state change: rule, entity, window, state.")
    rule: str
    state: Literal["firing", "resolved"]
    severity: Literal["info", "warning", "critical"] = "warning"
    scope: Scope
    key: str
    window_s: int
    window_start: datetime
    observed: dict[str, float | int | None] = Field(description="The values the rule looked at.")
    threshold: dict[str, float | int] = Field(description="The rule's thresholds.")
    message: str
    top_event_ids: list[str] = Field(default_factory=list)
    top_event_texts: list[str] = Field(default_factory=list)
    fired_at: datetime
