-- Alerts: one row per state change of a rule for an entity (it fired, or it resolved).
--
-- Idempotent by alert_id (a hash of rule, entity, window and state): the writer skips ids already
-- stored, so a redelivered batch writes no second row. observed and threshold are maps of the figures
-- the rule looked at (observed['sentiment_z'], threshold['min_buzz']…); a figure that was not measured
-- is absent from observed. window_s = 0 marks an alert about a single event (window_start = its time).
-- The worker reloads the latest state per (rule, scope, key) at start-up, which the sort key serves.

CREATE TABLE IF NOT EXISTS alerts
(
    alert_id String,
    rule LowCardinality(String),
    state LowCardinality(String),
    severity LowCardinality(String),
    scope LowCardinality(String),
    key String,
    window_s UInt32,
    window_start DateTime64(3, 'UTC'),
    observed Map(String, Float64),
    threshold Map(String, Float64),
    message String,
    top_event_ids Array(String),
    top_event_texts Array(String),
    fired_at DateTime64(6, 'UTC'),
    stored_at DateTime64(6, 'UTC') DEFAULT now64(6, 'UTC')
)
ENGINE = MergeTree
ORDER BY (rule, scope, key, window_start, alert_id)
SETTINGS non_replicated_deduplication_window = 1000;
