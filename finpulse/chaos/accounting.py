"""The one place that decides, for every message Kafka accepted, whether it was stored, dead-lettered or lost.

A message is *stored* when its event identity (kind, source, raw id) is in ``scored_events``; *in the DLQ*
when ``dlq_events`` holds a row for its position (topic, partition, offset); *lost* otherwise. An event
sent twice (a true duplicate) is stored once and counts as stored for both messages. *Duplicated* is
``count() - uniqExact(key)`` of both tables: a row written twice, whatever the reason.

The identity is matched on the columns, not on the ``event_id`` string, so the count holds whether
``event_id`` is the raw id or the namespaced ``<kind>:<source>:<id>`` (``finpulse.identity``): the raw id
is ``source_id`` where that column exists, ``event_id`` before it did.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from finpulse.chaos.traffic import Accepted
from finpulse.identity import EventKey

Query = Callable[[str], list[dict]]
"""Rows of a read-only query: ``WorkerProcess.query``, or a local client's (see ``client_query``)."""


@dataclass(frozen=True)
class StoreSnapshot:
    """What the tables held at one moment, reduced to what the accounting compares."""

    stored: Counter[EventKey] = field(default_factory=Counter)  # identity -> rows
    dlq_positions: frozenset[tuple[str, int, int]] = frozenset()
    scored_rows: int = 0
    scored_distinct: int = 0
    dlq_rows: int = 0
    dlq_distinct: int = 0
    in_both_stores: int = 0  # two workers with a store each: events both stored (see ``combined``)

    @property
    def duplicated(self) -> int:
        return (self.scored_rows - self.scored_distinct) + (self.dlq_rows - self.dlq_distinct)


@dataclass(frozen=True)
class Tally:
    sent: int
    stored: int
    dlq: int
    lost: int
    duplicated: int
    valid_in_dlq: int  # feed events that went to the DLQ: valid events must be stored
    lost_positions: list[tuple[str, int, int]]  # the first few, to say where to look

    def as_details(self) -> dict[str, object]:
        return {"valid_in_dlq": self.valid_in_dlq, "lost_positions": self.lost_positions[:20]}


def read_store(query: Query) -> StoreSnapshot:
    raw_id = "source_id" if _has_column(query, "scored_events", "source_id") else "event_id"
    groups = query(
        f"SELECT kind, source, {raw_id} AS raw_id, count() AS n FROM scored_events GROUP BY kind, source, raw_id"
    )
    dlq = query("SELECT source_topic, partition, offset FROM dlq_events")
    totals = query(
        "SELECT (SELECT count() FROM scored_events) AS scored_rows,"
        " (SELECT uniqExact(event_id) FROM scored_events) AS scored_distinct,"
        " (SELECT count() FROM dlq_events) AS dlq_rows, (SELECT uniqExact(dlq_id) FROM dlq_events) AS dlq_distinct"
    )[0]
    return StoreSnapshot(
        stored=Counter({EventKey(g["kind"], g["source"], g["raw_id"]): int(g["n"]) for g in groups}),
        dlq_positions=frozenset((r["source_topic"], int(r["partition"]), int(r["offset"])) for r in dlq),
        **{name: int(value) for name, value in totals.items()},
    )


def combined(first: StoreSnapshot, second: StoreSnapshot) -> StoreSnapshot:
    """Two stores read as one ClickHouse server would hold them (two workers with a chDB each).

    A batch that one worker stored but could not commit before a rebalance is redelivered to the other:
    at-least-once delivery. Against one shared server the second writer finds the ``event_id`` stored and
    drops it (``tests/integration/test_identity.py`` proves that path), so an event in both stores is
    counted in ``in_both_stores``, not as a duplicate; a row written twice within one store still is.
    """
    union = Counter(dict.fromkeys(first.stored.keys() | second.stored.keys(), 1))
    positions = first.dlq_positions | second.dlq_positions
    return StoreSnapshot(
        stored=union,
        dlq_positions=positions,
        scored_rows=len(union) + first.duplicated + second.duplicated,
        scored_distinct=len(union),
        dlq_rows=len(positions),
        dlq_distinct=len(positions),
        in_both_stores=len(first.stored.keys() & second.stored.keys()),
    )


def tally(accepted: Sequence[Accepted], snapshot: StoreSnapshot) -> Tally:
    stored = dlq = valid_in_dlq = 0
    lost: list[tuple[str, int, int]] = []
    for item in accepted:
        identity = item.message.identity
        if identity is not None and identity in snapshot.stored:
            stored += 1
        elif item.position in snapshot.dlq_positions:
            dlq += 1
            valid_in_dlq += item.message.must_store
        else:
            lost.append(item.position)
    return Tally(
        sent=len(accepted),
        stored=stored,
        dlq=dlq,
        lost=len(lost),
        duplicated=snapshot.duplicated,
        valid_in_dlq=valid_in_dlq,
        lost_positions=sorted(lost),
    )


def first_unprocessed(accepted: Iterable[Accepted], snapshot: StoreSnapshot) -> dict[tuple[str, int], int]:
    """Per (topic, partition): the lowest offset not stored or dead-lettered yet (the end when all are).

    A committed offset above it would be a commit past an unprocessed message.
    """
    lowest: dict[tuple[str, int], int] = {}
    ends: dict[tuple[str, int], int] = {}
    for item in accepted:
        key = (item.topic, item.partition)
        ends[key] = max(ends.get(key, 0), item.offset + 1)
        identity = item.message.identity
        processed = (identity is not None and identity in snapshot.stored) or item.position in snapshot.dlq_positions
        if not processed:
            lowest[key] = min(lowest.get(key, item.offset), item.offset)
    return {key: lowest.get(key, end) for key, end in ends.items()}


def commits_past_unprocessed(
    committed: dict[tuple[str, int], int | None], first_missing: dict[tuple[str, int], int]
) -> dict[tuple[str, int], tuple[int, int]]:
    """(committed, first unprocessed) of every partition whose committed offset is past an unprocessed one."""
    return {
        key: (offset, first_missing[key])
        for key, offset in committed.items()
        if offset is not None and key in first_missing and offset > first_missing[key]
    }


def _has_column(query: Query, table: str, column: str) -> bool:
    rows = query(
        f"SELECT count() AS n FROM system.columns WHERE database = currentDatabase() AND table = '{table}'"
        f" AND name = '{column}'"
    )
    return int(rows[0]["n"]) > 0


def client_query(client: object) -> Query:
    """A ``Query`` over a local clickhouse-connect client (for a chDB directory no worker holds)."""

    def query(sql: str) -> list[dict]:
        result = client.query(sql)  # type: ignore[attr-defined]
        return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]

    return query
