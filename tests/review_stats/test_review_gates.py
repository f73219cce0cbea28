"""The [review] gates on the demo run's real scores and images, judged with panels of reviewers the
tests chose: agreement, MOS likeness, A/B vs the baseline's system, a standing approval for every image."""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from eval.report.comparison import Comparison
from eval.report.gates import GatesFileError, evaluate_gates, load_gate_spec
from eval.report.human_review import HumanReview
from eval.review.export import empty_frames, write_export
from eval.review.stats import run_statistics

REPO = Path(__file__).resolve().parents[2]
REVIEW_GATES = ("review_alpha_likeness", "review_mos_likeness", "review_ab_baseline", "review_approval")


def judged(run, frames, system="ideal", baseline=None, spec=None):
    statistics = run_statistics(frames, run.scores, run.summary, n_resamples=100)
    human = HumanReview("review export chosen by the test", statistics)
    comparison = Comparison(f"demo:{system}", f"demo:{baseline}", {}, baseline) if baseline else None
    results = evaluate_gates(spec or load_gate_spec(), replace(run, candidate=system, human_review=human), comparison)
    return {gate.gate: gate for gate in results if gate.gate.startswith("review_")}


def test_without_reviews_every_review_gate_is_unavailable_never_passing(demo_run):
    results = {g.gate: g for g in evaluate_gates(load_gate_spec(), demo_run)}
    for gate in REVIEW_GATES:
        assert results[gate].verdict == "unavailable"
        assert "no reviews of this run" in results[gate].message


def test_an_empty_export_is_no_reviews(demo_run):
    results = judged(demo_run, empty_frames())
    assert {gate.verdict for gate in results.values()} == {"unavailable"}
    assert "no reviews of this run in the review export chosen by the test" in results["review_approval"].detail


def test_the_demo_panel_passes_agreement_and_mos_and_fails_the_rejected_image(demo_run, demo_frames):
    results = judged(demo_run, demo_frames)
    assert results["review_alpha_likeness"].verdict == "pass"
    mos = results["review_mos_likeness"]
    assert mos.verdict == "pass" and mos.measured == pytest.approx(14 / 3) and mos.n == 15
    approval = results["review_approval"]
    assert approval.verdict == "fail" and approval.measured == pytest.approx(4 / 5)
    assert "obama_senate.jpg: rejected by approver (audit entry 5): hands look wrong" in approval.message
    assert results["review_ab_baseline"].verdict == "unavailable"


def test_a_later_approval_lifts_the_rejection(demo_run, demo_frames, make):
    rejected = demo_frames["decisions"].iloc[-1].to_dict()
    again = make.decisions([{**rejected, "decision_id": 99, "decision": "approve", "reason": "fixed", "audit_seq": 9}])
    frames = {**demo_frames, "decisions": make.decisions(demo_frames["decisions"].to_dict("records") + again.to_dict("records"))}
    assert judged(demo_run, frames)["review_approval"].verdict == "pass"


def test_an_image_changed_after_its_approval_is_not_approved(demo_run, demo_frames):
    decisions = demo_frames["decisions"].copy()
    decisions.loc[0, "image_sha256"] = "0" * 64
    gate = judged(demo_run, {**demo_frames, "decisions": decisions})["review_approval"]
    assert gate.verdict == "fail" and "but the image changed since" in gate.message


def test_an_approval_not_yet_in_the_audit_log_does_not_count(demo_run, demo_frames):
    decisions = demo_frames["decisions"].copy()
    decisions["audit_seq"] = decisions["audit_seq"].astype("Int64")
    decisions.loc[1, "audit_seq"] = pd.NA
    gate = judged(demo_run, {**demo_frames, "decisions": decisions})["review_approval"]
    assert gate.verdict == "fail" and "macron_2025.jpg: approved by approver, but not yet in the audit log" in gate.message


def test_an_undecided_image_is_not_approved(demo_run, demo_frames):
    gate = judged(demo_run, {**demo_frames, "decisions": demo_frames["decisions"].iloc[1:]})["review_approval"]
    assert gate.verdict == "fail" and "ardern_2022.jpg: not decided" in gate.message


def test_impostors_fail_the_mos_gate(demo_run, demo_frames):
    gate = judged(demo_run, demo_frames, system="impostor")["review_mos_likeness"]
    assert gate.verdict == "fail" and gate.measured == pytest.approx(4 / 3) and gate.threshold == 3.5


def test_unreliable_reviewers_fail_agreement_and_their_mos_does_not_count(demo_run, demo_frames):
    ratings = demo_frames["ratings"].copy()
    bob = ratings["reviewer"] == "bob"
    ratings.loc[bob, "likeness"] = 6 - ratings.loc[bob, "likeness"]  # bob answers the scale upside down
    results = judged(demo_run, {**demo_frames, "ratings": ratings})
    assert results["review_alpha_likeness"].verdict == "fail"
    mos = results["review_mos_likeness"]
    assert mos.verdict == "unavailable" and "MOS not reliable" in mos.detail and mos.measured is not None


def test_ab_against_the_baseline_system(demo_run, demo_frames):
    better = judged(demo_run, demo_frames, system="ideal", baseline="impostor")["review_ab_baseline"]
    assert better.verdict == "pass" and better.measured == 1.0
    worse = judged(demo_run, demo_frames, system="impostor", baseline="ideal")["review_ab_baseline"]
    assert worse.verdict == "fail" and "p = 0.00195" in worse.detail and worse.measured == 0.0
    same = judged(demo_run, demo_frames, system="ideal", baseline="ideal")["review_ab_baseline"]
    assert same.verdict == "unavailable" and "--baseline-system" in same.detail
    votes = demo_frames["votes"]
    no_pair = votes[~votes["system_left"].isin(["ideal"]) & ~votes["system_right"].isin(["ideal"])]
    gate = judged(demo_run, {**demo_frames, "votes": no_pair}, system="ideal", baseline="impostor")["review_ab_baseline"]
    assert gate.verdict == "unavailable" and "no A/B vote between ideal and impostor" in gate.detail


def test_the_review_table_of_the_gates_file_is_checked(tmp_path):
    spec = load_gate_spec()
    assert (spec.review.min_mos_likeness, spec.review.min_alpha, spec.review.ab_significance) == (3.5, 0.667, 0.05)
    text = (REPO / "benchmarks" / "gates.toml").read_text().replace("min_alpha = 0.667", "min_alpha = 0.667\nmin_mos = 3")
    (tmp_path / "gates.toml").write_text(text)
    with pytest.raises(GatesFileError, match="min_mos"):
        load_gate_spec(tmp_path / "gates.toml")


@pytest.mark.slow
def test_pytest_benchmarks_fails_the_approval_gate_and_says_why(tmp_path, demo_run, demo_frames):
    write_export(demo_frames, tmp_path / "reviews")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    # the demo's scores folder, read as it is (no scoring in the subprocess)
    done = subprocess.run([sys.executable, "-m", "pytest", "benchmarks/test_gates.py", "-q", "-rfs",
                           "--run", str(demo_run.scores_dir), "--reviews", str(tmp_path / "reviews"),
                           "-p", "no:cacheprovider"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "FAILED benchmarks/test_gates.py::test_gate[review_approval]" in done.stdout
    assert "obama_senate.jpg: rejected by approver (audit entry 5): hands look wrong" in done.stdout
    assert "1 failed" in done.stdout
