"""Without TETHER_DEPLOYMENT_ID a process's deployment is a fingerprint of its code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.processes import REPO
from tether.deployments import current_deployment_id
from tether.worlds.manifests import conflicts

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


def manifest_of(module: str, hash_seed: str) -> object:
    """The manifest a fresh process importing ``module`` builds, under a string hash seed."""
    env = {k: v for k, v in os.environ.items() if k != "TETHER_DEPLOYMENT_ID"}
    env.update(PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "src")]), PYTHONHASHSEED=hash_seed)
    script = (
        f"import json, {module}, tether.deployments as d;"
        " print(json.dumps([d.current_deployment_id(), d.build_manifest()]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout)


def test_the_same_code_has_one_manifest_in_every_process() -> None:
    # A set literal's order follows the hash seed, which differs in every process: the
    # fingerprint must not, or a second worker of the same code would be refused.
    manifests = [manifest_of("tests.apps.sets", seed) for seed in ("1", "2", "3")]
    assert manifests[0] == manifests[1] == manifests[2]


def test_code_compiled_by_another_python_is_not_a_conflict() -> None:
    entry = {"fingerprint": "a", "params": [], "returns": "", "python": "3.11"}
    other_python = {**entry, "fingerprint": "b", "python": "3.12"}
    same_python = {**entry, "fingerprint": "b"}
    registered = {"steps": {"step//m//s": entry}}
    assert conflicts(registered, {"steps": {"step//m//s": other_python}}) == []
    assert conflicts(registered, {"steps": {"step//m//s": same_python}}) == ["step//m//s (code)"]
    changed_params = {**other_python, "params": [{"name": "x"}]}
    assert conflicts(registered, {"steps": {"step//m//s": changed_params}}) == [
        "step//m//s (parameters)"
    ]
