"""Runs the release walk-through block of docs/governance.md exactly as written."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def walkthrough() -> str:
    doc = (REPO / "docs" / "governance.md").read_text()
    return re.search(r"```bash\n(# release walk-through\n.*?)```", doc, re.S).group(1)


@pytest.mark.slow
def test_release_walkthrough_runs_end_to_end(tmp_path):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": str(REPO), "GOVERNANCE_ACTOR": "walkthrough"}
    env.pop("GOVERNANCE_CONFIG", None)
    run = subprocess.run(["bash", "-euo", "pipefail", "-c", walkthrough()], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
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
