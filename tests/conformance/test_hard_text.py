"""Hard text through the public API, the same on every World.

NUL (``\\x00``), astral characters, U+2028/U+2029 and lone surrogates, fed to
everything a user hands tether. What travels as JSON (arguments, return
values, hook metadata and payloads, webhook bodies, stream chunks, error
messages and tracebacks) comes back as it was; a lone surrogate, which no
UTF-8 text can hold, is refused with ``SerializationError`` where it was
passed. Identifiers (hook tokens, stream namespaces, run and deployment ids)
that no database can hold are refused with ``InvalidIdentifierError`` where
they would be made, and are simply not found where they are looked up.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import psycopg
import pytest

import tether
from tests.conformance.backends import admin, fresh_schema
from tether import (
    FatalError,
    RetryableError,
    create_hook,
    create_webhook,
    get_writable,
    serde,
    step,
    workflow,
)
from tether.asgi import app as webhook_app
from tether.streams import StreamHandle
from tether.worlds.base import World
from tether.worlds.postgres import PostgresWorld
from tether.worlds.records import Activation, EventRecord, NewRun, RunFilter
from tether.worlds.schema import migrations

#: Every kind of hard text that UTF-8 can hold, in one string.
HARD = "nul\x00 astral\U0001f600 ls\u2028 ps\u2029 end\x00"
#: ... in keys and values, nested.
HARD_VALUE: dict[str, Any] = {
    "text": HARD,
    "nul": "\x00",
    "nested": {"k\x00\U0001f600\u2028": ["\u2029", "\x00\x00", ("\U0010ffff",)]},
}
#: Text that UTF-8 cannot hold: refused, never stored mangled.
SURROGATE = "lone \ud800 surrogate"
#: Identifiers no World can hold: a NUL, a lone surrogate, one too long.
BAD_NAMES = ("bad\x00name", "bad\udc80name", "x" * 257)
#: Identifiers that are hard but fine.
HARD_NAME = "name \U0001f600\u2028\u2029 end"
TIMEOUT = 20.0


def _wait_for(predicate: Callable[[], object], what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    with tether.config.resolve_world().watch() as changed:
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            changed(0.05)


def _world() -> World:
    return tether.config.resolve_world()


def _post(path: str, body: bytes, content_type: str = "application/json") -> httpx.Response:
    """POST to the webhook app (``tether.asgi.app``), in process."""

    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=webhook_app)
        async with httpx.AsyncClient(transport=transport, base_url="http://tether.test") as client:
            return await client.post(path, content=body, headers={"content-type": content_type})

    return asyncio.run(send())


# -- values that travel as JSON round-trip ---------------------------------------------


@step
def echo(value: Any) -> Any:
    return value


@workflow
async def echo_twice(value: Any) -> list[Any]:
    return [value, await echo(value)]


def test_arguments_return_values_and_the_event_log_keep_hard_text(
    worker: tether.Worker,
) -> None:
    run = tether.start(echo_twice, [HARD_VALUE])
    assert run.result(timeout=TIMEOUT) == [HARD_VALUE, HARD_VALUE]
    again = tether.get_run(run.run_id)
    (created,) = [e for e in again.events() if e.type == "step_created"]
    (completed,) = [e for e in again.events() if e.type == "step_completed"]
    assert serde.loads(created.payload or "") == [[HARD_VALUE], {}]
    assert serde.loads(completed.payload or "") == HARD_VALUE
    (only,) = again.steps()
    assert serde.loads(only.output or "") == HARD_VALUE


@workflow
async def hard_hook(token: str) -> dict[str, Any]:
    hook = create_hook(token=token, metadata={"note": HARD, HARD: [HARD, None]})
    payloads = []
    async for payload in hook:
        payloads.append(payload)
        if len(payloads) == 2:
            break
    return {"token": hook.token, "metadata": hook.metadata, "payloads": payloads}


def test_hook_tokens_metadata_and_payloads_keep_hard_text(worker: tether.Worker) -> None:
    metadata = {"note": HARD, HARD: [HARD, None]}
    run = tether.start(hard_hook, [HARD_NAME])
    _wait_for(lambda: _world().list_hooks(run.run_id), "the hook to be created")
    (hook,) = _world().list_hooks(run.run_id)
    assert (hook.token, hook.metadata, hook.status) == (HARD_NAME, metadata, "active")
    (created,) = [e for e in run.events() if e.type == "hook_created"]
    assert (created.attrs or {})["metadata"] == metadata
    assert tether.resume_hook(HARD_NAME, HARD_VALUE) == run.run_id
    assert tether.resume_hook(HARD_NAME, HARD) == run.run_id
    assert run.result(timeout=TIMEOUT) == {
        "token": HARD_NAME,
        "metadata": metadata,
        "payloads": [HARD_VALUE, HARD],
    }


@workflow
async def hard_webhook() -> list[Any]:
    hook = create_webhook(metadata={"note": HARD})
    bodies = []
    async for payload in hook:
        bodies.append(payload["body"])
        if len(bodies) == 2:
            break
    return bodies


def test_webhook_bodies_keep_hard_text(worker: tether.Worker) -> None:
    run = tether.start(hard_webhook)
    _wait_for(lambda: _world().list_hooks(run.run_id), "the webhook to be created")
    (hook,) = _world().list_hooks(run.run_id)
    path = f"/.well-known/workflow/v1/webhook/{hook.token}"
    json_body = '{"s": "a\\u0000b \\ud83d\\ude00 \u2028\u2029"}'.encode()
    text_body = "nul\x00 \U0001f600 \u2028".encode()
    sent_json = _post(path, json_body)
    assert sent_json.status_code == 202, sent_json.text
    sent_text = _post(path, text_body, "text/plain")
    assert sent_text.status_code == 202, sent_text.text
    assert run.result(timeout=TIMEOUT) == [
        {"s": "a\x00b \U0001f600 \u2028\u2029"},
        "nul\x00 \U0001f600 \u2028",
    ]


@step
def write_hard(stream: StreamHandle) -> None:
    stream.write(HARD)
    with stream.writer() as writer:
        writer.write(HARD_VALUE)
    stream.close()


@workflow
async def hard_stream(namespace: str) -> str:
    stream = get_writable(namespace)
    await write_hard(stream)
    return stream.namespace


def test_stream_namespaces_and_chunks_keep_hard_text(worker: tether.Worker) -> None:
    run = tether.start(hard_stream, [HARD_NAME])
    assert run.result(timeout=TIMEOUT) == HARD_NAME
    assert list(tether.get_readable(run.run_id, HARD_NAME)) == [HARD, HARD_VALUE]
    (stream,) = _world().list_streams(run.run_id)
    assert (stream.namespace, stream.next_index, stream.closed) == (HARD_NAME, 2, True)


# -- errors keep their text ------------------------------------------------------------


@step(max_retries=1)
def fail_with(message: str, fatal: bool) -> None:
    if fatal:
        raise FatalError(message)
    raise RetryableError(message, retry_after="10ms")


@workflow
async def catches(message: str) -> str:
    try:
        await fail_with(message, True)
    except FatalError as exc:
        return str(exc)
    return "not raised"


@workflow
async def fails_in_a_step(message: str) -> None:
    await fail_with(message, False)


@workflow
async def fails_itself(message: str) -> None:
    raise ValueError(message)


def test_step_and_workflow_errors_keep_hard_text(worker: tether.Worker) -> None:
    assert tether.start(catches, [HARD]).result(timeout=TIMEOUT) == HARD

    run = tether.start(fails_in_a_step, [HARD])
    with pytest.raises(tether.RunFailedError) as info:
        run.result(timeout=TIMEOUT)
    assert info.value.error["message"] == HARD
    assert HARD in info.value.error["traceback"]
    (retried,) = [e for e in run.events() if e.type == "step_retrying"]
    assert str(serde.loads(retried.payload or "")) == HARD
    (failed,) = run.steps()
    assert (failed.status, str(serde.loads(failed.error or ""))) == ("failed", HARD)

    run = tether.start(fails_itself, [HARD])
    with pytest.raises(tether.RunFailedError) as info:
        run.result(timeout=TIMEOUT)
    assert info.value.error["message"] == HARD
    assert HARD in info.value.error["traceback"]


@step
def raise_surrogate() -> None:
    raise ValueError(SURROGATE)


@workflow
async def catches_surrogate() -> str:
    try:
        await raise_surrogate()
    except ValueError as exc:
        return str(exc)
    return "not raised"


@workflow
async def fails_with_surrogate() -> None:
    raise ValueError(SURROGATE)


def test_an_error_whose_text_utf8_cannot_hold_is_stored_with_it_escaped(
    worker: tether.Worker,
) -> None:
    # A run must be able to fail whatever its error says: the surrogate is kept as "\ud800".
    shown = "lone \\ud800 surrogate"
    assert tether.start(catches_surrogate).result(timeout=TIMEOUT) == shown
    run = tether.start(fails_with_surrogate)
    with pytest.raises(tether.RunFailedError) as info:
        run.result(timeout=TIMEOUT)
    assert info.value.error["message"] == shown
    assert shown in info.value.error["traceback"]


# -- lone surrogates are refused where they are passed -----------------------------------


@step
def returns_surrogate() -> str:
    return SURROGATE


@step
def writes_surrogate(stream: StreamHandle) -> str:
    try:
        stream.write({"s": SURROGATE})
    except tether.SerializationError as exc:
        return str(exc)
    return "written"


@workflow
async def refuses_surrogates() -> dict[str, str]:
    found: dict[str, str] = {}
    try:
        create_hook(metadata={"s": SURROGATE})
    except tether.SerializationError as exc:
        found["metadata"] = str(exc)
    try:
        await returns_surrogate()
    except tether.SerializationError as exc:
        found["step result"] = str(exc)
    found["chunk"] = await writes_surrogate(get_writable())
    return found


@workflow
async def returns_surrogate_itself() -> str:
    return SURROGATE


def _says_surrogate(message: str, where: str) -> None:
    assert "surrogate" in message and "U+D800" in message, message
    assert where in message, message


def test_a_lone_surrogate_is_refused_where_it_is_passed(worker: tether.Worker) -> None:
    with pytest.raises(tether.SerializationError) as info:
        tether.start(echo_twice, [{"key": [SURROGATE]}])
    _says_surrogate(str(info.value), "arguments of " + echo_twice.name)
    assert "['key'][0]" in str(info.value)
    with pytest.raises(tether.SerializationError) as info:
        tether.resume_hook("any-token", SURROGATE)
    _says_surrogate(str(info.value), "payload of hook 'any-token'")

    found = tether.start(refuses_surrogates).result(timeout=TIMEOUT)
    _says_surrogate(found["metadata"], "hook metadata")
    _says_surrogate(found["step result"], "return value of " + returns_surrogate.name)
    _says_surrogate(found["chunk"], "chunk of stream")

    run = tether.start(returns_surrogate_itself)
    with pytest.raises(tether.RunFailedError) as failed:
        run.result(timeout=TIMEOUT)
    assert failed.value.error["type"] == "tether.errors.SerializationError"
    _says_surrogate(failed.value.error["message"], "return value of " + run.workflow_name)


@workflow
async def nan_metadata() -> str:
    try:
        create_hook(metadata={"x": float("nan")})
    except tether.SerializationError as exc:
        return str(exc)
    return "created"


def test_hook_metadata_that_is_not_json_is_refused(worker: tether.Worker) -> None:
    # NaN is not JSON: PostgreSQL's json type refuses it, so no World may take it.
    assert "hook metadata must be JSON" in tether.start(nan_metadata).result(timeout=TIMEOUT)


def test_a_webhook_body_utf8_cannot_hold_is_a_bad_request(worker: tether.Worker) -> None:
    run = tether.start(hard_webhook)
    _wait_for(lambda: _world().list_hooks(run.run_id), "the webhook to be created")
    (hook,) = _world().list_hooks(run.run_id)
    sent = _post(f"/.well-known/workflow/v1/webhook/{hook.token}", b'{"s": "\\ud800"}')
    assert sent.status_code == 400, sent.text
    assert "surrogate" in sent.json()["error"]
    assert [e.type for e in run.events()].count("hook_received") == 0
    run.cancel()


# -- identifiers no World can hold ----------------------------------------------------


@workflow
async def makes_named(kind: str, which: int) -> list[Any]:
    name = BAD_NAMES[which]
    try:
        if kind == "hook":
            create_hook(token=name)
        elif kind == "webhook":
            create_webhook(token=name)
        else:
            get_writable(name)
    except tether.InvalidIdentifierError as exc:
        return ["refused", str(exc), isinstance(exc, ValueError)]
    return ["made"]


@pytest.mark.parametrize("kind", ["hook", "webhook", "namespace"])
def test_identifiers_no_world_can_hold_are_refused_where_they_are_made(
    worker: tether.Worker, kind: str
) -> None:
    for which, name in enumerate(BAD_NAMES):
        outcome, message, is_value_error = tether.start(makes_named, [kind, which]).result(
            timeout=TIMEOUT
        )
        assert outcome == "refused" and is_value_error
        assert repr(name)[:40] in message, message
        assert "NUL" in message and "surrogate" in message and "256" in message, message


def test_identifiers_no_world_can_hold_are_not_found(world_url: str) -> None:
    for name in BAD_NAMES[:2]:
        with pytest.raises(tether.HookNotFoundError, match="no active hook"):
            tether.resume_hook(name, 1)
        with pytest.raises(tether.RunNotFoundError):
            tether.get_run(name)
        with pytest.raises(tether.RunNotFoundError):
            tether.cancel_run(name)
        with pytest.raises(tether.RunNotFoundError):
            tether.rerun(name)
        with pytest.raises(tether.DeploymentNotFoundError):
            tether.start(echo_twice, [1], deployment_id=name)
        assert list(tether.get_readable(name)) == []
        assert tether.cancel_runs(deployment_id=name) == []
        assert tether.cancel_runs(workflow_name=name) == []
    sent = _post("/.well-known/workflow/v1/webhook/bad%00token", b"{}")
    assert sent.status_code == 404, sent.text
    assert "no active webhook" in sent.json()["error"]


def test_the_world_refuses_to_make_and_does_not_find_what_it_cannot_hold(
    world_url: str,
) -> None:
    world = _world()
    workflow_name = echo_twice.name
    for name in BAD_NAMES:
        for run in (
            NewRun(name, workflow_name, "tests", "[]"),
            NewRun("run_ok", workflow_name, name, "[]"),
            NewRun("run_ok", workflow_name, "tests", "[]", parent_run_id=name),
        ):
            with pytest.raises(tether.InvalidIdentifierError):
                world.create_run(run)
        with pytest.raises(tether.InvalidIdentifierError):
            world.append_chunks(f"run_ok/{name}", "run_ok", name, ["1"], False)
    assert world.list_runs(RunFilter()) == [] and world.list_streams() == []
    for name in BAD_NAMES[:2]:
        assert world.get_run(name) is None
        assert world.list_events(name) == [] and world.list_steps(name) == []
        assert world.list_waits(name) == [] and world.list_hooks(name) == []
        assert world.list_hooks(status=name) == [] and world.list_streams(name) == []
        assert world.read_chunks(name, 0, 10) == ([], None)
        assert world.get_deployment(name) is None and world.latest_deployment(name) is None
        assert world.list_runs(RunFilter(status=name)) == []
        assert world.list_runs(RunFilter(rerun_of=name)) == []
        assert world.cancel_runs([name]).cancelled == []
        assert world.wake_sleeps(name) == 0
        with pytest.raises(tether.HookNotFoundError):
            world.resume_hook(name, "1", webhook_only=True)


# -- PostgreSQL: tether_append of migration 0007, from the schema before it ------------

OLD_WF, OLD_STEP = "workflow//tests.old//flow", "step//tests.old//act"


def _migrate_to(conn: psycopg.Connection[Any], last: int) -> None:
    """Apply the PostgreSQL migrations up to ``last``, as a tether of that time did."""
    conn.execute(
        "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY,"
        " applied_at double precision NOT NULL)"
    )
    for version, statements in migrations("postgres"):
        if version <= last:
            for statement in statements:
                conn.execute(statement)
            conn.execute("INSERT INTO schema_migrations VALUES (%s, 0)", (version,))


def _append_as_0006(conn: psycopg.Connection[Any], events: list[list[Any]]) -> None:
    """Call tether_append as the writer of 0006 did: attrs as JSON objects, seven elements."""
    conn.execute(
        "SELECT tether_append('r1', 'dep', NULL, %s, NULL, 0.0, false, 9.0)",
        (json.dumps(events),),
    )


def test_postgres_migration_0007_keeps_older_data_and_older_writers() -> None:
    old_attrs = {"token": "old-1", "metadata": {"note": "before"}, "webhook": False}
    beside_attrs = {"token": "old-2", "metadata": [1, "two"], "webhook": True}
    new_attrs = {"token": "new-1", "metadata": {"s": HARD, HARD: None}, "webhook": False}
    with fresh_schema() as url:
        search_path = f"SET search_path TO {url.rsplit('schema=', 1)[1]}"
        with admin() as conn:
            conn.execute(search_path)
            _migrate_to(conn, 6)
            conn.execute(
                "INSERT INTO runs (run_id, workflow_name, deployment_id, status, input,"
                " created_at, last_seq) VALUES ('r1', %s, 'dep', 'pending', '[]', 1.0, 1)",
                (OLD_WF,),
            )
            _append_as_0006(
                conn,
                [
                    [2, "run_started", None, None, None, None, 2.0],
                    [3, "hook_created", "1", None, None, old_attrs, 2.0],
                    [4, "step_created", "2", OLD_STEP, "[[],{}]", None, 2.0],
                    [5, "step_started", "2", None, None, {"attempt": 1}, 2.0],
                ],
            )
        world = PostgresWorld(url)  # applies 0007
        try:
            with admin() as conn:
                conn.execute(search_path)
                versions = conn.execute("SELECT version FROM schema_migrations").fetchall()
                assert sorted(v for (v,) in versions) == [v for v, _ in migrations("postgres")]
                assert 7 in {v for (v,) in versions}
                # A process of the older tether, beside this one, still commits.
                _append_as_0006(
                    conn,
                    [
                        [6, "hook_created", "3", None, None, beside_attrs, 3.0],
                        [7, "step_completed", "2", None, '{"v":1,"d":1}', {"attempt": 1}, 3.0],
                    ],
                )
            hard_hook_created = EventRecord(
                "r1", 8, "hook_created", "4", attrs=new_attrs, created_at=4.0
            )
            assert world.commit_activation(Activation("r1", 7, [hard_hook_created], "w1", 10.0))
            hooks = world.list_hooks("r1")
            assert [(h.token, h.metadata, h.webhook) for h in hooks] == [
                ("old-1", old_attrs["metadata"], False),
                ("old-2", beside_attrs["metadata"], True),
                ("new-1", new_attrs["metadata"], False),
            ]
            (step_record,) = world.list_steps("r1")
            assert (step_record.status, step_record.attempt) == ("completed", 1)
            assert step_record.output == '{"v":1,"d":1}'
            logged = {e.seq: e.attrs for e in world.list_events("r1") if e.type == "hook_created"}
            assert logged == {3: old_attrs, 6: beside_attrs, 8: new_attrs}
            # Stored as the same text, whichever writer sent it.
            with admin() as conn:
                conn.execute(search_path)
                stored = conn.execute(
                    "SELECT e.attrs, h.metadata FROM events e JOIN hooks h"
                    " ON h.run_id = e.run_id AND h.hook_id = e.correlation_id ORDER BY e.seq"
                ).fetchall()
            assert stored == [
                (json.dumps(attrs), json.dumps(attrs["metadata"]))
                for attrs in (old_attrs, beside_attrs, new_attrs)
            ]
        finally:
            world.close()
