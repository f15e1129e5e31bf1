"""Hooks, webhooks and streams, across runs and processes, through the public API."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from examples.http_app import app as http_app
from examples.http_app import export_report

import tether
from tests.apps import streaming
from tests.conformance.probe import next_due
from tests.integration.processes import REPO, WorkerProcess, wait_for
from tether import create_hook, workflow
from tether.worlds.records import NewRun, RunRecord

pytestmark = pytest.mark.both_worlds


@workflow
async def collect(count: int, token: str | None = None) -> list[Any]:
    hook = create_hook(token=token, metadata={"purpose": "test"})
    payloads: list[Any] = []
    async for payload in hook:
        payloads.append(payload)
        if len(payloads) == count:
            return payloads
    return payloads


@workflow
async def approval(timeout: float) -> dict[str, Any]:
    hook = create_hook()
    timer = tether.sleep(timeout)
    done, _ = await asyncio.wait({hook, timer}, return_when=asyncio.FIRST_COMPLETED)
    return {"approved": hook.result()} if hook in done else {"timed_out": True}


@workflow
async def claims(token: str) -> str:
    hook = create_hook(token=token)
    try:
        return str(await hook)
    except tether.HookConflictError as exc:
        return f"conflict: {exc}"


def _token(run: tether.Run) -> str:
    world = tether.config.resolve_world()
    wait_for(lambda: world.list_hooks(run.run_id), 10, "the hook to be created")
    return world.list_hooks(run.run_id)[0].token


def test_hook_resumed_from_another_process(worker: tether.Worker, world_url: str) -> None:
    run = tether.start(collect, [1])
    token = _token(run)
    assert len(token) >= 22  # >= 128 bits, url-safe
    code = (
        "import sys, tether; tether.configure(sys.argv[1]); "
        "print(tether.resume_hook(sys.argv[2], {'from': 'elsewhere'}))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    out = subprocess.run(
        [sys.executable, "-c", code, world_url, token],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    assert out.stdout.strip() == run.run_id
    assert run.result(timeout=10) == [{"from": "elsewhere"}]


def test_many_payloads_arrive_in_order_through_async_for(worker: tether.Worker) -> None:
    run = tether.start(collect, [5])
    token = _token(run)
    for i in range(5):
        tether.resume_hook(token, {"n": i})
    assert run.result(timeout=10) == [{"n": i} for i in range(5)]
    types = [e.type for e in run.events()]
    assert types.count("hook_received") == 5
    assert types[-2:] == ["hook_disposed", "run_completed"]
    (hook,) = tether.config.resolve_world().list_hooks(run.run_id)
    assert hook.status == "disposed" and hook.metadata == {"purpose": "test"}


def test_token_held_by_another_active_hook_is_a_conflict(worker: tether.Worker) -> None:
    holder = tether.start(collect, [1, "order-42"])
    _token(holder)
    rival = tether.start(claims, ["order-42"])
    result = rival.result(timeout=10)
    assert result.startswith("conflict:") and "order-42" in result
    tether.resume_hook("order-42", "for the holder")
    assert holder.result(timeout=10) == ["for the holder"]
    again = tether.start(claims, ["order-42"])  # the holder ended: the token is free
    _token(again)
    tether.resume_hook("order-42", "second owner")
    assert again.result(timeout=10) == "second owner"


def test_unknown_or_disposed_token_is_not_found(worker: tether.Worker) -> None:
    with pytest.raises(tether.HookNotFoundError, match="no-such-token"):
        tether.resume_hook("no-such-token", 1)
    run = tether.start(collect, [1])
    token = _token(run)
    tether.resume_hook(token, "done")
    run.result(timeout=10)
    with pytest.raises(tether.HookNotFoundError):
        tether.resume_hook(token, "too late")
    cancelled = tether.start(collect, [1])
    token = _token(cancelled)
    cancelled.cancel()
    with pytest.raises(tether.HookNotFoundError):
        tether.resume_hook(token, "after cancel")
    assert "hook_disposed" in [e.type for e in cancelled.events()]


def test_approval_with_timeout_takes_both_branches(worker: tether.Worker) -> None:
    approved = tether.start(approval, [30])
    tether.resume_hook(_token(approved), "yes")
    assert approved.result(timeout=10) == {"approved": "yes"}
    assert tether.start(approval, [0.05]).result(timeout=10) == {"timed_out": True}


def _timer_held(run: tether.Run, sleep_ends: float) -> Callable[[], bool]:
    """Whether the run's workflow task is leased already: claimed ahead of ``sleep_ends``."""
    world = tether.config.resolve_world()
    return lambda: (next_due(world, run.deployment_id) or 0) > sleep_ends + 5


@pytest.fixture
def holding_worker(world_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[tether.Worker]:
    """A worker that claims sleeps ending within 4 s and holds them (leases last 30 s)."""
    monkeypatch.setattr(tether.runtime.worker, "CLAIM_AHEAD", 4.0)
    with tether.Worker(lease_seconds=30.0) as w:
        yield w


def test_a_payload_for_a_run_whose_timer_is_held_is_not_lost(
    holding_worker: tether.Worker,
) -> None:
    """The worker claims a sleep's end ahead and holds it; a payload lands meanwhile."""
    run = tether.start(approval, [3.0])
    token = _token(run)
    ends = run.events()[0].created_at + 3.0
    wait_for(_timer_held(run, ends), 10, "the timer to be held")
    tether.resume_hook(token, "late yes")
    assert run.result(timeout=10) == {"approved": "late yes"}
    # The payload waited for the held timer: the run ended at the sleep's end, not before.
    assert run.events()[-1].created_at >= ends - 0.1


@workflow
async def nap(seconds: float) -> str:
    await tether.sleep(seconds)
    return "rested"


def test_a_held_timer_of_a_run_woken_meanwhile_is_refused_and_replayed(
    holding_worker: tether.Worker,
) -> None:
    """A cached run with only a sleep out goes on from memory at its time, unread.

    Waking its sleep meanwhile (an operator's action) moved its log: that
    commit must be refused, and the run replayed from its log, once woken.
    """
    run = tether.start(nap, [3.0])
    wait_for(lambda: len(run.events()) >= 3, 10, "the sleep to begin")
    wait_for(_timer_held(run, run.events()[0].created_at + 3.0), 10, "the timer to be held")
    assert tether.config.resolve_world().wake_sleeps(run.run_id) == 1
    assert run.result(timeout=10) == "rested"
    assert [e.type for e in run.events()].count("wait_completed") == 1


def test_approval_replays_the_same_branch(world_url: str) -> None:
    """With no cache every activation replays: the race must come out the same."""
    with tether.Worker(cache_size=0):
        approved = tether.start(approval, [30])
        tether.resume_hook(_token(approved), "yes")
        assert approved.result(timeout=10) == {"approved": "yes"}
        assert tether.start(approval, [0.05]).result(timeout=10) == {"timed_out": True}


def test_stream_read_live_from_another_process(world_url: str, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    with_worker = WorkerProcess(world_url, ["tests.apps.streaming"], tmp_path / "w.log")
    try:
        run = tether.start(streaming.ticker, [str(gate), 3])
        chunks = iter(run.readable)
        assert next(chunks) == {"tick": 0}
        assert run.status() == "running"  # read live, while the step still writes
        gate.write_text("go")
        assert list(chunks) == [{"tick": 1}, {"tick": 2}]
        assert run.result(timeout=10) == 3
    finally:
        with_worker.stop()


def test_stream_through_three_continuations_reads_as_one(worker: tether.Worker) -> None:
    run = tether.start(export_report, [{"export_id": "e1", "page": 1, "pages": 3}])
    lines = [json.loads(line) for line in run.readable]
    assert lines == [
        {"type": "page", "page": 1},
        {"type": "page", "page": 2},
        {"type": "page", "page": 3},
        {"type": "done", "total_pages": 3},
    ]
    chain = [run]
    while "continued_as" in (result := chain[-1].result(timeout=10)):
        chain.append(tether.get_run(result["continued_as"]))
    assert len(chain) == 3
    assert [c.parent_run_id for c in chain[1:]] == [r.run_id for r in chain[:-1]]
    assert list(tether.get_readable(run.run_id, start_index=-2)) == [
        json.dumps({"type": "page", "page": 3}) + "\n",
        json.dumps({"type": "done", "total_pages": 3}) + "\n",
    ]


def test_unclosed_stream_ends_when_its_runs_have_ended(worker: tether.Worker) -> None:
    run = tether.start(streaming.never_closes)
    assert list(run.readable) == ["first run", "continuation"]
    continuation = tether.get_run(run.result(timeout=10))
    assert continuation.result(timeout=10) is None
    assert continuation.parent_run_id == run.run_id
    assert list(tether.start(writes_nothing).readable) == []  # never wrote at all


@workflow
async def writes_nothing() -> None:
    return None


def test_readable_async_iteration(worker: tether.Worker) -> None:
    async def read() -> list[Any]:
        state = {"export_id": "e2", "page": 1, "pages": 2}
        run = await tether.start_async(export_report, [state])
        return [json.loads(line) async for line in run.readable]

    assert [line["type"] for line in asyncio.run(read())] == ["page", "page", "done"]


def test_writing_from_workflow_code_is_refused(worker: tether.Worker) -> None:
    run = tether.start(streaming.writes_in_workflow)
    with pytest.raises(tether.RunFailedError, match="from a @step"):
        run.result(timeout=10)


# -- over real HTTP ----------------------------------------------------------------


@pytest.fixture
def server(world_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The example app (which runs a worker) on a real uvicorn server on loopback."""
    monkeypatch.setenv("TETHER_WEBHOOK_MAX_BYTES", "2048")
    config = uvicorn.Config(http_app, host="127.0.0.1", port=0, log_level="warning")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    wait_for(lambda: srv.started, 10, "uvicorn to start")
    port = srv.servers[0].sockets[0].getsockname()[1]
    monkeypatch.setenv("TETHER_WEBHOOK_BASE_URL", f"http://127.0.0.1:{port}")
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=10)


def test_export_streams_every_page_in_order_over_http(server: str) -> None:
    with (
        httpx.Client(base_url=server, timeout=10) as client,
        client.stream("POST", "/export", json={"export_id": "x", "pages": 4}) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/jsonl")
        lines = [json.loads(line) for line in response.iter_lines() if line]
    assert [line.get("page") for line in lines] == [1, 2, 3, 4, None]
    assert lines[-1] == {"type": "done", "total_pages": 4}


def test_webhook_over_http(server: str) -> None:
    with httpx.Client(base_url=server, timeout=10) as client:
        started = client.post("/refunds/o-9").json()
        url = started["approve_url"]
        assert url.startswith(server + "/.well-known/workflow/v1/webhook/")
        assert (
            client.post(
                url, content=b"{not json", headers={"content-type": "application/json"}
            ).status_code
            == 400
        )
        assert client.post(url, content=b"x" * 4096).status_code == 413
        assert (
            client.post(server + "/.well-known/workflow/v1/webhook/nope", json={}).status_code
            == 404
        )
        accepted = client.post(url, json={"approved": True})
        assert accepted.status_code == 202 and accepted.json()["run_id"] == started["run_id"]
        run = tether.get_run(started["run_id"])
        assert run.result(timeout=10) == {"order_id": "o-9", "approved": True}
        # The run has ended and disposed of its webhook: a second payload finds nothing.
        assert client.post(url, json={"approved": True}).status_code == 404
    received = [e for e in run.events() if e.type == "hook_received"]
    payload = tether.serde.loads(received[0].payload or "null")
    assert payload["method"] == "POST" and payload["body"] == {"approved": True}


def test_plain_hook_is_not_reachable_as_a_webhook(server: str) -> None:
    run = tether.start(collect, [1])
    token = _token(run)
    with httpx.Client(base_url=server, timeout=10) as client:
        assert client.post(f"/.well-known/workflow/v1/webhook/{token}", json={}).status_code == 404
    run.cancel()


# -- a reader racing the stream's end ---------------------------------------------------


def test_a_reader_gets_the_chunks_written_just_before_the_runs_ended(
    world_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = tether.config.resolve_world()
    run_id = "run_ends_while_read"
    world.create_run(NewRun(run_id, "workflow//tests//writer", "d1", tether.serde.dumps([[], {}])))
    stream_id = f"{run_id}/default"
    world.append_chunks(stream_id, run_id, "default", [tether.serde.dumps("first")], close=False)
    ask = world.get_run
    ended: list[str] = []

    def writer_finishes_meanwhile(asked: str) -> RunRecord | None:
        # Between the reader's read of the chunks and its look at the run, the writer
        # writes its last chunk and the run ends (here: it is cancelled).
        if not ended:
            ended.append(asked)
            world.append_chunks(stream_id, run_id, "default", [tether.serde.dumps("last")], False)
            world.cancel_runs([run_id])
        return ask(asked)

    monkeypatch.setattr(world, "get_run", writer_finishes_meanwhile)
    assert list(tether.get_readable(run_id, world=world)) == ["first", "last"]
    assert ended == [run_id]
