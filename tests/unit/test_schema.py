"""The migration files' statement splitter."""

from __future__ import annotations

from tether.worlds import schema


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
