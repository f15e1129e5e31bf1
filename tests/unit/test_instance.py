"""``RunInstance``, the deterministic core, driven by hand: no World, no worker, no clock.

A ``Driven`` run is advanced as a worker advances one: ``run_started``, then
each answer (a step's result, a sleep's end, a hook's payload) fed with
``resume``, the events it returns appended to an in-memory log. Replaying
that log in a fresh instance must take the same path: for every activation,
replaying the log before it and resuming with the same answers must return
exactly the events the live run returned (``assert_replays_the_same``).
"""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass, field
from typing import Any

import pytest

import tether
from tether import serde, step, workflow
from tether.errors import FatalError, NonDeterminismError
from tether.registry import Workflow
from tether.runtime.instance import RunInstance
from tether.worlds.records import EventRecord, RunRecord

T0 = 1_700_000_000.0
ANSWERS = frozenset({"run_started", "step_completed", "step_failed", "wait_completed"})


# -- the code under test ---------------------------------------------------------------


@step
def pick(order: str) -> str:
    return f"picked {order}"


@step
def pack(order: str) -> str:
    return f"packed {order}"


@workflow
async def checkout(order: str) -> list[str]:
    return [await pick(order), await pack(order)]


@workflow
async def checkout_pick_only(order: str) -> list[str]:
    """``checkout`` after a change that dropped its second step."""
    return [await pick(order)]


@workflow
async def checkout_pack_first(order: str) -> list[str]:
    """``checkout`` after a change that swapped its steps."""
    return [await pack(order), await pick(order)]


@workflow
async def checkout_sleep_first(order: str) -> list[str]:
    """``checkout`` after a change that put a sleep before its steps."""
    await tether.sleep("1h")
    return [await pick(order), await pack(order)]


@workflow
async def both_at_once(order: str) -> list[str]:
    return list(await asyncio.gather(pick(order), pack(order)))


@workflow
async def one_after_the_other(order: str) -> list[str]:
    """``both_at_once`` after a change that awaits the steps in turn."""
    return [await pick(order), await pack(order)]


@workflow
async def step_or_timeout(order: str) -> str:
    work = asyncio.ensure_future(pick(order))
    timer = tether.sleep("30s")
    done, _ = await asyncio.wait({work, timer}, return_when=asyncio.FIRST_COMPLETED)
    return str(work.result()) if work in done else "timed out"


@workflow
async def approval_or_timeout(order: str) -> Any:
    hook = tether.create_hook(token=f"approve-{order}")
    timer = tether.sleep("1d")
    done, _ = await asyncio.wait({hook, timer}, return_when=asyncio.FIRST_COMPLETED)
    return {"approved": hook.result()} if hook in done else "timed out"


@workflow
async def step_alongside_hook(order: str) -> Any:
    work = pick(order)
    hook = tether.create_hook(token=f"note-{order}")
    picked, note = await asyncio.gather(work, hook)
    return [note, picked]


@workflow
async def step_then_hook(order: str) -> Any:
    """``step_alongside_hook`` after a change that creates the hook only after the step."""
    picked = await pick(order)
    return [await tether.create_hook(token=f"note-{order}"), picked]


@workflow
async def naps() -> list[float]:
    await tether.sleep(10)
    await tether.sleep("2m")
    return [tether.now().timestamp()]


@workflow
async def values() -> list[Any]:
    before = [tether.now().timestamp(), tether.random(), str(tether.uuid4())]
    await pick("x")
    after = [tether.now().timestamp(), tether.random(), str(tether.uuid4())]
    return [before, after]


@workflow
async def raises(order: str) -> None:
    await pick(order)
    raise ValueError(f"no stock for {order}")


@workflow
async def catches(order: str) -> str:
    try:
        await pick(order)
    except FatalError as exc:
        return f"caught {exc}"
    return "not reached"


@workflow
async def gives_up() -> None:
    await pick("x")
    raise asyncio.CancelledError


@workflow
async def returns_a_lock() -> Any:
    await pick("x")
    return asyncio.Lock()


@workflow
async def reads_its_hook() -> Any:
    try:
        return await tether.create_hook(token="unreadable")
    except Exception as exc:
        return f"{type(exc).__name__}"


@workflow
async def reads_its_step() -> Any:
    try:
        return await pick("x")
    except Exception as exc:
        return f"{type(exc).__name__}"


# -- driving a run by hand -------------------------------------------------------------


@dataclass
class Driven:
    """One run advanced as a worker advances it, its log kept in memory."""

    flow: Workflow[..., Any]
    args: tuple[Any, ...]
    run_id: str = "run_unit"
    log: list[EventRecord] = field(default_factory=list)
    #: (log length before, answers fed, events returned), one per activation.
    activations: list[tuple[int, list[EventRecord], list[EventRecord]]] = field(
        default_factory=list
    )
    clock: float = T0

    def __post_init__(self) -> None:
        self.instance = RunInstance(record(self.flow, self.args, self.run_id), self.flow)
        self.log.append(EventRecord(self.run_id, 1, "run_created", created_at=T0))
        self.instance.replay(self.log)

    def answer(self, kind: str, cid: str | None = None, payload: str | None = None) -> EventRecord:
        """An event the World would add (one second after the previous one)."""
        self.clock += 1.0
        return EventRecord(self.run_id, 0, kind, cid, payload=payload, created_at=self.clock)

    def feed(self, *answers: EventRecord) -> list[EventRecord]:
        before = len(self.log)
        new = self.instance.resume(list(answers))
        self.activations.append((before, list(answers), new))
        self.log.extend(new)
        return new

    def start(self) -> list[EventRecord]:
        return self.feed(self.answer("run_started"))

    def complete(self, cid: str, value: Any) -> list[EventRecord]:
        return self.feed(self.answer("step_completed", cid, serde.dumps(value)))

    def fail(self, cid: str, error: BaseException) -> list[EventRecord]:
        return self.feed(self.answer("step_failed", cid, serde.dumps(error)))

    def wake(self, cid: str) -> list[EventRecord]:
        return self.feed(self.answer("wait_completed", cid))

    def deliver(self, cid: str, payload: Any) -> list[EventRecord]:
        return self.feed(self.answer("hook_received", cid, serde.dumps(payload)))

    def close(self) -> None:
        self.instance.close()


def record(flow: Workflow[..., Any], args: tuple[Any, ...], run_id: str) -> RunRecord:
    return RunRecord(
        run_id=run_id,
        workflow_name=flow.name,
        deployment_id="d1",
        status="pending",
        input=serde.dumps([list(args), {}]),
        output=None,
        error=None,
        parent_run_id=None,
        rerun_of=None,
        created_at=T0,
        started_at=None,
        completed_at=None,
        last_seq=1,
    )


def replay(
    flow: Workflow[..., Any], log: list[EventRecord], *args: Any, run_id: str = "run_unit"
) -> RunInstance:
    """A fresh instance of ``flow`` fed ``log``, as after a restart or a cache miss."""
    instance = RunInstance(record(flow, args, run_id), flow)
    instance.replay(log)
    return instance


def kinds(events: list[EventRecord]) -> list[tuple[str, str | None]]:
    return [(e.type, e.correlation_id) for e in events]


def output(event: EventRecord) -> Any:
    assert event.type == "run_completed", event
    return serde.loads(event.payload or "null")


def failure(event: EventRecord) -> dict[str, Any]:
    assert event.type == "run_failed", event
    error = serde.loads(event.payload or "null")
    assert isinstance(error, dict)
    return error


def assert_replays_the_same(run: Driven) -> None:
    """Every activation, replayed from the log before it, returns what it returned live."""
    assert [e.seq for e in run.log] == list(range(1, len(run.log) + 1))
    for before, answers, live in run.activations:
        again = replay(run.flow, run.log[:before], *run.args, run_id=run.run_id)
        try:
            assert again.failure is None
            assert again.last_seq == before
            assert again.resume(answers) == live
        finally:
            again.close()
    whole = replay(run.flow, run.log, *run.args, run_id=run.run_id)
    try:
        assert whole.failure is None and whole.ended == run.instance.ended
        assert whole.waits == run.instance.waits and whole.last_seq == len(run.log)
        assert whole.resume([]) == []
    finally:
        whole.close()


# -- live runs, and the same path on replay ----------------------------------------------


def test_steps_are_requested_one_at_a_time_and_the_result_recorded() -> None:
    run = Driven(checkout, ("o-1",))
    first = run.start()
    assert kinds(first) == [("run_started", None), ("step_created", "0"), ("step_started", "0")]
    assert [e.seq for e in first] == [2, 3, 4]
    assert first[1].name == pick.name
    assert serde.loads(first[1].payload or "null") == [["o-1"], {}]
    assert run.instance.last_seq == 4 and not run.instance.ended
    second = run.complete("0", "picked o-1")
    assert kinds(second) == [("step_completed", "0"), ("step_created", "1"), ("step_started", "1")]
    assert second[1].name == pack.name
    end = run.complete("1", "packed o-1")
    assert kinds(end) == [("step_completed", "1"), ("run_completed", None)]
    assert output(end[-1]) == ["picked o-1", "packed o-1"]
    assert run.instance.ended and run.instance.failure is None
    assert end[-1].created_at == run.clock  # the time of the answer that ended it
    assert_replays_the_same(run)
    run.close()


def test_gather_requests_both_steps_at_once_and_takes_answers_in_any_order() -> None:
    run = Driven(both_at_once, ("o-2",))
    assert kinds(run.start())[1:] == [
        ("step_created", "0"),
        ("step_started", "0"),
        ("step_created", "1"),
        ("step_started", "1"),
    ]
    assert run.complete("1", "packed o-2") == run.log[-1:]  # nothing new: it awaits both
    end = run.complete("0", "picked o-2")
    assert output(end[-1]) == ["picked o-2", "packed o-2"]  # gather keeps argument order
    assert_replays_the_same(run)
    run.close()


@pytest.mark.parametrize("winner", ["step", "sleep"])
def test_a_race_of_a_step_and_a_sleep_takes_the_same_branch_on_replay(winner: str) -> None:
    run = Driven(step_or_timeout, ("o-3",))
    started = run.start()
    assert kinds(started)[1:] == [
        ("step_created", "0"),
        ("step_started", "0"),
        ("wait_created", "1"),
    ]
    assert started[3].attrs == {"resume_at": started[0].created_at + 30}
    assert run.instance.waits == {"1": started[0].created_at + 30}
    if winner == "step":
        end = run.complete("0", "picked o-3")
        assert output(end[-1]) == "picked o-3"
        assert run.instance.waits == {"1": started[0].created_at + 30}  # never woke
    else:
        end = run.wake("1")
        assert output(end[-1]) == "timed out"
        assert run.instance.waits == {}
    assert_replays_the_same(run)
    # The loser's late answer, once the run ended, changes nothing.
    late = run.wake("1") if winner == "step" else run.complete("0", "picked o-3")
    assert [e.type for e in late] == ["wait_completed" if winner == "step" else "step_completed"]
    run.close()


@pytest.mark.parametrize("winner", ["hook", "sleep"])
def test_a_race_of_a_hook_and_a_sleep_takes_the_same_branch_on_replay(winner: str) -> None:
    run = Driven(approval_or_timeout, ("o-4",))
    started = run.start()
    assert kinds(started)[1:] == [("hook_created", "0"), ("wait_created", "1")]
    assert started[1].attrs == {"token": "approve-o-4", "metadata": None, "webhook": False}
    if winner == "hook":
        end = run.deliver("0", {"by": "ann"})
        assert kinds(end) == [
            ("hook_received", "0"),
            ("hook_disposed", "0"),
            ("run_completed", None),
        ]
        assert output(end[-1]) == {"approved": {"by": "ann"}}
        assert end[1].attrs == {"reason": "run ended"}
    else:
        end = run.wake("1")
        assert kinds(end) == [
            ("wait_completed", "1"),
            ("hook_disposed", "0"),
            ("run_completed", None),
        ]
        assert output(end[-1]) == "timed out"
    assert_replays_the_same(run)
    run.close()


def test_a_hook_token_comes_from_the_log_on_replay() -> None:
    run = Driven(step_alongside_hook, ("o-5",))
    run.start()
    logged = [e for e in run.log if e.type == "hook_created"]
    assert [e.attrs["token"] for e in logged if e.attrs] == ["note-o-5"]
    run.deliver("1", "fragile")
    end = run.complete("0", "picked o-5")
    assert output(end[-1]) == ["fragile", "picked o-5"]
    assert_replays_the_same(run)
    run.close()


def test_sleeps_wait_until_their_end_and_replay_with_the_logged_deadline() -> None:
    run = Driven(naps, ())
    started = run.start()
    assert kinds(started)[1:] == [("wait_created", "0")]
    first_end = started[0].created_at + 10
    assert run.instance.waits == {"0": first_end}
    # A replay much later keeps the deadline the log holds, not one from the replay's time.
    later = replay(naps, run.log)
    assert later.waits == {"0": first_end} and not later.ended
    later.close()
    second = run.wake("0")
    assert kinds(second) == [("wait_completed", "0"), ("wait_created", "1")]
    assert second[1].attrs == {"resume_at": second[0].created_at + 120}
    assert run.instance.waits == {"1": second[0].created_at + 120}
    end = run.wake("1")
    assert output(end[-1]) == [end[0].created_at]  # now() inside: the wake-up's time
    assert run.instance.waits == {}
    assert_replays_the_same(run)
    run.close()


def test_now_random_and_uuid4_are_the_same_on_replay_and_seeded_by_the_run() -> None:
    run = Driven(values, ())
    started = run.start()
    end = run.complete("0", "picked x")
    before, after = output(end[-1])
    assert before[0] == started[0].created_at and after[0] == end[0].created_at
    assert 0 <= before[1] < 1 and before[1] != after[1]
    assert before[2] != after[2] and before[2][14] == "4"  # version-4 UUIDs
    assert_replays_the_same(run)
    other = Driven(values, (), run_id="run_other")
    other.start()
    other_before, _ = output(other.complete("0", "picked x")[-1])
    assert other_before[1:] != before[1:], "another run must draw other values"
    run.close()
    other.close()


def test_a_fork_draws_the_values_of_the_run_it_was_forked_from() -> None:
    run = Driven(values, ())
    run.start()
    expected = output(run.complete("0", "picked x")[-1])
    # A fork's log: its own run_created, naming the original's seed, then the history.
    created = dataclasses.replace(run.log[0], run_id="run_fork", attrs={"seed": run.run_id})
    history = [dataclasses.replace(e, run_id="run_fork") for e in run.log[1:-1]]
    fork = RunInstance(record(values, (), "run_fork"), values)
    fork.replay([created, *history])
    assert output(fork.resume([])[-1]) == expected
    run.close()
    fork.close()


def test_a_workflow_that_raises_fails_the_run_with_type_message_and_traceback() -> None:
    run = Driven(raises, ("o-6",))
    run.start()
    end = run.complete("0", "picked o-6")
    assert kinds(end) == [("step_completed", "0"), ("run_failed", None)]
    error = failure(end[-1])
    assert error["type"] == "builtins.ValueError" and error["message"] == "no stock for o-6"
    assert "in raises" in error["traceback"]
    assert run.instance.ended
    assert_replays_the_same(run)
    run.close()


def test_a_failed_step_raises_inside_the_workflow_where_it_can_be_caught() -> None:
    run = Driven(catches, ("o-7",))
    run.start()
    end = run.fail("0", FatalError("card declined"))
    assert output(end[-1]) == "caught card declined"
    assert_replays_the_same(run)
    run.close()


def test_arguments_that_cannot_be_read_fail_the_run_at_its_start() -> None:
    broken = RunRecord(**{**_fields(record(checkout, ("o",), "run_bad")), "input": "{not json"})
    instance = RunInstance(broken, checkout)
    instance.replay([EventRecord("run_bad", 1, "run_created", created_at=T0)])
    started = EventRecord("run_bad", 0, "run_started", created_at=T0 + 1)
    new = instance.resume([started])
    assert [e.type for e in new] == ["run_started", "run_failed"]
    assert instance.ended and instance.failure is not None
    instance.close()


def test_a_step_failure_that_is_not_an_exception_raises_as_a_runtime_error() -> None:
    run = Driven(catches, ("o-13",))
    run.start()
    # A step_failed payload written by other code: a plain message, not an exception.
    end = run.feed(run.answer("step_failed", "0", serde.dumps("card declined")))
    error = failure(end[-1])  # not a FatalError: catches does not catch it
    assert error["type"] == "builtins.RuntimeError" and error["message"] == "card declined"
    run.close()


def test_unreadable_answers_raise_inside_the_workflow() -> None:
    step_run = Driven(reads_its_step, ())
    step_run.start()
    assert output(step_run.feed(step_run.answer("step_completed", "0", "{oops"))[-1]) == (
        "JSONDecodeError"
    )
    hook_run = Driven(reads_its_hook, ())
    hook_run.start()
    end = hook_run.feed(hook_run.answer("hook_received", "0", "{oops"))
    assert output(end[-1]) == "JSONDecodeError"
    step_run.close()
    hook_run.close()


def test_a_workflow_whose_main_task_is_cancelled_fails_the_run() -> None:
    run = Driven(gives_up, ())
    run.start()
    error = failure(run.complete("0", "picked x")[-1])
    assert error["message"] == "the workflow's main task was cancelled"
    run.close()


def test_a_return_value_that_cannot_be_stored_fails_the_run_naming_it() -> None:
    run = Driven(returns_a_lock, ())
    run.start()
    error = failure(run.complete("0", "picked x")[-1])
    assert error["type"] == "tether.errors.SerializationError"
    assert (
        "Lock" in error["message"]
        and f"return value of {returns_a_lock.name}" in (error["message"])
    )
    run.close()


def _fields(run: RunRecord) -> dict[str, Any]:
    return {name: getattr(run, name) for name in RunRecord.__dataclass_fields__}


# -- divergence: every way a replay can disagree with the log ------------------------------


def diverged(flow: Workflow[..., Any], log: list[EventRecord], *args: Any) -> str:
    """Replay ``log`` with ``flow``: the run must fail with a NonDeterminismError; its message."""
    instance = replay(flow, log, *args)
    try:
        assert isinstance(instance.failure, NonDeterminismError), instance.failure
        end = instance.resume([])
        assert [e.type for e in end] == ["run_failed"]
        error = failure(end[-1])
        assert error["type"] == "tether.errors.NonDeterminismError"
        assert error["message"] == str(instance.failure)
        assert instance.ended
        return str(instance.failure)
    finally:
        instance.close()


def test_divergence_a_different_step_at_the_same_position() -> None:
    run = Driven(checkout, ("o-8",))
    run.start()
    run.complete("0", "picked o-8")  # the log: pick (event 3), then pack (event 6)
    message = diverged(checkout_pack_first, run.log, "o-8")
    assert message == (
        f"run run_unit diverged from its event log at request #1: the log holds step "
        f"{pick.name!r} (event 3), the code asked for step {pack.name!r}"
    )
    run.close()


def test_divergence_a_sleep_where_the_log_holds_a_step() -> None:
    run = Driven(checkout, ("o-9",))
    run.start()
    message = diverged(checkout_sleep_first, run.log, "o-9")
    assert "at request #1: the log holds step" in message
    assert f"{pick.name!r} (event 3), the code asked for a sleep" in message


def test_divergence_a_step_where_the_log_holds_a_hook() -> None:
    run = Driven(approval_or_timeout, ("o-14",))
    run.start()
    message = diverged(checkout, run.log, "o-14")
    assert message == (
        "run run_unit diverged from its event log at request #1: the log holds a hook "
        f"(event 3), the code asked for step {pick.name!r}"
    )
    run.close()


def test_divergence_the_code_finished_without_a_request_the_log_holds() -> None:
    run = Driven(checkout, ("o-10",))
    run.start()
    run.complete("0", "picked o-10")  # pack is request #2, event 6
    # The log holds pick's answer too: the changed code returns right after it.
    message = diverged(checkout_pick_only, run.log, "o-10")
    assert message == (
        f"run run_unit diverged from its event log at request #2: the log holds step "
        f"{pack.name!r} (event 6) but the code finished without asking for it"
    )
    run.close()


def test_divergence_the_log_answers_a_request_the_code_has_not_made() -> None:
    run = Driven(both_at_once, ("o-11",))
    run.start()  # pick is request #1, pack request #2
    answer = run.complete("1", "packed o-11")[0]  # pack answered first: event 7
    # The changed code awaits pick before it asks for pack: pack's answer comes too soon.
    message = diverged(one_after_the_other, run.log, "o-11")
    assert message == (
        f"run run_unit diverged from its event log at event {answer.seq}: the log answers "
        "request #2 (step_completed) which the code never made"
    )
    run.close()


def test_divergence_a_payload_for_a_hook_the_code_has_not_created() -> None:
    run = Driven(step_alongside_hook, ("o-12",))
    run.start()  # pick is request #1, the hook request #2
    payload = run.deliver("1", "fragile")[0]
    # The changed code awaits pick before it creates the hook: the payload comes too soon.
    message = diverged(step_then_hook, run.log, "o-12")
    assert message == (
        f"run run_unit diverged from its event log at event {payload.seq}: a payload "
        "arrived for hook request #2, which the code never made"
    )
    run.close()
