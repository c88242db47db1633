"""The ClickHouse side of finpulse.

- ``clickhouse``: the one client factory (embedded chDB or a server) and what chDB allows;
- ``migrations`` with ``schema/NNNN_*.sql``: versioned table definitions;
- ``writer``: idempotent, retried batch inserts into any table;
- ``sql``: read-only queries and their output formats (CLI and the worker's HTTP endpoint).
"""
