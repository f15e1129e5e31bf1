"""Replay tests: a run's history exported by the CLI, replayed against the code in a test.

``tether inspect events RUN --export FILE`` writes the history of a real run
(here, of a real worker process of ``tests/apps/replay_app.py``);
``tether.testing.replay`` passes on the code that made it and fails, naming
the position, on code that calls its two steps the other way round.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import tether
from tests.apps.replay_app import charge, fulfil, reserve
from tests.cli.helpers import tether_exe
from tests.integration.processes import WorkerProcess, wait_for
from tether import testing, workflow
from tether.errors import InvalidValueError, NonDeterminismError

pytestmark = pytest.mark.both_worlds

APP = "tests.apps.replay_app"


@workflow
async def fulfil_charging_first(order: str, nap: float) -> list[str]:
    """The app's two steps the other way round: its runs in flight would break."""
    done = [await charge(order), await reserve(order)]
    await tether.sleep(nap)
    return done


def test_an_exported_history_replays_on_its_code_and_not_on_reordered_code(
    world_url: str, tmp_path: Path
) -> None:
    v1 = WorkerProcess(world_url, [APP], tmp_path / "v1.log", env={"TETHER_DEPLOYMENT_ID": "v1"})
    try:
        run = tether.start(fulfil, ["h-1", 3600], deployment_id="v1")
        wait_for(lambda: bool(run._world.list_waits(run.run_id)), 20, "the run to sleep")
    finally:
        v1.stop()
    exported = tmp_path / "order-h-1.json"
    done = tether_exe(
        "inspect", "events", run.run_id[:14], "--export", str(exported), url=world_url
    )
    assert done.code == 0, done
    assert f"exported the {len(run.events())} events of {run.run_id}" in done.err
    document = json.loads(exported.read_text())
    assert (document["format"], document["version"]) == ("tether-history", 1)

    check = testing.replay(exported, fulfil)
    assert (check.verdict, check.fork_point) == ("replays", 3)
    with pytest.raises(NonDeterminismError) as caught:
        testing.replay(exported, fulfil_charging_first)
    message = str(caught.value)
    assert "request #1" in message and f"the log holds step 'step//{APP}//reserve'" in message
    assert f"the code asked for step 'step//{APP}//charge'" in message
    # The API writes the same document; a file of another kind or version is named.
    assert testing.export_history(run.run_id)["events"] == document["events"]
    document["version"] = 99
    with pytest.raises(InvalidValueError, match="version 99; this tether reads versions 1"):
        testing.replay(document, fulfil)
