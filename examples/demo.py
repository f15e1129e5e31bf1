"""``make demo``: run the order workflow on the embedded World, printing each step as it happens."""

from __future__ import annotations

import time
from datetime import datetime

import tether
from examples.orders import fulfill_order
from tether import serde
from tether.worlds.records import EventRecord


def describe(event: EventRecord, steps: dict[str, str]) -> str | None:
    """One line for the events a person cares about; ``None`` for the rest."""
    attrs = event.attrs or {}
    if event.type == "step_created":
        steps[event.correlation_id or ""] = (event.name or "").rsplit("//", 1)[-1]
        return None
    step = steps.get(event.correlation_id or "", "")
    if event.type == "run_started":
        return "run started"
    if event.type == "step_started":
        return f"step {step} started (attempt {attrs.get('attempt', 1)})"
    if event.type == "step_completed":
        return f"step {step} completed -> {serde.loads(event.payload or 'null')}"
    if event.type == "step_retrying":
        return f"step {step} failed, retrying"
    if event.type == "wait_created":
        until = datetime.fromtimestamp(attrs["resume_at"]).strftime("%H:%M:%S.%f")[:-3]
        return f"sleeping until {until}"
    if event.type == "wait_completed":
        return "woke up"
    if event.type in ("run_completed", "run_failed", "run_cancelled"):
        return event.type.replace("_", " ")
    return None


def main() -> None:
    """Start a worker in this process, run one order, follow its event log live."""
    url = tether.config.world_url()
    print(f"tether demo: order fulfilment on the embedded World ({url})")
    with tether.Worker():
        run = tether.start(fulfill_order, ["o-1001", 4599, "2s"])
        print(f"started {run.run_id}\n  workflow   {run.workflow_name}")
        print(f"  deployment {run.deployment_id}\n")
        began, seen = time.monotonic(), 0
        steps: dict[str, str] = {}
        while True:
            events = run.events()
            for event in events[seen:]:
                line = describe(event, steps)
                if line:
                    print(f"  +{time.monotonic() - began:5.2f}s  {line}")
            seen = len(events)
            if run.status() in ("completed", "failed", "cancelled") and seen == len(run.events()):
                break
            time.sleep(0.02)
        print(f"\nresult: {run.result(timeout=5)}")


if __name__ == "__main__":
    main()
