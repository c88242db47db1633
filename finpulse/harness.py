"""An embedded pipeline in one object: broker, a worker process, a producer, and SQL through the worker.

The demo, the pipeline benchmark and the integration tests all drive the pipeline through this, so what
they measure and check is the same thing a user runs: ``finpulse worker`` as its own process.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import httpx
from aiokafka import AIOKafkaProducer
from pydantic import SecretStr

from finpulse.query import worker_headers
from finpulse.settings import Settings
from finpulse.streams.broker import EmbeddedBroker, free_port
from finpulse.streams.produce import OutboundRecord, new_producer, publish_batch
from finpulse.streams.topics import ensure_topics


class WorkerFailed(RuntimeError):
    """The worker process exited or never became ready."""


@dataclass(frozen=True)
class Outbound:
    """A message for one of the input topics, topic named without the prefix."""

    topic: str
    record: OutboundRecord


def _env_value(value: object) -> str:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, list | dict):
        return json.dumps(value)
    return str(value)


def settings_env(settings: Settings) -> dict[str, str]:
    """The settings as the ``FINPULSE_*`` environment that reproduces them in another process."""
    env = {
        f"FINPULSE_{name.upper()}": _env_value(getattr(settings, name))
        for name in type(settings).model_fields
        if getattr(settings, name) is not None and name != "clickhouse_dsn"
    }
    env["FINPULSE_DATA_DIR"] = str(settings.data_dir.resolve())
    env["FINPULSE_CLICKHOUSE_DSN"] = settings.resolved_clickhouse_dsn
    return env


def worker_env(settings: Settings, bootstrap_servers: str, web_port: int) -> dict[str, str]:
    return {
        **os.environ,
        **settings_env(settings),
        "FINPULSE_BROKER": bootstrap_servers,
        "FINPULSE_WORKER_WEB_HOST": "127.0.0.1",
        "FINPULSE_WORKER_WEB_PORT": str(web_port),
        "PYTHONUNBUFFERED": "1",
    }


@dataclass
class WorkerProcess:
    """``finpulse worker`` as a child process with its HTTP endpoint on a known port."""

    settings: Settings
    bootstrap_servers: str
    log_path: Path
    extra_env: Mapping[str, str] = field(default_factory=dict)
    web_port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def start(self, ready_timeout_s: float = 120.0) -> WorkerProcess:
        self.web_port = self.web_port or free_port()
        env = worker_env(self.settings, self.bootstrap_servers, self.web_port) | dict(self.extra_env)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "finpulse", "worker"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        self.wait_ready(ready_timeout_s)
        return self

    def wait_ready(self, timeout_s: float) -> dict:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self._raise_if_exited()
            try:
                response = httpx.get(f"{self.url}/health", timeout=2.0)
                if response.status_code == 200:
                    return response.json()
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        raise WorkerFailed(f"worker not ready within {timeout_s}s; see {self.log_path}")

    def _raise_if_exited(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise WorkerFailed(f"worker exited with code {self.process.returncode}; see {self.log_path}")

    def health(self) -> dict:
        return httpx.get(f"{self.url}/health", timeout=5.0).json()

    def query(self, sql: str) -> list[dict]:
        """Rows of a read-only query, through the worker that holds ClickHouse."""
        self._raise_if_exited()
        response = httpx.post(
            f"{self.url}/sql",
            params={"format": "json"},
            content=sql,
            headers=worker_headers(self.settings),
            timeout=60.0,
        )
        body = response.json()
        if response.status_code != 200:
            raise RuntimeError(f"query failed: {body.get('error')}")
        return body["rows"]

    def scalar(self, sql: str) -> object:
        rows = self.query(sql)
        return next(iter(rows[0].values()))

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """Graceful stop (SIGTERM: the worker finishes its batch and commits)."""
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def kill(self) -> int:
        """Crash stop (SIGKILL): nothing is committed or flushed."""
        assert self.process is not None
        self.process.kill()
        return self.process.wait()


async def produce(
    bootstrap_servers: str,
    settings: Settings,
    messages: Iterable[Outbound],
    *,
    rate: float | None = None,
    chunk: int = 500,
    on_progress: Callable[[int], None] | None = None,
    producer: AIOKafkaProducer | None = None,
) -> int:
    """Publish messages in chunks, at most ``rate`` per second when given; returns how many were sent."""
    own_producer = producer is None
    producer = producer or new_producer(bootstrap_servers)
    if own_producer:
        await producer.start()
    sent = 0
    started = time.monotonic()
    try:
        pending: list[Outbound] = []
        for message in messages:
            pending.append(message)
            if len(pending) >= chunk:
                sent += await _publish_chunk(producer, settings, pending)
                pending = []
                if on_progress:
                    on_progress(sent)
                if rate:
                    await asyncio.sleep(max(0.0, sent / rate - (time.monotonic() - started)))
        sent += await _publish_chunk(producer, settings, pending)
        if on_progress:
            on_progress(sent)
    finally:
        if own_producer:
            await producer.stop()
    return sent


async def _publish_chunk(producer: AIOKafkaProducer, settings: Settings, chunk: Sequence[Outbound]) -> int:
    by_topic: dict[str, list[OutboundRecord]] = {}
    for message in chunk:
        by_topic.setdefault(message.topic, []).append(message.record)
    sent = 0
    for topic, records in by_topic.items():
        sent += await publish_batch(producer, settings.topic(topic), records)
    return sent


@dataclass
class EmbeddedPipeline:
    """Broker (embedded unless ``settings.broker`` is set) + topics + one worker process."""

    settings: Settings
    worker_env: Mapping[str, str] = field(default_factory=dict)
    broker: EmbeddedBroker | None = None
    worker: WorkerProcess | None = None
    _stack: ExitStack = field(default_factory=ExitStack)

    @property
    def bootstrap_servers(self) -> str:
        return self.settings.broker or (self.broker.bootstrap_servers if self.broker else "")

    def start(self) -> EmbeddedPipeline:
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        if self.settings.embedded_broker:
            self.broker = self._stack.enter_context(
                EmbeddedBroker(log_file=self.settings.data_dir / "broker.log", storage=self.settings.broker_storage)
            )
        asyncio.run(ensure_topics(self.settings, self.bootstrap_servers))
        self.worker = self.start_worker()
        return self

    def start_worker(self) -> WorkerProcess:
        worker = WorkerProcess(
            self.settings, self.bootstrap_servers, self.settings.data_dir / "worker.log", self.worker_env
        )
        self._stack.callback(worker.stop)
        return worker.start()

    def wait_for_rows(
        self, table: str, expected: int, timeout_s: float, *, where: str = "1", poll_s: float = 0.5
    ) -> int:
        """Poll until ``table`` holds ``expected`` rows matching ``where``; returns the last count seen."""
        assert self.worker is not None
        deadline = time.monotonic() + timeout_s
        count = 0
        while time.monotonic() < deadline:
            count = int(self.worker.scalar(f"SELECT count() AS n FROM {table} WHERE {where}"))
            if count >= expected:
                return count
            time.sleep(poll_s)
        return count

    def stop(self) -> None:
        self._stack.close()

    def __enter__(self) -> EmbeddedPipeline:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
