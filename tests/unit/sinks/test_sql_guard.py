"""The read-only guard: one read statement passes, every way of writing is refused with a reason."""

from __future__ import annotations

import pytest

from finpulse.sinks.sql import ReadOnlyQueryError, check_read_only


@pytest.mark.parametrize(
    "query",
    [
        "SELECT count() FROM scored_events",
        "select label, count() from scored_events group by label order by label",
        "WITH 0.5 AS t SELECT count() FROM scored_events WHERE confidence < t",
        "SHOW TABLES",
        "SHOW CREATE TABLE scored_events",
        "DESCRIBE TABLE scored_events",
        "DESC scored_events",
        "EXPLAIN SELECT 1",
        "EXISTS TABLE dlq_events",
        "(SELECT 1) UNION ALL (SELECT 2)",
        "SELECT name FROM system.tables",  # SYSTEM as a database name is not the SYSTEM statement
        "SELECT formatDateTime(event_time, '%Y-%m') FROM scored_events",  # a function, not FORMAT
        'SELECT `update`, "set" FROM t',  # quoted names may be keywords
        "SELECT 'drop table x; insert into y' AS s",  # keywords and ';' inside a string
        "SELECT 1 -- ; DROP TABLE x",
        "SELECT /* INSERT; /* nested */ */ 1",
        "SELECT $$ DELETE ; $$ AS s",
        "SELECT * REPLACE (score * 2 AS score) FROM scored_events",
    ],
)
def test_read_queries_pass(query: str) -> None:
    statement = check_read_only(query)
    assert statement and query.strip().startswith(statement)  # at most a trailing comment is cut


def test_trailing_semicolons_and_space_are_dropped() -> None:
    assert check_read_only("  SELECT 1 ;  ; \n") == "SELECT 1"


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("INSERT INTO scored_events SELECT * FROM scored_events", "INSERT statements are not allowed"),
        ("CREATE TABLE x (a Int8) ENGINE = Memory", "CREATE statements are not allowed"),
        ("DROP TABLE scored_events", "DROP statements are not allowed"),
        ("ALTER TABLE scored_events DELETE WHERE 1", "ALTER statements are not allowed"),
        ("TRUNCATE TABLE scored_events", "TRUNCATE statements are not allowed"),
        ("RENAME TABLE scored_events TO x", "RENAME statements are not allowed"),
        ("OPTIMIZE TABLE scored_events FINAL", "OPTIMIZE statements are not allowed"),
        ("SYSTEM STOP MERGES", "SYSTEM statements are not allowed"),
        ("KILL QUERY WHERE 1", "KILL statements are not allowed"),
        ("GRANT SELECT ON *.* TO bob", "GRANT statements are not allowed"),
        ("REVOKE SELECT ON *.* FROM bob", "REVOKE statements are not allowed"),
        ("SET readonly = 0", "SET statements are not allowed"),
        ("ATTACH TABLE x", "ATTACH statements are not allowed"),
        ("DETACH TABLE scored_events", "DETACH statements are not allowed"),
        ("DELETE FROM scored_events WHERE 1", "DELETE statements are not allowed"),
        ("UPDATE scored_events SET score = 0 WHERE 1", "UPDATE statements are not allowed"),
        ("USE system", "USE statements are not allowed"),
        ("SELECT 1; DROP TABLE scored_events", "multiple statements are not allowed"),
        ("SELECT 1; SELECT 2", "multiple statements are not allowed"),
        ("SELECT * FROM scored_events INTO OUTFILE '/tmp/x.csv'", "INTO is not allowed"),
        ("WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x", "INSERT is not allowed"),
        ("EXPLAIN AST ALTER TABLE t DELETE WHERE 1", "ALTER is not allowed"),
        ("SELECT 1 FORMAT JSON", "FORMAT clause is not allowed"),
        ("SELECT update FROM t", "quote it: `update`"),
        ("", "the query is empty"),
        (" ; -- nothing", "the query is empty"),
        ("SELECT 'open", "unterminated string literal"),
        ("SELECT 1 /* open", "unterminated comment"),
        ("SELECT `open", "unterminated quoted name"),
    ],
)
def test_writes_and_unparsable_queries_are_refused_with_a_reason(query: str, reason: str) -> None:
    with pytest.raises(ReadOnlyQueryError, match=reason):
        check_read_only(query)


def test_a_refusal_names_what_is_allowed() -> None:
    with pytest.raises(ReadOnlyQueryError) as refused:
        check_read_only("DROP TABLE scored_events")
    assert "SELECT, WITH, SHOW, DESCRIBE, EXPLAIN and EXISTS" in str(refused.value)
