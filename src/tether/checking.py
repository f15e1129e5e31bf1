"""Where a check's replay runs: in this process, or on a live worker of the target.

A replay needs the target deployment's code. When this process holds it
(it imported that release's modules, as ``--code MODULE`` does), the runs
replay here. Otherwise a live worker of the target replays them on request
through the World (``tether.runtime.answering``), so a check or an upgrade
works from any machine that reaches the World.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Sequence
from typing import Any, Literal

from tether import manifest, registry
from tether.errors import (
    DeploymentConflictError,
    DeploymentNotFoundError,
    NoLiveWorkerError,
    WorkflowNotFoundError,
)
from tether.redaction import redact
from tether.runtime.answering import Checked, check_here, decode_answer, encode_request
from tether.runtime.check import DEFAULT_BUDGET, WATCHDOG_GRACE, RunCheck
from tether.worlds.base import World
from tether.worlds.manifests import conflicts
from tether.worlds.operations import CHECK_LEASE_SECONDS
from tether.worlds.records import CheckRequest, RunRecord

#: ``"here"``: this process must hold the code; ``"worker"``: ask a live worker;
#: ``"auto"``: here when this process holds the code, else a live worker.
Replay = Literal["auto", "here", "worker"]
REPLAYS = ("auto", "here", "worker")
#: Runs a request asks about: several requests let several workers share a large check,
#: and a request's replays (each bounded by the budget) end well within its hold.
BATCH = 25
#: Seconds a live worker has to take a request (it looks at least every 2 s), counted
#: from when the previous request was answered.
TAKEN_WITHIN = 30.0


class Checker:
    """Replays runs against one deployment's code, wherever that code is.

    ``deployment_id`` ``"local"`` is this process's code, registered or not.
    """

    def __init__(self, world: World, deployment_id: str, replay: Replay = "auto") -> None:
        if replay not in REPLAYS:
            raise ValueError(f"invalid replay {replay!r}: expected one of {', '.join(REPLAYS)}")
        self.world = world
        self.deployment_id = deployment_id
        self.replay = replay
        #: What the target defines; ``None``: this process's code ("local").
        self.defines: set[str] | None = None
        self._recorded: dict[str, Any] = {}
        if deployment_id != "local":
            record = world.get_deployment(deployment_id)
            if record is None:
                raise DeploymentNotFoundError(
                    f"deployment {deployment_id!r} is not registered in {redact(world.url)}:"
                    " no worker of it has started"
                )
            self._recorded = record.manifest
            self.defines = set(record.manifest.get("workflows", {}))

    def check(self, items: Sequence[tuple[RunRecord, int | None]]) -> list[Checked]:
        """Each run replayed (up to its request ``upto``, ``None``: its whole log), in order."""
        if not items:
            return []
        if self._here([run.workflow_name for run, _ in items]):
            return [self._check_here(run, upto) for run, upto in items]
        return self._ask_worker(items)

    def check_one(self, run: RunRecord, upto: int | None = None) -> Checked:
        """One run's check."""
        return self.check([(run, upto)])[0]

    # -- here -----------------------------------------------------------------

    def _here(self, names: Sequence[str]) -> bool:
        """Whether the replay runs here; raises what ``"here"`` lacks."""
        if self.defines is None:
            return True
        if self.replay == "worker":
            return False
        differ = conflicts(self._recorded, manifest.build_manifest())
        missing = sorted({n for n in names if n in self.defines and n not in registry.WORKFLOWS})
        if not differ and not missing:
            return True
        if self.replay == "auto":
            return False
        if differ:
            raise DeploymentConflictError(
                f"this process does not hold the code of deployment {self.deployment_id!r}:"
                f" it differs in {'; '.join(differ[:5])}. Import that release's modules"
                " (--code MODULE), or let a live worker of it replay the runs"
            )
        raise WorkflowNotFoundError(
            f"deployment {self.deployment_id!r} defines {missing[0]}, which this process has"
            " not imported: import its module to replay its runs here"
        )

    def _check_here(self, run: RunRecord, upto: int | None) -> Checked:
        if self.defines is not None and run.workflow_name not in self.defines:
            reason = f"deployment {self.deployment_id!r} does not define {run.workflow_name}"
            return Checked(RunCheck(run.run_id, "incompatible", None, reason), 0)
        return check_here(self.world, run, upto)

    # -- on a live worker -----------------------------------------------------

    def _ask_worker(self, items: Sequence[tuple[RunRecord, int | None]]) -> list[Checked]:
        live = [
            d
            for d in self.world.list_deployments(None, manifest.LIVE_WITHIN_SECONDS)
            if d.deployment_id == self.deployment_id and d.live_workers
        ]
        if not live:
            differ = conflicts(self._recorded, manifest.build_manifest())
            here = f" (this process's code differs in {'; '.join(differ[:3])})" if differ else ""
            raise NoLiveWorkerError(
                f"deployment {self.deployment_id!r} has no live worker to replay the runs"
                f" against its code: start one (TETHER_DEPLOYMENT_ID={self.deployment_id}"
                f" tether worker MODULE...), or replay here with its code (--code MODULE){here}"
            )
        asked: list[tuple[str, int]] = []
        now = self.world.clock.time()
        try:
            for i in range(0, len(items), BATCH):
                batch = items[i : i + BATCH]
                request = CheckRequest(
                    f"check_{uuid.uuid4().hex}",
                    self.deployment_id,
                    encode_request([(run.run_id, upto) for run, upto in batch]),
                    now,
                )
                self.world.ask_check(request)
                asked.append((request.request_id, len(batch)))
            found: list[Checked] = []
            for request_id, size in asked:
                found += decode_answer(self._answer(request_id, size))
            return found
        finally:
            for request_id, _ in asked:
                with contextlib.suppress(Exception):  # left behind, it is dropped in an hour
                    self.world.drop_check(request_id)

    def _answer(self, request_id: str, size: int) -> str:
        """Wait for a request's answer: taken within ``TAKEN_WITHIN`` s, answered in budget."""
        started = time.monotonic()
        with self.world.watch() as changed:
            while True:
                request = self.world.get_check(request_id)
                if request is not None and request.answer is not None:
                    return request.answer
                waited = time.monotonic() - started
                taken = request is not None and request.taken_by is not None
                # A taker that dies is replaced once its hold passes: wait that long too.
                replays = size * (DEFAULT_BUDGET + WATCHDOG_GRACE)
                limit = TAKEN_WITHIN + (CHECK_LEASE_SECONDS + replays if taken else 0.0)
                if waited > limit:
                    raise NoLiveWorkerError(
                        f"no live worker of deployment {self.deployment_id!r} answered the"
                        f" check within {waited:.0f} s"
                        + (f" (taken by {request.taken_by})" if taken and request else "")
                        + ": is it running and reaching this World? Or replay here with"
                        " its code (--code MODULE)"
                    )
                changed(0.5)
