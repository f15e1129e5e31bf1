"""Replays asked through the World, answered by a live worker that holds the code.

``tether deployments check`` on a machine without the new release's code
writes a request (``World.ask_check``); a worker of that deployment takes
it, replays each run's log against the code it runs (``check_run``: no step
runs) and writes the answer. A request's body is JSON
``{"runs": [[run_id, upto], ...]}``: ``upto`` ``null`` checks the whole log,
a number checks what a fork from that request would keep. The answer is a
JSON list of ``{"run_id", "verdict", "fork_point", "reason", "read_at"}``,
``read_at`` the last sequence number of the log that was replayed, or
``{"error": ...}`` when the worker could not replay them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tether import registry
from tether.errors import TetherError
from tether.runtime.check import RunCheck, check_run, kept_history
from tether.worlds.base import World
from tether.worlds.records import COMMAND_EVENTS, CheckRequest, RunRecord

log = logging.getLogger("tether.worker")

#: Seconds between looks for requests when nothing woke the worker.
POLL_SECONDS = 5.0
#: The shortest time between two looks: commits of busy neighbours wake it often.
MIN_GAP_SECONDS = 0.2


@dataclass(frozen=True, slots=True)
class Checked:
    """A run's check and the last sequence number of the log it replayed."""

    check: RunCheck
    read_at: int


def encode_request(runs: Sequence[tuple[str, int | None]]) -> str:
    """The body of a request to check ``runs`` (each a run id and its ``upto``)."""
    return json.dumps({"runs": [[run_id, upto] for run_id, upto in runs]})


def decode_answer(answer: str) -> list[Checked]:
    """The answer to a request, one ``Checked`` per run asked about, in order.

    Raises ``TetherError`` with the worker's words when it could not replay them.
    """
    found = json.loads(answer)
    if isinstance(found, dict):
        raise TetherError(str(found.get("error", found)))
    return [
        Checked(
            RunCheck(item["run_id"], item["verdict"], item["fork_point"], item["reason"]),
            item["read_at"],
        )
        for item in found
    ]


def check_here(world: World, run: RunRecord, upto: int | None) -> Checked:
    """Replay ``run``'s log (up to request ``upto``) against this process's workflows."""
    events = world.list_events(run.run_id)
    read_at = events[-1].seq if events else 0
    definition = registry.WORKFLOWS.get(run.workflow_name)
    if upto is None:
        return Checked(check_run(run, events, definition), read_at)
    made = sum(1 for e in events if e.type in COMMAND_EVENTS)
    if not 0 <= upto <= made:
        reason = f"the run made {made} requests: a fork may keep 0 to {made}, not {upto}"
        return Checked(RunCheck(run.run_id, "incompatible", None, reason), read_at)
    kept = [events[0], *kept_history(events, upto)] if events else []
    return Checked(check_run(run, kept, definition), read_at)


def answer(world: World, request: CheckRequest) -> str:
    """The answer to ``request``, replayed against this process's code."""
    found: list[dict[str, Any]] = []
    for run_id, upto in json.loads(request.body)["runs"]:
        run = world.get_run(run_id)
        if run is None:
            checked = Checked(RunCheck(run_id, "incompatible", None, "the run is gone"), 0)
        else:
            checked = check_here(world, run, upto)
        c = checked.check
        found.append(
            {
                "run_id": c.run_id,
                "verdict": c.verdict,
                "fork_point": c.fork_point,
                "reason": c.reason,
                "read_at": checked.read_at,
            }
        )
    # ASCII JSON: a NUL or a lone surrogate in a reason travels escaped.
    return json.dumps(found)


class CheckAnswerer:
    """Answers the deployment's requests, beside the worker's claim loop, until stopped.

    ``io`` runs a blocking call off the event loop. A request's replays run
    there too: workflow code is replayed, never a step.
    """

    def __init__(
        self,
        world: World,
        deployment_id: str,
        worker_id: str,
        io: Callable[..., Awaitable[Any]],
    ) -> None:
        self.world = world
        self.deployment_id = deployment_id
        self.worker_id = worker_id
        self._io = io
        self._stopping = False
        self._wake: asyncio.Event | None = None

    def stop(self) -> None:
        """Stop after the request under way, if any (call it on the worker's loop)."""
        self._stopping = True
        if self._wake is not None:
            self._wake.set()

    async def run(self) -> None:
        """Look for requests and answer them until ``stop``."""
        loop = asyncio.get_running_loop()
        wake = self._wake = asyncio.Event()

        def notify() -> None:
            if not wake.is_set():  # already woken: no need to poke the loop again
                loop.call_soon_threadsafe(wake.set)

        # The worker's own commits never ask for a check: they do not wake it.
        remove = self.world.add_listener(
            notify, skip_own_loop=True, work_only=True, deployment_id=self.deployment_id
        )
        try:
            while not self._stopping:
                looked = loop.time()
                if await self._answer_one():
                    continue  # there may be more
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(POLL_SECONDS):
                        await wake.wait()
                wake.clear()
                gap = looked + MIN_GAP_SECONDS - loop.time()
                if gap > 0 and not self._stopping:
                    await asyncio.sleep(gap)
        finally:
            remove()

    async def _answer_one(self) -> bool:
        """Take one request and answer it; whether there was one."""
        try:
            request = await self._io(self.world.take_check, self.deployment_id, self.worker_id)
            if request is None:
                return False
            try:
                text = await self._io(answer, self.world, request)
            except Exception as exc:  # say so, rather than leave the asker waiting
                log.exception("replaying a check of deployment %s failed", self.deployment_id)
                text = json.dumps(
                    {
                        "error": f"worker {self.worker_id} could not replay the runs:"
                        f" {type(exc).__name__}: {exc}"
                    }
                )
            await self._io(self.world.answer_check, request.request_id, text)
            return True
        except Exception:
            if not self._stopping:
                log.exception("answering a check for deployment %s failed", self.deployment_id)
            return False
