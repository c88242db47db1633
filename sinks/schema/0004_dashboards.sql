-- Views for dashboards (infra/grafana/dashboards/finpulse.json) and the opinion report (finpulse report).
--
-- Index rows are read through opinion_index_final (0002): one row per window, its newest version.
--
-- Plain views answer a fixed question ("the latest window of each ticker"); parameterized views take
-- the time range, e.g. SELECT * FROM v_top_movers(since = '2025-03-03 09:00:00', until = now64(),
-- window_s = 300, min_buzz = 10), or with Grafana's macros since = $__fromTime, until = $__toTime.
-- Ranges are half-open, [since, until), on event time (window_start for index rows, event_time for
-- events).
--
-- "The last hour" (v_top_movers_1h) ends where the newest 5-minute window of the index ends, not at now():
-- the hour is one of event time, which is what the index is keyed on. Live, the two differ by the
-- pipeline's lag; for a replayed file or the demo's simulated feed (hours of event time that end
-- before the wall clock) a now()-based hour would be empty. The as_of column says where the hour ends,
-- so a stalled feed shows as an old as_of rather than as an empty panel.

-- One row per (ticker, window size): the ticker's newest window, open (still filling) or closed.
CREATE VIEW IF NOT EXISTS v_latest_ticker_index AS
SELECT
    key AS ticker, window_s, window_start, window_end, buzz, mean_score, net_sentiment,
    bullish_share, neutral_share, bearish_share, dispersion, buzz_z, sentiment_z,
    baseline_windows, late_events, closed, updated_at
FROM opinion_index_final
WHERE scope = 'ticker'
ORDER BY ticker, window_s, window_start DESC
LIMIT 1 BY ticker, window_s;

-- Tickers ranked by their largest absolute sentiment z-score among the windows of one size that
-- start in [since, until) and hold at least min_buzz events: a z-score of a window with one or two
-- events measures chance, not opinion. peak_* describe that window; range_* cover all the ticker's
-- windows in range (net sentiment and mean score weighted by buzz); latest_sentiment_z is the most
-- recent z-score reported. Tickers without such a window are left out.
CREATE VIEW IF NOT EXISTS v_top_movers AS
SELECT
    key AS ticker,
    argMaxIf(sentiment_z, abs(sentiment_z), buzz >= {min_buzz:UInt32}) AS peak_sentiment_z,
    if(peak_sentiment_z < 0, 'bearish', 'bullish') AS direction,
    argMaxIf(window_start, abs(sentiment_z), buzz >= {min_buzz:UInt32}) AS peak_window_start,
    argMaxIf(net_sentiment, abs(sentiment_z), buzz >= {min_buzz:UInt32}) AS peak_net_sentiment,
    argMaxIf(buzz, abs(sentiment_z), buzz >= {min_buzz:UInt32}) AS peak_buzz,
    argMaxIf(buzz_z, abs(sentiment_z), buzz >= {min_buzz:UInt32}) AS peak_buzz_z,
    argMax(sentiment_z, window_start) AS latest_sentiment_z,
    sum(buzz) AS range_buzz,
    sum(net_sentiment * buzz) / range_buzz AS range_net_sentiment,
    sum(mean_score * buzz) / range_buzz AS range_mean_score,
    count() AS windows
FROM opinion_index_final
WHERE scope = 'ticker'
    AND window_s = {window_s:UInt32}
    AND window_start >= {since:DateTime64(3, 'UTC')}
    AND window_start < {until:DateTime64(3, 'UTC')}
GROUP BY ticker
HAVING countIf(sentiment_z IS NOT NULL AND buzz >= {min_buzz:UInt32}) > 0
ORDER BY abs(peak_sentiment_z) DESC, ticker;

-- v_top_movers over the 5-minute windows of the last hour of event time (see the top of this file),
-- counting windows of at least 10 events. Never later than now: an open window ends in the future, and
-- so would the hour after one event with a clock running ahead.
CREATE VIEW IF NOT EXISTS v_top_movers_1h AS
WITH (
    SELECT least(max(window_end), now64(3, 'UTC'))
    FROM opinion_index_final
    WHERE scope = 'ticker' AND window_s = 300
) AS as_of
SELECT *, as_of
FROM v_top_movers(since = as_of - INTERVAL 1 HOUR, until = as_of, window_s = 300, min_buzz = 10);

-- Each ticker's 5-minute windows, for time series (filter on ticker and window_start).
CREATE VIEW IF NOT EXISTS v_ticker_sentiment_5m AS
SELECT
    key AS ticker, window_start, window_end, buzz, mean_score, net_sentiment,
    bullish_share, neutral_share, bearish_share, dispersion, buzz_z, sentiment_z, closed
FROM opinion_index_final
WHERE scope = 'ticker' AND window_s = 300;

-- Where opinion comes from: events per kind and outlet/platform with event time in [since, until),
-- about one ticker or, with ticker = '', about anything. Read from scored_events, so late events count.
CREATE VIEW IF NOT EXISTS v_source_breakdown AS
SELECT
    kind,
    source,
    count() AS events,
    events / sum(events) OVER () AS share_of_events,
    avg(score) AS mean_score,
    (countIf(label = 'bullish') - countIf(label = 'bearish')) / events AS net_sentiment,
    countIf(label = 'bullish') / events AS bullish_share,
    countIf(label = 'neutral') / events AS neutral_share,
    countIf(label = 'bearish') / events AS bearish_share,
    stddevPop(score) AS dispersion,
    min(event_time) AS first_event_time,
    max(event_time) AS last_event_time
FROM scored_events
WHERE event_time >= {since:DateTime64(3, 'UTC')}
    AND event_time < {until:DateTime64(3, 'UTC')}
    AND ({ticker:String} = '' OR has(tickers, {ticker:String}))
GROUP BY kind, source
ORDER BY events DESC, kind, source;

-- Every alert state change once (a retried write may store an alert_id twice). still_firing: this is
-- a firing and no later change of the same rule and entity has resolved it.
CREATE VIEW IF NOT EXISTS v_alerts AS
SELECT
    alert_id, rule, state, severity, scope, key, window_s, window_start, observed, threshold, message,
    top_event_ids, top_event_texts, fired_at,
    state = 'firing' AND fired_at = max(fired_at) OVER (PARTITION BY rule, scope, key) AS still_firing
FROM
(
    SELECT *
    FROM alerts
    ORDER BY alert_id, stored_at DESC
    LIMIT 1 BY alert_id
);

-- The 100 newest alert state changes.
CREATE VIEW IF NOT EXISTS v_recent_alerts AS
SELECT *
FROM v_alerts
ORDER BY fired_at DESC, alert_id
LIMIT 100;
