"""The migration files' statement splitter, the shared statements and their dialects."""

from __future__ import annotations

import pytest

from tether.worlds import schema, sql


def test_split_statements_at_line_ending_semicolons() -> None:
    text = "CREATE TABLE a (x int);\nCREATE INDEX a_x ON a (x);\n"
    assert schema.split_statements(text) == [
        "CREATE TABLE a (x int)",
        "CREATE INDEX a_x ON a (x)",
    ]


def test_split_statements_keeps_a_dollar_quoted_body_whole() -> None:
    text = (
        "CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $$\n"
        "BEGIN\n    PERFORM 1;\n    PERFORM 2;\nEND\n$$;\n"
        "CREATE TABLE b (y int);\n"
    )
    first, second = schema.split_statements(text)
    assert first.startswith("CREATE FUNCTION f()") and first.endswith("END\n$$")
    assert "PERFORM 1;\n    PERFORM 2;" in first
    assert second == "CREATE TABLE b (y int)"


def test_every_postgres_migration_is_whole_statements() -> None:
    for version, statements in schema.migrations("postgres"):
        for statement in statements:
            assert statement.count("$$") % 2 == 0, (version, statement[:60])
            assert not statement.endswith(";"), (version, statement[:60])


def test_each_shared_statement_differs_between_backends_only_by_dialect() -> None:
    for name, sqlite_sql in vars(sql.SQLITE).items():
        if not isinstance(sqlite_sql, str):
            continue
        postgres_sql = getattr(sql.POSTGRES, name)
        assert sqlite_sql.count("?") == postgres_sql.count("%s"), name
        assert "%s" not in sqlite_sql and "?" not in postgres_sql, name
        # Written once: the same text, but for the dialect's fragments.
        plain = postgres_sql.replace("%s", "?").replace(" FOR UPDATE", "")
        for postgres_part, sqlite_part in (
            ("LEAST(", "MIN("),
            ("length(step_id), step_id", "CAST(step_id AS INTEGER)"),
            ("length(wait_id), wait_id", "CAST(wait_id AS INTEGER)"),
            ("false", "0"),
        ):
            plain = plain.replace(postgres_part, sqlite_part)
        assert plain == sqlite_sql, name


def test_where_tests_only_the_filters_given() -> None:
    assert sql.POSTGRES.where({"run_id": None, "status": None}) == ("", [])
    assert sql.POSTGRES.where({"run_id": "r1", "status": None}) == (" WHERE run_id = %s", ["r1"])
    assert sql.SQLITE.where({"run_id": "r1", "status": "active"}) == (
        " WHERE run_id = ? AND status = ?",
        ["r1", "active"],
    )


def test_a_claim_round_looks_again_half_a_window_early_only_for_a_free_workflow_task() -> None:
    assert schema.claim_again_at(None, 2.0) is None
    assert schema.claim_again_at((100.0, True), 2.0) == 99.0
    assert schema.claim_again_at((100.0, False), 2.0) == 100.0
    assert schema.claim_again_at((100.0, 1), 0.0) == 100.0  # SQLite answers 1, not True


def test_cursors_round_trip_and_a_bad_one_is_named() -> None:
    cursor = schema.encode_cursor(1700000000.25, "r/1")
    assert schema.decode_cursor(cursor) == (1700000000.25, "r/1")
    for bad in ("", "abc", "1.5/", "x/r1"):
        with pytest.raises(ValueError, match="invalid cursor"):
            schema.decode_cursor(bad)
