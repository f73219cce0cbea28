"""Runs the walk-through blocks of docs/governance.md exactly as written."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def run_walkthrough(name: str, folder: Path, timeout: int) -> subprocess.CompletedProcess:
    """The docs block that starts with the comment ``# <name>``, run by bash in ``folder``."""
    doc = (REPO / "docs" / "governance.md").read_text()
    script = re.search(rf"```bash\n(# {name}\n.*?)```", doc, re.S).group(1)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": str(REPO), "GOVERNANCE_ACTOR": "walkthrough"}
    env.pop("GOVERNANCE_CONFIG", None)
    return subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_readme_walkthrough_runs_end_to_end(tmp_path):
    run = run_walkthrough("governance walk-through", tmp_path, 120)
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


@pytest.mark.slow
def test_release_walkthrough_runs_end_to_end(tmp_path):
    run = run_walkthrough("release walk-through", tmp_path, 300)
    transcript = run.stdout + run.stderr
    assert run.returncode == 0, transcript
    assert "released alice_0000.png" in transcript and "released alice_0001.png" in transcript
    assert "left behind images/alice_0002.png: rejected by anna at " in transcript
    assert ": hands look wrong (audit entry " in transcript
    assert "2 released, 1 left behind" in transcript and "exit status 1: one image left behind" in transcript
    assert "PASS: 3 files, 0 failed" in transcript  # release.json + the two images
    assert re.search(r"resaved.jpg: no-manifest, watermark → release urn:uuid:\S+ item 1 \(alice_0000.png; "
                     r"release audit entry \d+; original \S+/out/images/alice_0000.png, audit entry \d+\)", transcript)
    assert "alice_0002.png" in transcript and "not listed in release.json" in transcript
    assert "exit status 1: release folder changed, as expected" in transcript


def test_documented_permission_table_is_the_enforced_one():
    from governance.roles import permission_table
    assert permission_table() in (REPO / "docs" / "governance.md").read_text()
