"""The client names users reach for on day one: list_runs, step_info, run.hooks(), async reads."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

import tether
from tests.integration.processes import wait_for
from tether import asgi, step, workflow

pytestmark = pytest.mark.both_worlds


@step
def key_of(label: str) -> list[object]:
    info = tether.step_info()
    return [label, info.run_id, info.step_id, info.attempt, info.deployment_id, info.step_name]


@step
def flaky_key(path: str) -> str:
    marker = Path(path)
    info = tether.step_info()
    if not marker.exists():
        marker.write_text(info.idempotency_key)
        raise RuntimeError("first attempt fails")
    assert marker.read_text() == info.idempotency_key  # the same key on the retry
    return f"{info.idempotency_key}@{info.attempt}"


@workflow
async def keyed(path: str) -> list[object]:
    first = await key_of("a")
    second = await key_of("b")
    return [first, second, await flaky_key(path)]


def test_step_info_names_the_run_step_and_attempt(
    worker: tether.Worker, deployment_id: str, tmp_path: Path
) -> None:
    run = tether.start(keyed, [str(tmp_path / "marker")])
    first, second, retried = run.result(timeout=20)
    assert first[:2] == ["a", run.run_id] and second[:2] == ["b", run.run_id]
    assert first[2] != second[2]  # a step id per step
    assert first[3:] == [1, deployment_id, key_of.name]
    assert retried == f"{run.run_id}:{run.steps()[2].step_id}@2"


def test_step_info_outside_a_worker_says_where_it_works() -> None:
    with pytest.raises(tether.ContextError, match=r"inside a @step that a worker runs"):
        tether.step_info()
    with pytest.raises(tether.ContextError):
        key_of("plain call")  # a step called as a plain function has no attempt


def test_calling_a_workflow_directly_says_to_start_it() -> None:
    with pytest.raises(tether.ContextError, match=r"tether\.start\(keyed, \[args\]\)"):
        keyed("x")


@workflow
async def quiet(n: int) -> int:
    return n


@workflow
async def refused() -> None:
    raise tether.FatalError("no")


def test_list_runs_filters_like_the_cli(worker: tether.Worker, deployment_id: str) -> None:
    runs = [tether.start(quiet, [i]) for i in range(5)]
    for run in runs:
        run.result(timeout=10)
    failed = tether.start(refused, [])
    with pytest.raises(tether.RunFailedError):
        failed.result(timeout=20)
    newest_first = [r.run_id for r in reversed(runs)]
    assert [r.run_id for r in tether.list_runs(workflow_name=quiet.name)] == newest_first
    assert [r.run_id for r in tether.list_runs(workflow_name=quiet.name, limit=2)] == (
        newest_first[:2]
    )
    assert [r.run_id for r in tether.list_runs(status="failed")] == [failed.run_id]
    assert len(tether.list_runs(deployment_id=deployment_id, limit=None)) == 6
    assert tether.list_runs(deployment_id="nope") == []
    with pytest.raises(ValueError, match=r"invalid status 'done': expected one of pending"):
        tether.list_runs(status="done")


@workflow
async def approvals() -> list[object]:
    plain = tether.create_hook(token="plain-token", metadata={"who": "ops"})
    web = tether.create_webhook(token="web token/1")
    return [await plain, await web]


@pytest.fixture
def webhook_server() -> Iterator[str]:
    """``tether.asgi.app`` on a real uvicorn server on loopback; its base URL."""
    server = uvicorn.Server(uvicorn.Config(asgi.app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, 10, "uvicorn to start")
    yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    server.should_exit = True
    thread.join(timeout=10)


def test_a_runs_hooks_and_their_webhook_urls(
    worker: tether.Worker, monkeypatch: pytest.MonkeyPatch, webhook_server: str
) -> None:
    run = tether.start(approvals, [])
    wait_for_hooks(run, 2)
    plain, web = run.hooks()
    assert (plain.token, plain.webhook, plain.status, plain.metadata) == (
        "plain-token",
        False,
        "active",
        {"who": "ops"},
    )
    assert plain.url is None and web.webhook
    monkeypatch.delenv("TETHER_WEBHOOK_BASE_URL", raising=False)
    with pytest.raises(tether.ConfigurationError, match="TETHER_WEBHOOK_BASE_URL"):
        _ = web.url
    monkeypatch.setenv("TETHER_WEBHOOK_BASE_URL", "https://api.example.com/")
    assert web.url == "https://api.example.com/.well-known/workflow/v1/webhook/web%20token%2F1"
    monkeypatch.setenv("TETHER_WEBHOOK_BASE_URL", webhook_server)
    tether.resume_hook("plain-token", 1)
    assert web.url is not None
    assert httpx.post(web.url, json={"n": 2}, timeout=10).status_code == 202
    plain_payload, web_payload = run.result(timeout=10)
    assert plain_payload == 1 and web_payload["body"] == {"n": 2}
    assert [h.status for h in run.hooks()] == ["disposed", "disposed"]


def wait_for_hooks(run: tether.Run, count: int) -> None:
    with run._world.watch() as changed:
        for _ in range(200):
            if len(run.hooks()) >= count:
                return
            changed(0.1)
    raise AssertionError(f"{run.run_id} created {len(run.hooks())} hooks, not {count}")


def test_async_reads(worker: tether.Worker) -> None:
    async def main() -> str:
        run = await tether.start_async(quiet, [3])
        assert await run.result_async(timeout=10) == 3
        again = await tether.get_run_async(run.run_id)
        with pytest.raises(tether.RunNotFoundError, match="run_nope"):
            await tether.get_run_async("run_nope")
        return await again.status_async()

    assert asyncio.run(main()) == "completed"


@workflow
async def hands_out_a_url() -> str | None:
    hook = tether.create_webhook(token="handed-out")
    return hook.url  # say, passed to a step that emails it


def test_a_workflow_reading_hook_url_without_a_base_url_does_not_fail(
    worker: tether.Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TETHER_WEBHOOK_BASE_URL", raising=False)
    run = tether.start(hands_out_a_url, [])
    assert run.result(timeout=10) == "/.well-known/workflow/v1/webhook/handed-out"


@workflow
async def starts_from_its_own_code() -> str:
    return tether.start(quiet, [1]).run_id  # not in a step: every replay would start again


def test_workflow_code_cannot_write_to_the_world_itself(worker: tether.Worker) -> None:
    run = tether.start(starts_from_its_own_code, [])
    with pytest.raises(tether.RunFailedError) as info:
        run.result(timeout=10)
    assert info.value.error["type"] == "tether.errors.ContextError"
    assert "call it in a @step" in info.value.error["message"]
    assert [r.workflow_name for r in tether.list_runs()] == [starts_from_its_own_code.name]


@workflow
async def hands_out_then_waits() -> list[object]:
    hook = tether.create_webhook(token="kept-url")
    return [await hook, hook.url]


def test_a_webhook_url_is_replayed_from_the_log_like_its_token(
    world_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TETHER_WEBHOOK_BASE_URL", "https://first.example.com")
    with tether.Worker():
        run = tether.start(hands_out_then_waits, [])
        wait_for_hooks(run, 1)
    # Another worker, configured otherwise, replays the run from its log.
    monkeypatch.setenv("TETHER_WEBHOOK_BASE_URL", "https://second.example.com")
    with tether.Worker():
        tether.resume_hook("kept-url", "ok")
        assert run.result(timeout=10) == [
            "ok",
            "https://first.example.com/.well-known/workflow/v1/webhook/kept-url",
        ]
