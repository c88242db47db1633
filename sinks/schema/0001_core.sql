-- finpulse core tables: scored events, rejected messages, samples flagged for retraining.
--
-- Every table is a plain (non-replicated) MergeTree, which runs on chDB and on a single ClickHouse
-- server alike. Such a table ignores insert_deduplication_token unless it keeps a deduplication window,
-- hence non_replicated_deduplication_window on each. Idempotency by key (one row per event) is the
-- writer's job (finpulse.sinks.writer): it skips keys already stored before each insert.
--
-- partition and offset are Int32 and Int64, as in Kafka itself, where -1 means "none".

CREATE TABLE IF NOT EXISTS scored_events
(
    event_id String,
    kind LowCardinality(String),
    source LowCardinality(String),
    tickers Array(LowCardinality(String)),
    primary_ticker LowCardinality(String) DEFAULT if(empty(tickers), '', tickers[1]),
    text String,
    label LowCardinality(String),
    p_bearish Float32,
    p_neutral Float32,
    p_bullish Float32,
    score Float32,
    confidence Float32,
    model_version LowCardinality(String),
    event_time DateTime64(3, 'UTC'),
    ingested_at DateTime64(3, 'UTC'),
    scored_at DateTime64(6, 'UTC'),
    stored_at DateTime64(6, 'UTC') DEFAULT now64(6, 'UTC'),
    source_topic LowCardinality(String) DEFAULT '',
    partition Int32 DEFAULT -1,
    offset Int64 DEFAULT -1,
    -- "which of these event ids are stored already" reads this instead of the whole table
    PROJECTION by_event_id (SELECT event_id ORDER BY event_id)
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(event_time)
ORDER BY (primary_ticker, event_time, event_id)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE TABLE IF NOT EXISTS dlq_events
(
    dlq_id String,
    reason LowCardinality(String),
    error String,
    source_topic LowCardinality(String),
    partition Int32,
    offset Int64,
    payload_sha256 String,
    payload_head String,
    payload_bytes UInt64,
    received_at DateTime64(6, 'UTC')
)
ENGINE = MergeTree
ORDER BY dlq_id
SETTINGS non_replicated_deduplication_window = 1000;

CREATE TABLE IF NOT EXISTS retrain_samples
(
    event_id String,
    text String,
    p_bearish Float32,
    p_neutral Float32,
    p_bullish Float32,
    label LowCardinality(String),
    confidence Float32,
    reason LowCardinality(String),
    model_version LowCardinality(String),
    flagged_at DateTime64(6, 'UTC')
)
ENGINE = MergeTree
ORDER BY event_id
SETTINGS non_replicated_deduplication_window = 1000;
