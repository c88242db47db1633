-- finpulse opinion indexes (issue 5): the streamed index, and the same figures computed in SQL.
--
-- Definitions (keys, windows, figures, z-scores) are those of finpulse.streams.indexes; the two sides
-- agree on closed windows (tests/integration/test_indexes.py checks it).

-- The streamed index, written by the worker's index agent. Every change of a window (an open window
-- that grew, a window closing, late events counted on a closed one) is a new version row; the engine
-- keeps the newest version (largest updated_at) of each (scope, key, window_s, window_start) when it
-- merges parts. Merges happen in the background, so readers that need exactly one row per window read
-- `opinion_index FINAL` or the view opinion_index_final. index_id names one version (scope:key, window,
-- state epoch, revision): the writer skips ids already stored, so a retried insert adds nothing.
CREATE TABLE IF NOT EXISTS opinion_index
(
    scope LowCardinality(String),
    key String,
    window_s UInt32,
    window_start DateTime64(3, 'UTC'),
    window_end DateTime64(3, 'UTC'),
    buzz UInt64,
    mean_score Float64,
    net_sentiment Float64,
    bullish_share Float64,
    neutral_share Float64,
    bearish_share Float64,
    dispersion Float64,
    buzz_z Nullable(Float64),
    sentiment_z Nullable(Float64),
    baseline_windows UInt16,
    late_events UInt64,
    closed Bool,
    updated_at DateTime64(6, 'UTC'),
    index_id String,
    revision UInt32,
    -- "which of these record ids are stored already" reads this instead of the whole table
    PROJECTION by_index_id (SELECT index_id ORDER BY index_id)
)
ENGINE = ReplacingMergeTree(updated_at)
PARTITION BY toYYYYMM(window_start)
ORDER BY (scope, key, window_s, window_start)
SETTINGS non_replicated_deduplication_window = 1000, deduplicate_merge_projection_mode = 'rebuild';

CREATE VIEW IF NOT EXISTS opinion_index_final AS
SELECT * FROM opinion_index FINAL;

-- Ticker → market code, as the worker's entity table has it (finpulse.streams.index_agent.sync_ticker_markets
-- writes it at start-up, before any event is stored). The market view below reads it for every insert.
CREATE TABLE IF NOT EXISTS index_ticker_markets
(
    ticker String,
    market LowCardinality(String),
    updated_at DateTime64(6, 'UTC')
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY ticker;

-- The SQL index keeps aggregate states per key and minute of event time, whatever the window sizes:
-- every window of a multiple of 60 s is a merge of its minutes (counts add up, avg and varPop states
-- merge exactly), so the window sizes and the baseline length live only in the view below, which a
-- later migration can replace without rebuilding any state. Late events are simply counted. Moments are
-- taken in Float64 of the stored Float32 scores (varPop over Float32 loses digits where scores are close).
CREATE TABLE IF NOT EXISTS opinion_minute_state
(
    scope LowCardinality(String),
    key String,
    minute DateTime('UTC'),
    events SimpleAggregateFunction(sum, UInt64),
    bullish SimpleAggregateFunction(sum, UInt64),
    bearish SimpleAggregateFunction(sum, UInt64),
    neutral SimpleAggregateFunction(sum, UInt64),
    score_avg AggregateFunction(avg, Float64),
    score_var AggregateFunction(varPop, Float64),
    last_event_time SimpleAggregateFunction(max, DateTime64(3, 'UTC'))
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (scope, key, minute);

-- scope ticker: once per distinct ticker of the event
CREATE MATERIALIZED VIEW IF NOT EXISTS opinion_minute_ticker_mv TO opinion_minute_state AS
SELECT
    'ticker' AS scope,
    toString(ticker) AS key,
    toStartOfMinute(toDateTime(event_time, 'UTC')) AS minute,
    count() AS events,
    countIf(label = 'bullish') AS bullish,
    countIf(label = 'bearish') AS bearish,
    countIf(label = 'neutral') AS neutral,
    avgState(toFloat64(score)) AS score_avg,
    varPopState(toFloat64(score)) AS score_var,
    max(event_time) AS last_event_time
FROM scored_events
ARRAY JOIN arrayDistinct(tickers) AS ticker
GROUP BY scope, key, minute;

-- scope source: the event's kind ('news', 'social') and kind:outlet / kind:platform
CREATE MATERIALIZED VIEW IF NOT EXISTS opinion_minute_source_mv TO opinion_minute_state AS
SELECT
    'source' AS scope,
    source_key AS key,
    toStartOfMinute(toDateTime(event_time, 'UTC')) AS minute,
    count() AS events,
    countIf(label = 'bullish') AS bullish,
    countIf(label = 'bearish') AS bearish,
    countIf(label = 'neutral') AS neutral,
    avgState(toFloat64(score)) AS score_avg,
    varPopState(toFloat64(score)) AS score_var,
    max(event_time) AS last_event_time
FROM scored_events
ARRAY JOIN [toString(kind), concat(toString(kind), ':', toString(source))] AS source_key
GROUP BY scope, key, minute;

-- scope market: 'all', and once per distinct market of the event's tickers (unknown tickers have none)
CREATE MATERIALIZED VIEW IF NOT EXISTS opinion_minute_market_mv TO opinion_minute_state AS
WITH (
    SELECT (groupArray(ticker), groupArray(market))
    FROM (SELECT ticker, argMax(market, updated_at) AS market FROM index_ticker_markets GROUP BY ticker)
) AS markets
SELECT
    'market' AS scope,
    market_key AS key,
    toStartOfMinute(toDateTime(event_time, 'UTC')) AS minute,
    count() AS events,
    countIf(label = 'bullish') AS bullish,
    countIf(label = 'bearish') AS bearish,
    countIf(label = 'neutral') AS neutral,
    avgState(toFloat64(score)) AS score_avg,
    varPopState(toFloat64(score)) AS score_var,
    max(event_time) AS last_event_time
FROM scored_events
ARRAY JOIN arrayConcat(
    ['all'],
    arrayDistinct(arrayFilter(m -> m != '', arrayMap(t -> transform(toString(t), markets.1, markets.2, ''), tickers)))
) AS market_key
GROUP BY scope, key, minute;

-- The SQL index, with the columns of opinion_index, for every window of the default sizes (60, 300,
-- 3600 and 86400 s) that has events. Z-scores: against the previous 12 windows of the same key and size
-- (FINPULSE_INDEX_BASELINE_WINDOWS), reported from 3 of them on (FINPULSE_INDEX_MIN_BASELINE), with the
-- stream's denominator floors. closed: the window ends at or before the latest event time stored minus
-- 60 s (FINPULSE_INDEX_ALLOWED_LATENESS_S). late_events is 0: SQL counts late events in buzz. Other
-- settings need a migration that replaces this view (the minute states stay as they are).
CREATE VIEW IF NOT EXISTS opinion_index_sql AS
WITH
    60 AS allowed_lateness_s,
    (SELECT max(last_event_time) FROM opinion_minute_state WHERE scope = 'market' AND key = 'all') AS latest_event_time
SELECT
    scope,
    key,
    window_s,
    window_start,
    window_end,
    buzz,
    mean_score,
    net_sentiment,
    bullish_share,
    neutral_share,
    bearish_share,
    dispersion,
    if(baseline_count >= 3, (buzz - baseline_buzz_mean) / greatest(baseline_buzz_std, sqrt(greatest(baseline_buzz_mean, 1))), NULL) AS buzz_z,
    if(baseline_count >= 3, (mean_score - baseline_score_mean) / greatest(baseline_score_std, 0.05), NULL) AS sentiment_z,
    toUInt16(baseline_count) AS baseline_windows,
    toUInt64(0) AS late_events,
    window_end <= latest_event_time - toIntervalSecond(allowed_lateness_s) AS closed,
    now64(6, 'UTC') AS updated_at
FROM
(
    SELECT
        *,
        count() OVER baseline AS baseline_count,
        avg(buzz) OVER baseline AS baseline_buzz_mean,
        stddevPop(buzz) OVER baseline AS baseline_buzz_std,
        avg(mean_score) OVER baseline AS baseline_score_mean,
        stddevPop(mean_score) OVER baseline AS baseline_score_std
    FROM
    (
        SELECT
            scope,
            key,
            window_s,
            toDateTime64(intDiv(toUnixTimestamp(minute), window_s) * window_s, 3, 'UTC') AS window_start,
            addSeconds(window_start, window_s) AS window_end,
            sum(events) AS buzz,
            avgMerge(score_avg) AS mean_score,
            (toInt64(sum(bullish)) - toInt64(sum(bearish))) / buzz AS net_sentiment,
            sum(bullish) / buzz AS bullish_share,
            sum(neutral) / buzz AS neutral_share,
            sum(bearish) / buzz AS bearish_share,
            sqrt(greatest(varPopMerge(score_var), 0)) AS dispersion
        FROM opinion_minute_state
        ARRAY JOIN [60, 300, 3600, 86400] AS window_s
        GROUP BY scope, key, window_s, window_start
    )
    WINDOW baseline AS (PARTITION BY scope, key, window_s ORDER BY window_start ROWS BETWEEN 12 PRECEDING AND 1 PRECEDING)
);
