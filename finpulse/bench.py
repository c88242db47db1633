"""``finpulse bench pipeline``: the embedded pipeline and the model alone, on the same texts, in one run."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from finpulse.demo import feed_messages, run_feed, run_filter
from finpulse.harness import EmbeddedPipeline
from finpulse.models import BatchScorer
from finpulse.settings import Settings
from finpulse.text import normalize_text

PIPELINE_SQL = """
SELECT
    count() AS events,
    (toUnixTimestamp64Milli(max(stored_at)) - toUnixTimestamp64Milli(min(ingested_at))) / 1000 AS span_s,
    quantileExact(0.50)(latency_ms) AS p50_ms,
    quantileExact(0.95)(latency_ms) AS p95_ms,
    quantileExact(0.99)(latency_ms) AS p99_ms,
    uniqExact(stored_at) AS inserts
FROM (
    SELECT stored_at, ingested_at,
           toUnixTimestamp64Milli(stored_at) - toUnixTimestamp64Milli(ingested_at) AS latency_ms
    FROM scored_events WHERE {where}
)
"""


@dataclass(frozen=True)
class PipelineBench:
    events: int
    batch_size: int
    pipeline_events_per_s: float
    pipeline_p50_ms: float
    pipeline_p95_ms: float
    pipeline_p99_ms: float
    inserts_per_s: float
    rows_per_insert: float
    model_only_seq_per_s: float
    model_only_batch_p50_ms: float
    model_only_batch_p99_ms: float
    pipeline_to_model_ratio: float
    model_version: str

    def as_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.as_dict())


def _texts(messages) -> list[str]:  # noqa: ANN001 - list[Outbound]
    texts = []
    for message in messages:
        document = json.loads(message.record.value)
        raw = (
            f"{document['headline']}\n{document.get('body', '')}"
            if "headline" in document
            else document["text"]
        )
        texts.append(raw)
    return texts


def model_only(
    scorer: BatchScorer, texts: list[str], batch_size: int, max_chars: int
) -> tuple[float, float, float]:
    """seq/s and p50/p99 batch latency of normalize + tokenize + infer, in the pipeline's batch size."""
    batches = [texts[i : i + batch_size] for i in range(0, len(texts), batch_size)]
    scorer.score(batches[0][:64])  # warm-up: session and allocator first-use cost
    latencies = []
    started = time.perf_counter()
    for batch in batches:
        t0 = time.perf_counter()
        scorer.score([normalize_text(t, max_chars=max_chars) for t in batch])
        latencies.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - started
    return (
        len(texts) / elapsed,
        float(np.percentile(latencies, 50) * 1e3),
        float(np.percentile(latencies, 99) * 1e3),
    )


def bench_pipeline(settings: Settings, *, events: int, seed: int = 11, warmup: int = 500) -> PipelineBench:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    workdir = tempfile.mkdtemp(prefix="bench-", dir=settings.data_dir.resolve())
    run_settings = settings.model_copy(update={"data_dir": Path(workdir), "clickhouse_dsn": ""})
    try:
        run_id = f"bench-{time.strftime('%Y%m%dT%H%M%S')}"
        messages = feed_messages("steady", events, seed, run_id)
        with EmbeddedPipeline(run_settings) as pipeline:
            warm = feed_messages("steady", warmup, seed + 1, f"{run_id}-warmup")
            run_feed(pipeline, warm, rate=None, timeout_s=300, where=run_filter(f"{run_id}-warmup"))
            where = run_filter(run_id) + f" AND NOT startsWith(source_id, '{run_id}-warmup')"
            stored = run_feed(pipeline, messages, rate=None, timeout_s=1800, where=where)
            if stored < events:
                raise TimeoutError(f"only {stored} of {events} events stored")
            assert pipeline.worker is not None
            row = pipeline.worker.query(PIPELINE_SQL.format(where=where))[0]
            model_version = str(pipeline.worker.health().get("model_version", ""))
        span_s = float(row["span_s"])
        scorer = BatchScorer.load(settings.resolved_model_dir)
        seq_per_s, p50, p99 = model_only(
            scorer, _texts(messages), settings.batch_size, settings.max_text_chars
        )
        pipeline_rate = events / span_s
        return PipelineBench(
            events=events,
            batch_size=settings.batch_size,
            pipeline_events_per_s=pipeline_rate,
            pipeline_p50_ms=float(row["p50_ms"]),
            pipeline_p95_ms=float(row["p95_ms"]),
            pipeline_p99_ms=float(row["p99_ms"]),
            inserts_per_s=int(row["inserts"]) / span_s,
            rows_per_insert=events / max(1, int(row["inserts"])),
            model_only_seq_per_s=seq_per_s,
            model_only_batch_p50_ms=p50,
            model_only_batch_p99_ms=p99,
            pipeline_to_model_ratio=pipeline_rate / seq_per_s,
            model_version=model_version,
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
