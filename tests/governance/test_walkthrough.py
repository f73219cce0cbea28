"""Runs the walk-through block of docs/governance.md exactly as written."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def walkthrough() -> str:
    doc = (REPO / "docs" / "governance.md").read_text()
    return re.search(r"```bash\n(# governance walk-through\n.*?)```", doc, re.S).group(1)


@pytest.mark.slow
def test_readme_walkthrough_runs_end_to_end(tmp_path):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": str(REPO), "GOVERNANCE_ACTOR": "walkthrough"}
    env.pop("GOVERNANCE_CONFIG", None)
    run = subprocess.run(["bash", "-euo", "pipefail", "-c", walkthrough()], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    transcript = run.stdout + run.stderr
    assert run.returncode == 0, transcript
    assert "alice / avatar-generation" in transcript and ": allowed (record urn:uuid:" in transcript
    assert (tmp_path / "alice-read.png").read_bytes() == (tmp_path / "alice.png").read_bytes()
    assert "PASS: 1 files, 0 failed" in transcript
    assert "alice.shredded" in run.stdout and "alice.key" not in run.stdout
    assert "refused: withdrawn" in transcript and "exit status 1: unreadable, as expected" in transcript
    assert not (tmp_path / "again.png").exists()
    assert re.search(r"audit log intact: \d+ entries", transcript)
    assert "audit log NOT intact: entry 1:" in transcript
    assert "exit status 1: tampering detected, as expected" in transcript


def test_documented_permission_table_is_the_enforced_one():
    from governance.roles import permission_table
    assert permission_table() in (REPO / "docs" / "governance.md").read_text()
