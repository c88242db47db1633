"""The one rule every ``take_events`` agent follows: a batch is acknowledged only once it is stored.

Faust's ``take_events`` acknowledges a batch when the loop body is left, whatever the way out. So

* a batch that fails (after the writer's retries) ends the process before the body returns: its offsets
  are never committed and the next owner of the partition reprocesses it;
* a stopping worker (the agent cancelled halfway through a batch) finishes the batch in hand first, or it
  would commit offsets of rows that were never written.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable
from typing import NoReturn, TypeVar

log = logging.getLogger("finpulse.streams")

EXIT_BATCH_FAILED = 70

T = TypeVar("T")


async def process_whole(work: Awaitable[T], *, what: str) -> T:
    """Await ``work`` to its end even if the caller is cancelled; on failure, exit without committing."""
    batch = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(batch)
    except asyncio.CancelledError:
        log.info("stopping: finishing the %s batch in hand before its offsets are acknowledged", what)
        try:
            await batch
        except Exception:
            exit_without_commit(what)
        raise
    except Exception:
        exit_without_commit(what)


def exit_without_commit(what: str) -> NoReturn:
    log.critical("%s batch failed; stopping without committing its offsets", what, exc_info=True)
    logging.shutdown()
    os._exit(EXIT_BATCH_FAILED)
