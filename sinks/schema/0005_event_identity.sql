-- Event identity (issue 10): ids from different feeds are independent, so event_id becomes
-- <kind>:<source>:<id> (finpulse.identity; a ':' in the source written %3A, a '%' written %25) and the
-- message's own id moves to a new source_id column. Before this, a Reuters article and a post on X
-- with the same id were one event and the second was dropped.
--
-- event_id is in both tables' sort keys, where no ALTER can rewrite it, so each table is rebuilt: its new
-- shape is created as <table>__next, filled from the live table with the ids rewritten, exchanged with
-- the live table, and the old one dropped (finpulse.sinks.migrations runs a rebuild so that a repeated or
-- interrupted run redoes only what is missing). It runs before the upgraded worker consumes anything;
-- the materialized views of 0002 follow the name scored_events, and the copy does not pass through
-- them, so the SQL index counts every event once.
--
-- retrain_samples goes first: its rows know only the raw id, and take kind and source from the
-- scored_events row of that id, which is unique until scored_events is rebuilt. A sample with no such
-- row (none is written without one) keeps its id.

CREATE TABLE retrain_samples__next
(
    event_id String,
    source_id String,
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

INSERT INTO retrain_samples__next
    (event_id, source_id, text, p_bearish, p_neutral, p_bullish, label, confidence, reason, model_version, flagged_at)
SELECT
    if(
        scored.kind = '',
        sample.event_id,
        concat(scored.kind, ':', replaceAll(replaceAll(scored.source, '%', '%25'), ':', '%3A'), ':', sample.event_id)
    ),
    sample.event_id, sample.text, sample.p_bearish, sample.p_neutral, sample.p_bullish, sample.label,
    sample.confidence, sample.reason, sample.model_version, sample.flagged_at
FROM retrain_samples AS sample
LEFT JOIN
(
    SELECT event_id, toString(any(kind)) AS kind, toString(any(source)) AS source
    FROM scored_events
    GROUP BY event_id
) AS scored ON sample.event_id = scored.event_id
SETTINGS insert_deduplicate = 0, join_use_nulls = 0;

CREATE TABLE scored_events__next
(
    event_id String,
    source_id String,
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

INSERT INTO scored_events__next
    (event_id, source_id, kind, source, tickers, primary_ticker, text, label, p_bearish, p_neutral, p_bullish,
     score, confidence, model_version, event_time, ingested_at, scored_at, stored_at, source_topic, partition,
     offset)
SELECT
    concat(toString(kind), ':', replaceAll(replaceAll(toString(source), '%', '%25'), ':', '%3A'), ':', event_id),
    event_id, kind, source, tickers, primary_ticker, text, label, p_bearish, p_neutral, p_bullish,
    score, confidence, model_version, event_time, ingested_at, scored_at, stored_at, source_topic, partition,
    offset
FROM scored_events
SETTINGS insert_deduplicate = 0, max_partitions_per_insert_block = 0;
