"""The README's first example runs as written, in a fresh process and folder."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.integration.processes import REPO


def test_the_first_example_runs_as_written(tmp_path: Path) -> None:
    readme = (REPO / "README.md").read_text()
    first = re.findall(r"```python\n(.*?)```", readme, flags=re.S)[0]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
    env["PYTHONPATH"] = str(REPO / "src")
    done = subprocess.run(
        [sys.executable, "-c", first],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert ast.literal_eval(done.stdout.strip()) == {"order_id": "o-1", "charged": 4599}
    assert (tmp_path / ".tether" / "tether.db").exists()  # the embedded World it named
