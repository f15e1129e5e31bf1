"""The records a World stores and returns: runs, events, steps, waits, hooks, streams, tasks.

Plain frozen dataclasses with serialized payloads as text: the vocabulary
between the Worlds and everything above them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

RunStatus = Literal["pending", "running", "completed", "failed", "cancelled"]
RUN_STATUSES: tuple[str, ...] = ("pending", "running", "completed", "failed", "cancelled")
TERMINAL_STATUSES = frozenset({"completed", "failed", "cancelled"})
#: Statuses of the steps, sleeps (waits) and hooks views.
STEP_STATUSES: tuple[str, ...] = (
    "pending",
    "running",
    "retrying",
    "completed",
    "failed",
    "cancelled",
)
WAIT_STATUSES: tuple[str, ...] = ("waiting", "completed", "cancelled")
HOOK_STATUSES: tuple[str, ...] = ("active", "disposed", "conflict")

EVENT_TYPES: tuple[str, ...] = (
    "run_created",
    "run_started",
    "run_completed",
    "run_failed",
    "run_cancelled",
    "step_created",
    "step_started",
    "step_completed",
    "step_failed",
    "step_retrying",
    "wait_created",
    "wait_completed",
    "hook_created",
    "hook_received",
    "hook_disposed",
)

#: Events written only by a workflow activation: the code's own requests.
COMMAND_EVENTS = frozenset({"step_created", "wait_created", "hook_created"})


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One run as the ``runs`` view holds it. Payloads are serialized text."""

    run_id: str
    workflow_name: str
    deployment_id: str
    status: str
    input: str
    output: str | None
    error: str | None
    parent_run_id: str | None
    rerun_of: str | None
    created_at: float
    started_at: float | None
    completed_at: float | None
    last_seq: int


@dataclass(frozen=True, slots=True)
class EventRecord:
    """One entry of a run's event log; ``seq`` is dense from 1 within the run."""

    run_id: str
    seq: int
    type: str
    correlation_id: str | None = None
    name: str | None = None
    payload: str | None = None
    attrs: dict[str, Any] | None = None
    created_at: float = 0.0


@dataclass(frozen=True, slots=True)
class StepRecord:
    """One step of a run as the ``steps`` view holds it."""

    run_id: str
    step_id: str
    step_name: str
    status: str
    attempt: int
    input: str
    output: str | None
    error: str | None
    created_at: float
    started_at: float | None
    completed_at: float | None
    retry_at: float | None


@dataclass(frozen=True, slots=True)
class WaitRecord:
    """One durable sleep of a run."""

    run_id: str
    wait_id: str
    status: str
    resume_at: float
    created_at: float
    completed_at: float | None


@dataclass(frozen=True, slots=True)
class Task:
    """A claimed queue entry: a workflow activation or one attempt of a step."""

    task_id: int
    kind: Literal["workflow", "step"]
    run_id: str
    deployment_id: str
    step_id: str = ""
    step_name: str = ""
    input: str = ""
    attempt: int = 0
    #: When the task fell or falls due (epoch seconds): later than now for a workflow
    #: task claimed ahead of its time (``claim_due_async``'s ``ahead``).
    due_at: float = 0.0
    #: A workflow task's run and its whole log, read by the claim when the log is
    #: short (a run just started): its activation then reads neither.
    #: (A convenience of one World, so not part of a task's value: not compared or shown.)
    run: RunRecord | None = field(default=None, compare=False, repr=False)
    events: tuple[EventRecord, ...] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class NewRun:
    """What ``create_run`` needs to start a run."""

    run_id: str
    workflow_name: str
    deployment_id: str
    input: str
    parent_run_id: str | None = None
    rerun_of: str | None = None
    #: Creation time; ``None`` means when the write happens.
    created_at: float | None = None
    #: The caller named the run: if a run with that id exists, ``create_run``
    #: returns it unchanged instead of failing (an idempotent start).
    if_absent: bool = False
    #: A fork: the run whose history it starts with, and how many of its requests.
    forked_from: str | None = None
    fork_point: int | None = None
    #: What seeds ``random()``/``uuid4()`` (a fork keeps its original's); ``None``: the id.
    seed: str | None = None
    #: What a fork keeps of its original was made before this time (``None``: all of
    #: it): the chunks its kept steps wrote to the streams, the children they started.
    kept_until: float | None = None


@dataclass(slots=True)
class Activation:
    """The events one workflow activation appends, committed all or nothing.

    ``expected_seq`` is the run's last sequence number the activation was
    computed from; if the log moved on meanwhile the commit is refused and
    the caller replays. New steps are leased to ``worker_id`` so that it runs
    them at once; the claim is recorded like any other (``step_started``).
    """

    run_id: str
    expected_seq: int
    events: list[EventRecord]
    worker_id: str
    lease_seconds: float


@dataclass(frozen=True, slots=True)
class StepOutcome:
    """The end of one step attempt: completed, failed, or retrying at ``retry_at``."""

    run_id: str
    step_id: str
    worker_id: str
    status: Literal["completed", "failed", "retrying"]
    payload: str
    attempt: int
    retry_at: float | None = None


@dataclass(frozen=True, slots=True)
class RunFilter:
    """Filters for listing runs; ``None`` means any."""

    status: str | None = None
    workflow_name: str | None = None
    deployment_id: str | None = None
    parent_run_id: str | None = None
    rerun_of: str | None = None
    #: Created at or after / before these times (seconds since the epoch).
    created_after: float | None = None
    created_before: float | None = None
    limit: int = 100
    #: Opaque position from a previous page (``created_at`` and ``run_id`` of its last row).
    cursor: str | None = None
    descending: bool = True


@dataclass(frozen=True, slots=True)
class HookRecord:
    """A hook of a run: its token, whether it is a webhook, and whether it is still active."""

    run_id: str
    hook_id: str
    token: str
    status: str  # "active", "disposed" or "conflict"
    webhook: bool
    metadata: Any
    created_at: float
    disposed_at: float | None


@dataclass(frozen=True, slots=True)
class StreamRecord:
    """A stream: how many chunks it holds and whether its writer closed it."""

    stream_id: str
    run_id: str
    namespace: str
    next_index: int
    closed: bool
    created_at: float
    closed_at: float | None


@dataclass(frozen=True, slots=True)
class Chunk:
    """One chunk of a stream; ``data`` is serialized text."""

    index: int
    data: str
    created_at: float


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """A worker process as it registers itself."""

    worker_id: str
    deployment_id: str
    environment: str
    hostname: str
    pid: int


@dataclass(frozen=True, slots=True)
class DeploymentRecord:
    """A registered deployment: its manifest (every workflow and step) and first sight."""

    deployment_id: str
    environment: str
    manifest: dict[str, Any]
    created_at: float


@dataclass(frozen=True, slots=True)
class DeploymentStatus:
    """A deployment as an operator sees it: work in flight and who serves it."""

    deployment_id: str
    environment: str
    created_at: float
    in_flight: int
    live_workers: int
    last_heartbeat_at: float | None

    @property
    def stranded(self) -> bool:
        """In-flight runs and no live worker: those runs wait until one starts."""
        return self.in_flight > 0 and self.live_workers == 0


@dataclass(frozen=True, slots=True)
class CheckRequest:
    """A replay asked of a deployment's live workers, and its answer once one gave it.

    ``body`` and ``answer`` are JSON text whose shape the asker and the
    answerer agree on (``tether.checking``); the World only carries them.
    """

    request_id: str
    deployment_id: str
    body: str
    created_at: float
    taken_by: str | None = None
    answer: str | None = None


@dataclass(frozen=True, slots=True)
class CancelResult:
    """Which runs a cancel ended (runs already finished are left alone)."""

    cancelled: list[str] = field(default_factory=list)
