"""The gates on the built-in demo, whose right answers are known: the real photos of the same person
('ideal') pass, the edited copies ('copy-paste') and other people ('impostor') fail where they should."""
from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from dataclasses import replace
from pathlib import Path

import pytest

from eval.report.gates import evaluate_gates
from eval.report.render import render_report
from eval.report.review import prepare_review
from eval.report.run import DEMO_STAND_IN

pytestmark = pytest.mark.slow  # builds and scores the demo (about 10 s the first time in a process)
REPO = Path(__file__).resolve().parents[2]


def gates_for(run, spec, system):
    return {gate.gate: gate for gate in evaluate_gates(spec, replace(run, candidate=system))}


def test_the_demo_candidate_is_ideal_and_passes_every_measurable_gate(demo_run, gate_spec):
    assert demo_run.candidate == "ideal"
    results = gates_for(demo_run, gate_spec, "ideal")
    assert {g.verdict for g in results.values()} <= {"pass", "unavailable"}
    for recognizer in demo_run.summary["recognizers"]:
        assert results[f"id_sim_{recognizer}"].verdict == "pass"
    assert results["copy_paste_rate"].verdict == "pass"
    assert results["governance_audit_log"].verdict == "pass"


def test_the_impostor_fails_the_identity_gate_with_value_threshold_and_ci(demo_run, gate_spec):
    gate = gates_for(demo_run, gate_spec, "impostor")["id_sim_sface"]
    stats = demo_run.summary["systems"]["impostor"]["metrics"]["id_sim_sface"]
    threshold = demo_run.summary["thresholds"]["sface"]
    assert gate.verdict == "fail"
    assert (gate.measured, gate.threshold, gate.ci) == (stats["mean"], threshold, (stats["ci_low"], stats["ci_high"]))
    assert f"measured {stats['mean']:.4g}" in gate.message
    assert f"threshold {threshold:.4g}" in gate.message
    assert f"95% CI [{stats['ci_low']:.4g}, {stats['ci_high']:.4g}]" in gate.message


def test_copies_of_the_reference_fail_the_copy_paste_and_pose_gates(demo_run, gate_spec):
    results = gates_for(demo_run, gate_spec, "copy-paste")
    assert results["id_sim_sface"].verdict == "pass"  # the identity is perfect: that is the trap
    assert results["copy_paste_rate"].verdict == "fail"
    assert results["pose_div_yaw"].verdict == "fail"


def test_demo_governance_refuses_generation_and_cannot_pass_provenance(demo_run, gate_spec):
    checks = demo_run.governance
    assert checks.configured and checks.audit.ok
    subjects = set(demo_run.scores["subject"])
    assert set(checks.consent) == subjects
    for subject in subjects:
        assert not checks.consent[subject]["avatar-generation"].allowed
        assert checks.consent[subject]["evaluation"].allowed
    assert {p.status for p in checks.provenance} == {"no-manifest"}  # real photos carry no C2PA manifest
    results = gates_for(demo_run, gate_spec, "ideal")
    for gate in ("governance_provenance", "governance_consent"):
        assert results[gate].verdict == "unavailable"
        assert DEMO_STAND_IN in results[gate].detail
    assert "REFUSED" in results["governance_consent"].detail


def run_gates(*args: str, junit: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", "benchmarks/test_gates.py", "-q",
                           f"--junitxml={junit}", *args], cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})


@pytest.mark.slow
def test_gating_the_impostor_fails_pytest_benchmarks_with_the_numbers_in_junit(tmp_path):
    junit = tmp_path / "gates.xml"
    result = run_gates("--system", "impostor", junit=junit)
    assert result.returncode == 1, result.stdout + result.stderr
    cases = {case.get("name"): case for case in ElementTree.parse(junit).getroot().iter("testcase")}
    failure = cases["test_gate[id_sim_sface]"].find("failure")
    assert failure is not None
    for part in ("ID-Sim (sface)", "FAIL", "measured", "95% CI", "threshold"):
        assert part in failure.get("message")
    skipped = cases["test_gate[governance_provenance]"].find("skipped")
    assert skipped is not None and "real photographs" in skipped.get("message")


def test_the_same_photos_as_an_ordinary_run_fail_provenance_and_consent(demo_run, gate_spec):
    """Only the demo itself is a stand-in: its scores folder read as a run, with the demo's
    governance workspace, is judged like any generator's output."""
    config = demo_run.scores_dir.parent.parent / "governance" / "governance.toml"
    review = prepare_review(demo_run.scores_dir, system="ideal", governance=config, progress=False)
    assert review.run.stand_in is None
    assert all(Path(path).is_file() for path in review.run.scores["image"].map(review.run.path_of))
    results = {gate.gate: gate for gate in review.gates()}
    assert results["governance_provenance"].verdict == "fail"
    assert "(no-manifest)" in results["governance_provenance"].detail
    assert results["governance_consent"].verdict == "fail"
    assert "purpose not granted" in results["governance_consent"].detail
    assert results["id_sim_sface"].verdict == "pass"
    html = render_report(review.run, gate_spec)  # references read back from parquet
    assert 'alt="reference macron_2014.jpg"' in html and 'class="missing"' not in html
