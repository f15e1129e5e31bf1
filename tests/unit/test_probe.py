from __future__ import annotations
import asyncio, os
import tether
from tests.unit.test_instance import Driven, record
from tether import step, workflow
from tether.runtime.check import check_run

@step
def label(order: str, copies: int = 1) -> str:
    return "x"

@step
def a(x: int) -> int: return x
@step
def b(x: int) -> int: return x
@step
def notify(url: str) -> None: return None

@workflow
async def pos(order: str) -> str:
    return await label(order, 1)

@workflow
async def kw(order: str) -> str:
    return await label(order, copies=1)

@workflow
async def kw_default(order: str) -> str:
    return await label(order)

def test_keyword_vs_positional():
    run = Driven(pos, ("o",)); run.start()
    for flow in (kw, kw_default):
        r = check_run(record(pos, ("o",), run.run_id), run.log, flow)
        print(flow.name, r)

@workflow
async def dictarg(order: str) -> str:
    return await label(order, 1)

@workflow
async def raises_now(order: str) -> str:
    x = await label(order, 1)
    raise RuntimeError("v2 bug")

def test_new_code_raises_at_position():
    run = Driven(pos, ("o",)); run.start(); run.complete("0", "x")
    r = check_run(record(pos, ("o",), run.run_id), run.log, raises_now)
    print("raises:", r)

@workflow
async def par(order: str) -> list[int]:
    r = await asyncio.gather(a(1), b(2))
    return [*r, await a(3)]

@workflow
async def par2(order: str) -> list[int]:
    r = await asyncio.gather(a(1), b(5))
    return [*r, await a(3)]

@workflow
async def seq(order: str) -> list[int]:
    x = await a(1); y = await b(2)
    return [x, y, await a(3)]

def test_parallel():
    run = Driven(par, ("o",)); run.start()
    run.complete("1", 2); run.complete("0", 1)
    print([ (e.seq, e.type, e.correlation_id) for e in run.log])
    for flow in (par, par2, seq):
        print(flow.name, check_run(record(par, ("o",), run.run_id), run.log, flow))

@workflow
async def hookflow(order: str) -> None:
    h = tether.create_webhook(token="tok")
    await notify(h.url)
    await h

def test_hook_url():
    os.environ["TETHER_WEBHOOK_BASE_URL"] = "https://api.example.com"
    run = Driven(hookflow, ("o",)); run.start()
    print([ (e.type, e.payload) for e in run.log])
    del os.environ["TETHER_WEBHOOK_BASE_URL"]
    print("hook:", check_run(record(hookflow, ("o",), run.run_id), run.log, hookflow))

@workflow
async def starts(order: str) -> None:
    await label(order, 1)
    tether.start(pos, ["child"])

def test_start_in_check(tmp_path):
    tether.configure(f"sqlite:///{tmp_path}/w.db")
    run = Driven(pos, ("o",)); run.start(); run.complete("0", "x")
    r = check_run(record(pos, ("o",), run.run_id), run.log, starts)
    print("starts:", r, [x.run_id for x in tether.list_runs()])
    tether.close()
