from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner

from finpulse.streams.produce import OutboundRecord, _assign_partitions


def test_keyed_records_go_where_kafkas_default_partitioner_puts_them() -> None:
    partitions = [0, 1, 2, 3]
    records = [OutboundRecord(value=b"v", key=f"AAPL-{i % 7}".encode()) for i in range(100)]
    by_partition = _assign_partitions(records, partitions)
    expected = DefaultPartitioner()
    for partition, assigned in by_partition.items():
        assert {expected(r.key, partitions, partitions) for r in assigned} == {partition}
    assert sum(len(v) for v in by_partition.values()) == 100


def test_unkeyed_records_are_spread_over_all_partitions_in_order() -> None:
    records = [OutboundRecord(value=str(i).encode()) for i in range(8)]
    by_partition = _assign_partitions(records, [0, 1])
    assert [r.value for r in by_partition[0]] == [b"0", b"2", b"4", b"6"]
    assert [r.value for r in by_partition[1]] == [b"1", b"3", b"5", b"7"]
