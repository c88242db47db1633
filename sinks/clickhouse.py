"""The one ClickHouse client factory: embedded chDB or a ClickHouse server, both through clickhouse-connect.

DSNs (``FINPULSE_CLICKHOUSE_DSN``, see ``Settings.resolved_clickhouse_dsn``):

- ``chdb:///abs/dir`` — the embedded engine, data in ``/abs/dir`` (created if missing);
- ``http://user:pass@host:8123/db`` or ``https://…`` — a ClickHouse server.

Every client returns ``DateTime``/``DateTime64`` values of UTC columns as timezone-aware ``datetime``
objects (``tz_mode="aware"``); by default clickhouse-connect returns naive ones.

What chDB allows, measured with chdb 4.4 (engine 26.9) and clickhouse-connect 1.12:

- **One process per data directory.** The engine takes an exclusive ``flock`` on ``<dir>/status``
  (which holds the owner's PID). A second process opening the same directory fails; chDB only says
  "Error initializing EmbeddedServer" and prints "Cannot lock file …/status" on stderr, so this factory
  checks the lock first and raises :class:`ChdbPathInUseError` naming the PID. Consequence: while a
  worker runs on the embedded database, ``finpulse sql`` (or the demo, or a dashboard) cannot open the
  directory; it must query through the worker's HTTP endpoint. Once the holder has closed every client
  or exited (even killed with SIGKILL: the stale ``status`` file is ignored, and every insert that had
  returned is on disk), the directory opens normally; a failed open leaves nothing behind.
- **One directory per process at a time.** Any number of clients may share the directory the process
  already has open (each gets its own session handle; data is shared). Opening a *different* directory
  while any client of the first is still open fails (:class:`ChdbPathInUseError`); after every client of
  the first is closed, another directory opens fine. Test suites therefore either share one directory
  per session, or close every client at the end of each module (``client.close()``).
- **Threads.** Each chDB client serializes its calls with its own lock, so one client may be used from
  several threads (``asyncio.to_thread``); separate clients on the same directory run in parallel.
  Concurrent inserts and selects from 5 threads over 2 clients were measured without errors or lost
  rows. The engine releases the GIL while it works, so a blocking insert in a thread leaves the event
  loop running. A long query on one client delays the inserts of that same client, so the HTTP SQL
  endpoint is best given a client of its own. ``ClickHouseWriter`` adds its own lock only to keep
  "check existing keys, then insert" atomic within the process.
- Session state (``USE``, ``SET``) belongs to the client that set it. A ``SET readonly = 1`` cannot be
  undone on that client, so read-only queries pass ``readonly`` per query instead (a ``SETTINGS``
  clause), which leaves a client shared with the writer able to write.

Example:
    >>> client = get_client("chdb:///tmp/finpulse-doc/clickhouse")  # doctest: +SKIP
    >>> client.query("SELECT 1").result_rows  # doctest: +SKIP
    [(1,)]
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from urllib.parse import unquote, urlsplit

import clickhouse_connect
from clickhouse_connect.driver import Client
from clickhouse_connect.driver.exceptions import ProgrammingError

from finpulse.settings import Settings
from finpulse.sinks.exceptions import ChdbPathInUseError

__all__ = ["Client", "chdb_path", "client_for", "get_client"]

_SERVER_SCHEMES = ("http", "https")


def client_for(settings: Settings) -> Client:
    """The client for ``FINPULSE_CLICKHOUSE_DSN`` (or the embedded default under ``FINPULSE_DATA_DIR``)."""
    return get_client(settings.resolved_clickhouse_dsn)


def get_client(dsn: str) -> Client:
    """Open a client for a ``chdb:///abs/dir`` or ``http(s)://user:pass@host:port/db`` DSN.

    Raises:
        ValueError: the DSN names no supported scheme, or a chDB DSN names no absolute directory.
        ChdbPathInUseError: the chDB directory is held by another process, or this process holds another.
    """
    scheme = urlsplit(dsn).scheme.lower()
    if scheme == "chdb":
        return _open_chdb(chdb_path(dsn))
    if scheme in _SERVER_SCHEMES:
        # A shared client runs queries from several threads; one server session per client would make
        # the server refuse concurrent queries ("session is locked"), so no session id is sent.
        return clickhouse_connect.get_client(dsn=dsn, tz_mode="aware", autogenerate_session_id=False)
    raise ValueError(
        f"unsupported ClickHouse DSN {_redacted(dsn)!r}: use chdb:///abs/dir or http(s)://user:pass@host:port/db"
    )


def chdb_path(dsn: str) -> Path:
    """The data directory of a ``chdb:///abs/dir`` DSN."""
    parts = urlsplit(dsn)
    path = Path(unquote(parts.path))
    if parts.netloc or not path.is_absolute():
        raise ValueError(
            f"chDB DSN {dsn!r} must name an absolute directory, e.g. chdb:///var/finpulse/clickhouse"
        )
    return path


def _open_chdb(path: Path) -> Client:
    path.mkdir(parents=True, exist_ok=True)
    path = path.resolve()
    _refuse_if_held_elsewhere(path)
    try:
        return clickhouse_connect.get_client(dsn=f"chdb://{path}", tz_mode="aware")
    except ProgrammingError as error:
        if "already initialized with path" in str(error):
            raise ChdbPathInUseError(
                f"cannot open chDB at {path}: this process already has another chDB directory open "
                f"(chDB allows one per process). Close every client of that directory first. ({error})"
            ) from error
        raise


def _refuse_if_held_elsewhere(path: Path) -> None:
    status = path / "status"
    try:
        content = status.read_text(errors="replace")
    except FileNotFoundError:
        return
    owner = _status_field(content, "PID")
    if owner == str(os.getpid()):
        return  # this process holds it: more clients of the same directory are fine
    if _lock_is_held(status):
        started = _status_field(content, "Started at") or "unknown time"
        raise ChdbPathInUseError(
            f"chDB data directory {path} is in use by another process (pid {owner or 'unknown'}, "
            f"started {started}); chDB lets one process open a directory at a time. Query through that "
            "process (a running finpulse worker serves read-only SQL over HTTP) or stop it first."
        )


def _lock_is_held(status: Path) -> bool:
    try:
        fd = os.open(status, os.O_RDONLY)
    except FileNotFoundError:
        return False  # released between the read and now
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def _status_field(content: str, name: str) -> str | None:
    for line in content.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == name:
            return value.strip()
    return None


def _redacted(dsn: str) -> str:
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")).geturl()
