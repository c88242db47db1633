"""The one settings object. Every knob is an environment variable with the prefix ``FINPULSE_``."""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# RFC 6750's b64token: what an Authorization: Bearer header can carry as is.
_BEARER_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


def default_model_dir() -> Path:
    """The model version the pipeline scores with unless ``FINPULSE_MODEL_DIR`` says otherwise."""
    from finpulse.models import DEFAULT_MODEL_DIR

    return DEFAULT_MODEL_DIR


class Settings(BaseSettings):
    """Runtime configuration of the worker, the CLI and the benchmarks.

    Example:
        >>> Settings(topic_prefix="desk.").topic("news.raw")
        'desk.news.raw'
    """

    model_config = SettingsConfigDict(env_prefix="FINPULSE_", extra="ignore")

    data_dir: Path = Field(Path("./var"), description="Embedded state: chDB under clickhouse/, logs, runs.")
    broker: str = Field("", description="Kafka bootstrap servers; empty = start the embedded Tansu broker.")
    broker_storage: str = Field(
        "memory://tansu/",
        description="Storage of the embedded broker: memory://tansu/ (empty after a restart) or s3://bucket/ "
        "(persistent; endpoint and credentials from AWS_ENDPOINT, AWS_ACCESS_KEY_ID, ... as Tansu reads them).",
    )
    clickhouse_dsn: str = Field(
        "", description="chdb:///dir or http(s)://user:pass@host:port/db; empty = chdb://DATA_DIR/clickhouse."
    )
    topic_prefix: str = Field("finpulse.", description="Prefix of every topic.")
    model_dir: Path | None = Field(None, description="Model version the scorer loads; empty = shipped default.")

    batch_size: int = Field(512, ge=1, description="Most events scored and inserted together (one insert per table).")
    batch_max_wait_s: float = Field(0.5, gt=0, description="Longest wait to fill a micro-batch.")
    topic_partitions: int = Field(4, ge=1, description="Partitions of the topics finpulse creates.")
    retrain_confidence_threshold: float = Field(
        0.55, ge=0, le=1, description="Scored events with calibrated confidence below this go to retraining."
    )
    max_text_chars: int = Field(2000, ge=16, description="Text is cut to this many characters for scoring.")
    max_message_bytes: int = Field(1_000_000, ge=1024, description="Larger raw messages go to the DLQ.")
    dlq_payload_head_bytes: int = Field(
        2048, ge=0, description="Bytes of a rejected message kept in the dlq_events table (payload_head)."
    )
    dlq_topic_max_bytes: int = Field(
        262_144,
        ge=0,
        description="Bytes of a rejected message republished on events.dlq (the SHA-256 covers all).",
    )
    entity_aliases_csv: Path | None = Field(None, description="Extra company aliases (ticker,alias[,market]).")

    worker_id: str = Field("finpulse-worker", description="Faust app id = Kafka consumer group.")
    worker_web_host: str = Field("127.0.0.1", description="Host of the worker's HTTP endpoint (health, SQL).")
    worker_web_port: int = Field(6066, ge=0, le=65535, description="Port of the worker's HTTP endpoint.")
    sql_token: SecretStr = Field(
        SecretStr(""),
        description="Bearer token the worker's HTTP endpoint asks for on all but /health (read-only SQL); "
        "empty = none, allowed only on a loopback FINPULSE_WORKER_WEB_HOST.",
    )
    sql_max_rows: int = Field(
        100_000, ge=1, description="Most rows an answer of finpulse sql or /sql may have; a larger one is refused."
    )
    sql_max_bytes: int = Field(
        64 << 20, ge=1024, description="Most bytes (uncompressed) an answer of finpulse sql or /sql may have."
    )
    broker_rebalance_timeout_s: float = Field(
        3.0, gt=0, description="Consumer group rebalance timeout; short keeps group joins fast."
    )
    broker_session_timeout_s: float = Field(
        15.0,
        gt=0,
        description="A worker silent this long leaves the group: how soon a crashed worker's partitions move.",
    )
    clickhouse_retry_max_s: float = Field(
        600.0,
        gt=0,
        description="How long an insert is retried while ClickHouse is down before the worker fails.",
    )

    index_windows_s: list[int] = Field(
        [60, 300, 3600, 86400], description="Opinion index window sizes in seconds of event time (JSON list)."
    )
    index_baseline_windows: int = Field(
        12,
        ge=1,
        description="Previous closed windows of the same key and size that z-scores compare against.",
    )
    index_min_baseline: int = Field(3, ge=2, description="Closed windows needed before a z-score is reported.")
    index_allowed_lateness_s: float = Field(
        60.0, ge=0, description="Events later than this behind the event-time watermark are reported as late."
    )
    index_flush_s: float = Field(
        1.0,
        gt=0,
        description="Longest wait to gather index input into one batch: while the index keeps up, each window "
        "it touches is updated about once per flush, however the scored batches arrive.",
    )
    alert_rules_path: Path | None = Field(None, description="YAML/TOML alert rules; empty = the packaged defaults.")
    alert_webhooks: list[str] = Field([], description="Webhook URLs that receive every alert (JSON list).")
    alert_webhook_secret: SecretStr = Field(
        SecretStr(""), description="HMAC-SHA256 key signing webhook deliveries (X-Finpulse-Signature)."
    )
    alert_webhook_max_attempts: int = Field(
        5, ge=1, description="Delivery attempts per webhook (exponential backoff) before alerts.undelivered."
    )

    @field_validator("sql_token")
    @classmethod
    def _token_fits_a_bearer_header(cls, value: SecretStr) -> SecretStr:
        token = value.get_secret_value()
        if token and (len(token) < 16 or not _BEARER_TOKEN.fullmatch(token)):
            raise ValueError(
                "the SQL token must be at least 16 characters of A-Z a-z 0-9 - . _ ~ + / (then =), "
                "e.g. the output of: openssl rand -hex 32"
            )
        return value

    @field_validator("topic_prefix")
    @classmethod
    def _prefix_is_a_topic_name(cls, value: str) -> str:
        allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
        if not set(value) <= allowed:
            raise ValueError(f"topic prefix {value!r} may only hold letters, digits, '.', '_' and '-'")
        return value

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"

    @property
    def resolved_clickhouse_dsn(self) -> str:
        return self.clickhouse_dsn or f"chdb://{(self.data_dir / 'clickhouse').resolve()}"

    @property
    def resolved_model_dir(self) -> Path:
        return self.model_dir or default_model_dir()

    @property
    def embedded_broker(self) -> bool:
        return not self.broker


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
