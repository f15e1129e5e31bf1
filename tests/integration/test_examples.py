"""The examples in ``examples/`` run as documented."""

from __future__ import annotations

import itertools

from examples.continuation import daily_digest, process_backlog
from examples.orders import fulfill_order

import tether


def _chain(first: tether.Run) -> list[tether.Run]:
    chain = [first]
    while "continued_as" in (result := chain[-1].result(timeout=10)):
        chain.append(tether.get_run(result["continued_as"]))
    return chain


def test_order_example_completes(worker: tether.Worker) -> None:
    result = tether.start(fulfill_order, ["o-7", 1000, "10ms"]).result(timeout=10)
    assert result["ok"] is True and result["tracking"] == "TRK-O-7"


def test_backlog_is_worked_through_by_a_chain_of_bounded_runs(worker: tether.Worker) -> None:
    chain = _chain(tether.start(process_backlog, [0, 10, 95]))
    assert len(chain) == 4  # 3 pages of 10 per run
    assert chain[-1].result(timeout=10) == {"done": 95}
    for parent, child in itertools.pairwise(chain):
        assert child.parent_run_id == parent.run_id


def test_daily_digest_continues_itself(worker: tether.Worker) -> None:
    state = {"user_id": "ada", "every": "10ms", "remaining": 2}
    chain = _chain(tether.start(daily_digest, [state]))
    assert len(chain) == 3
    assert chain[-1].result(timeout=10)["done"] is True
    for run, continuation in itertools.pairwise(chain):
        assert [child.run_id for child in run.children()] == [continuation.run_id]
