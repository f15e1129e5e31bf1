"""Bad input: one ``Error:`` line, exit code 2 (usage) or 1 (not found, failed), no traceback.

``tether()`` itself asserts that no output holds a traceback.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tests.cli.helpers import (
    BACKENDS,
    HELLO,
    create_run,
    error_line,
    hello_deployment,
    tether,
    tether_exe,
)
from tests.conformance import backends
from tether import errors as tether_errors
from tether.worlds import open_world
from tether.worlds.base import World


@pytest.fixture
def url(tmp_path: Path) -> str:
    """Input checks do not depend on the backend: SQLite only, to keep the suite quick."""
    made = f"sqlite:///{tmp_path}/tether.db"
    open_world(made).close()
    return made


@pytest.mark.parametrize(
    "args",
    [
        ["inspect", "runs", "run_missing"],
        ["inspect", "runs", "--run-id", "run_missing"],
        ["inspect", "steps", "run_missing"],
        ["inspect", "events", "run_missing"],
        ["inspect", "sleeps", "run_missing"],
        ["cancel", "run_missing", "-y"],
        ["rerun", "run_missing", "--latest"],
        ["sleeps", "wake", "run_missing"],
        ["inspect", "hooks", "run_missing"],
        ["inspect", "streams", "--run-id", "run_missing"],
    ],
)
def test_unknown_run_id(url: str, args: list[str]) -> None:
    result = tether(*args, url=url)
    assert result.code == 1
    assert "run 'run_missing' not found" in error_line(result)


def test_unknown_status_lists_the_valid_ones(url: str, world: World) -> None:
    result = tether("inspect", "runs", "--status", "done", url=url)
    assert result.code == 2
    assert error_line(result) == (
        "Error: invalid status 'done': expected one of "
        "pending, running, completed, failed, cancelled"
    )
    run_id = create_run(world, HELLO, ["a"])
    steps = tether("inspect", "steps", run_id, "--status", "done", url=url)
    assert steps.code == 2 and "expected one of pending, running, retrying," in error_line(steps)


def test_malformed_json_arguments_name_the_argument(url: str) -> None:
    result = tether("start", HELLO, '"ok"', "bob", url=url)
    assert result.code == 2
    assert error_line(result) == (
        "Error: argument 2 ('bob') is not valid JSON: Expecting value: line 1 column 1 "
        "(char 0); quote a string as '\"bob\"'"
    )
    broken = tether("start", HELLO, '{"a": ', url=url)
    assert broken.code == 2 and "argument 1 ('{\"a\": ') is not valid JSON" in error_line(broken)


def test_a_workflow_name_that_does_not_parse_shows_the_form(url: str, world: World) -> None:
    hello_deployment(world, "v1")
    for args in (
        ["inspect", "runs", "--workflow-name", "hello"],
        ["cancel", "--workflow-name", "hello", "-y"],
        ["start", "hello", '"x"'],
    ):
        result = tether(*args, url=url)
        assert result.code == 2, result
        line = error_line(result)
        assert "invalid workflow name 'hello': expected workflow//<module>//<function>" in line
        assert f"did you mean {HELLO}?" in line


def test_unreachable_backend_names_the_url_without_its_password() -> None:
    url = "postgresql://tether:s3cret-pw@127.0.0.1:1/tether"
    result = tether_exe("inspect", "runs", "--backend", url, url=None)
    line = error_line(result)
    assert "postgresql://tether:***@127.0.0.1:1/tether" in line
    assert "s3cret" not in result.out + result.err
    if "postgres" in BACKENDS:
        assert result.code == 1 and "cannot reach backend" in line
    else:  # a build without the PostgreSQL World says so: a usage error
        assert result.code == 2


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "postgresql://app@127.0.0.1:1/prod?password=s3cret",
            "postgresql://app@127.0.0.1:1/prod?password=***",
        ),
        (
            "postgresql://app:s3cret@127.0.0.1:1/prod?sslmode=disable&password=s3cret",
            "postgresql://app:***@127.0.0.1:1/prod?sslmode=disable&password=***",
        ),
    ],
)
def test_a_password_in_the_query_is_masked_too(url: str, shown: str) -> None:
    result = tether("inspect", "runs", "--backend", url, url=None)
    assert result.code == 1
    assert shown in error_line(result)
    assert "s3cret" not in result.out + result.err


def test_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    (tmp_path / "junk.db").write_text("not sqlite at all " * 100)
    result = tether("inspect", "runs", url=f"sqlite:///{tmp_path}/junk.db")
    assert result.code == 1
    assert f"cannot reach backend sqlite:///{tmp_path}/junk.db:" in error_line(result)


def test_read_commands_do_not_create_a_database(tmp_path: Path) -> None:
    missing = tmp_path / "nothing" / "tether.db"
    for args in (["inspect", "runs"], ["deployments", "list"], ["cancel", "--status", "running"]):
        result = tether(*args, url=f"sqlite:///{missing}")
        assert result.code == 1
        assert f"no tether database at {missing}" in error_line(result)
    assert not missing.parent.exists()


def test_read_commands_do_not_create_a_postgres_schema() -> None:
    backends.require_postgres()
    name = f"tether_missing_{uuid.uuid4().hex[:8]}"
    url = backends.with_schema(backends.POSTGRES_URL, name)
    for args in (["inspect", "runs"], ["deployments", "list"], ["cancel", "--status", "running"]):
        result = tether(*args, url=url)
        assert result.code == 1, result
        assert "no tether database at" in error_line(result) and name in error_line(result)
    with backends.admin() as conn:
        found = conn.execute(
            "SELECT 1 FROM information_schema.schemata WHERE schema_name = %s", (name,)
        ).fetchone()
    assert found is None


def test_unsupported_url_and_bad_cursor(url: str) -> None:
    scheme = tether("inspect", "runs", "--backend", "mysql://x/y", url=url)
    assert scheme.code == 2 and "unsupported world URL 'mysql://x/y'" in error_line(scheme)
    cursor = tether("inspect", "runs", "--cursor", "yesterday", url=url)
    assert cursor.code == 2 and "invalid cursor 'yesterday'" in error_line(cursor)
    steps_cursor = tether("inspect", "events", "run_x", "--cursor", "x", url=url)
    assert steps_cursor.code == 2 and "invalid cursor 'x'" in error_line(steps_cursor)


def test_backend_option_wins_over_the_environment(url: str, world: World, tmp_path: Path) -> None:
    run_id = create_run(world, HELLO, ["a"])
    elsewhere = f"sqlite:///{tmp_path}/absent.db"
    assert tether("inspect", "runs", "--json", "--backend", url, url=elsewhere).code == 0
    assert run_id in tether("inspect", "runs", "--json", url=url).out
    assert tether("inspect", "runs", "--backend", elsewhere, url=url).code == 1


def test_hook_tokens_and_payloads(url: str) -> None:
    unknown = tether("hooks", "resume", "no-such-token", '"x"', url=url)
    assert unknown.code == 1
    assert "no active hook has token 'no-such-token'" in error_line(unknown)
    bad = tether("hooks", "resume", "tok", "{oops", url=url)
    assert bad.code == 2 and "the payload ('{oops') is not valid JSON" in error_line(bad)
    status = tether("inspect", "hooks", "--status", "open", url=url)
    assert status.code == 2
    assert "expected one of active, disposed, conflict" in error_line(status)


def test_exit_codes_tell_bad_input_from_what_failed() -> None:
    from tether.cli.errors import FAILED, USAGE, translate

    assert translate(tether_errors.InvalidValueError("bad"), None).exit_code == USAGE
    assert translate(tether_errors.ConfigurationError("unset"), None).exit_code == USAGE
    # A stored value that cannot be read, a closed stream: they failed, the input was fine.
    assert translate(tether_errors.SerializationError("gone"), None).exit_code == FAILED
    assert translate(tether_errors.StreamClosedError("closed"), None).exit_code == FAILED
    assert translate(ValueError("the CLI's own parse"), None).exit_code == USAGE
