"""ClickHouse unavailable, from outside the worker: its table directories stop accepting writes.

The embedded chDB lives inside the worker process, so there is no connection to refuse; what an outage
looks like to the writer is an insert that fails. Marking every table's data directory immutable
(``chattr +i``; a plain ``chmod`` where the suite does not run as root, since root ignores modes) makes
each insert fail when it creates its part directory (chDB error 1001, which the writer retries), while
reads keep working, so the worker's ``/sql`` can still be asked what is stored. Nothing in the worker is
patched: the worker under test is the one users run.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path
from types import TracebackType

from finpulse.chaos.accounting import Query


class OutageUnavailable(RuntimeError):
    """This machine cannot make a directory refuse writes (no ``chattr`` as root)."""


def table_directories(query: Query) -> list[Path]:
    rows = query("SELECT data_paths FROM system.tables WHERE database = currentDatabase() AND notEmpty(data_paths)")
    return sorted({Path(path) for row in rows for path in row["data_paths"]})


class StorageOutage:
    """While entered, no table of the worker's chDB can be written to."""

    def __init__(self, directories: list[Path]) -> None:
        if not directories:
            raise ValueError("no table directories to take offline")
        self._directories = directories
        self._modes: dict[Path, int] = {}
        if os.geteuid() == 0 and shutil.which("chattr") is None:
            raise OutageUnavailable("running as root without chattr: a directory mode does not stop root")

    def __enter__(self) -> StorageOutage:
        try:
            for directory in self._directories:
                if os.geteuid() == 0:
                    subprocess.run(["chattr", "+i", str(directory)], check=True, capture_output=True)
                else:
                    self._modes[directory] = stat.S_IMODE(directory.stat().st_mode)
                    directory.chmod(0o555)
        except subprocess.CalledProcessError as error:  # e.g. a container without CAP_LINUX_IMMUTABLE
            self.__exit__(None, None, None)
            raise OutageUnavailable(f"chattr +i refused: {error.stderr.decode(errors='replace').strip()}") from error
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for directory in self._directories:
            if os.geteuid() == 0:
                subprocess.run(["chattr", "-i", str(directory)], check=False, capture_output=True)
            else:
                directory.chmod(self._modes.get(directory, 0o755))
