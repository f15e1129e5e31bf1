"""Without TETHER_DEPLOYMENT_ID a process's deployment is a fingerprint of its code."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.processes import REPO
from tether.deployments import current_deployment_id

V1, V2 = REPO / "tests" / "apps" / "v1", REPO / "tests" / "apps" / "v2"


def deployment_of(code: Path) -> str:
    """The deployment id a fresh process serving the ``shop`` module in ``code`` gets."""
    env = {k: v for k, v in os.environ.items() if k != "TETHER_DEPLOYMENT_ID"}
    env["PYTHONPATH"] = os.pathsep.join([str(code), str(REPO), str(REPO / "src")])
    script = "import shop, tether.deployments as d; print(d.current_deployment_id())"
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def test_same_code_same_deployment_changed_code_new_deployment() -> None:
    first, again, changed = deployment_of(V1), deployment_of(V1), deployment_of(V2)
    assert first.startswith("dep-") and len(first) == len("dep-") + 12
    assert first == again, "the same code must be the same deployment in every process"
    assert changed != first, "changed code must be a new deployment"


def test_explicit_deployment_id_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TETHER_DEPLOYMENT_ID", "release-42")
    assert current_deployment_id() == "release-42"
