"""eval.report.gates: verdicts from a summary, never a pass for what could not be measured."""
from __future__ import annotations

import copy

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from eval.report.comparison import deltas_from_table
from eval.report.gates import (
    DEFAULT_GATES_FILE, GateSpec, GatesFileError, bound_gates, evaluate_gates, governance_gates,
    identity_gates, load_gate_spec, regression_gates,
)
from eval.report.governance_checks import AuditView, ConsentView, GovernanceChecks, ProvenanceView, not_configured


def summary_with(metrics: dict, unavailable: dict | None = None, **extra) -> dict:
    return {"recognizers": ["sface"], "thresholds": {"sface": 0.36}, "trained_with": {},
            "systems": {"cand": {"n_images": 10, "metrics": metrics, "unavailable": unavailable or {}}}, **extra}


def stats(mean, low=None, high=None, n=10):
    return {"mean": mean, "ci_low": mean if low is None else low, "ci_high": mean if high is None else high, "n": n}


def test_the_versioned_gates_file_parses_and_names_every_required_gate():
    spec = load_gate_spec(DEFAULT_GATES_FILE)
    assert spec.version >= 1
    assert spec.id_sim.default == "calibration"
    assert {"expr_div", "pose_div_yaw", "pose_div_pitch", "face_detect_rate", "clip_t"} <= set(spec.min)
    assert "copy_paste_rate" in spec.max
    assert spec.regression is not None and spec.regression.metrics
    assert spec.governance.provenance and spec.governance.audit_log
    assert spec.governance.consent_purpose == "avatar-generation"


@pytest.mark.parametrize("text, expected", [
    ("version = 1\n[min]\nexpr_div = 'high'\n", "not a valid gates file"),
    ("version = 1\nunknown_table = 3\n", "unknown_table"),
    ("version = [\n", "not a valid gates file"),
])
def test_a_bad_gates_file_is_refused_naming_the_file(tmp_path, text, expected):
    path = tmp_path / "gates.toml"
    path.write_text(text)
    with pytest.raises(GatesFileError, match=expected) as raised:
        load_gate_spec(path)
    assert str(path) in str(raised.value)


def test_a_missing_gates_file_is_refused_naming_the_file(tmp_path):
    with pytest.raises(GatesFileError, match="not found"):
        load_gate_spec(tmp_path / "nope.toml")


finite = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False)


@given(mean=finite, spread=st.floats(min_value=0, max_value=10), threshold=finite, judge=st.sampled_from(["mean", "ci"]),
       minimum=st.booleans())
def test_a_bound_gate_passes_exactly_when_its_judged_value_clears_the_threshold(mean, spread, threshold, judge, minimum):
    spec = GateSpec(version=1, judge=judge, min={"expr_div": threshold} if minimum else {},
                    max={} if minimum else {"expr_div": threshold})
    [result] = bound_gates(spec, summary_with({"expr_div": stats(mean, mean - spread, mean + spread)}), "cand")
    judged = mean if judge == "mean" else (mean - spread if minimum else mean + spread)
    cleared = judged >= threshold if minimum else judged <= threshold
    assert result.verdict == ("pass" if cleared else "fail")
    assert result.measured == mean and result.threshold == threshold
    assert result.ci == (mean - spread, mean + spread)


@given(threshold=finite, minimum=st.booleans(), reason=st.text(min_size=1, max_size=40))
def test_an_unavailable_metric_is_never_a_pass(threshold, minimum, reason):
    spec = GateSpec(version=1, min={"clip_t": threshold} if minimum else {},
                    max={} if minimum else {"clip_t": threshold})
    [result] = bound_gates(spec, summary_with({"clip_t": None}, {"clip_t": reason}), "cand")
    assert result.verdict == "unavailable"
    assert reason in result.message


def test_a_metric_absent_from_the_summary_is_unavailable():
    spec = GateSpec(version=1, min={"pose_div_yaw": 5.0})
    [result] = bound_gates(spec, summary_with({}), "cand")
    assert result.verdict == "unavailable" and "not in the run's summary" in result.detail


def test_identity_gate_takes_the_calibrated_threshold_and_says_so():
    spec = load_gate_spec()
    [result] = identity_gates(spec, summary_with({"id_sim_sface": stats(0.30, 0.25, 0.35, n=12)}), "cand")
    assert result.verdict == "fail"
    assert result.threshold == 0.36 and "threshold from the calibration" in result.detail
    message = result.message
    for part in ("ID-Sim (sface)", "FAIL", "measured 0.3", "95% CI [0.25, 0.35]", "n=12", "threshold 0.36"):
        assert part in message


def test_a_threshold_in_the_gates_file_overrides_the_calibration():
    spec = GateSpec(version=1, id_sim={"min": {"sface": 0.25}})
    [result] = identity_gates(spec, summary_with({"id_sim_sface": stats(0.30)}), "cand")
    assert result.verdict == "pass" and result.threshold == 0.25 and "gates.toml" in result.detail


def test_identity_without_any_threshold_is_unavailable():
    summary = summary_with({"id_sim_sface": stats(0.9)})
    summary["thresholds"] = {}
    [result] = identity_gates(load_gate_spec(), summary, "cand")
    assert result.verdict == "unavailable" and "no calibrated threshold" in result.detail


def test_a_recognizer_used_in_training_is_flagged_as_not_independent():
    summary = summary_with({"id_sim_sface": stats(0.9)}, trained_with={"cand": ["sface"]})
    [result] = identity_gates(load_gate_spec(), summary, "cand")
    assert result.verdict == "pass" and "not an independent judge" in result.detail


def compare_table(**rows) -> pd.DataFrame:
    return pd.DataFrame([{"metric": metric, "n_pairs": 20, "mean_a": a, "mean_b": b, "diff": b - a,
                          "ci_low": low, "ci_high": high, "p_value": 0.01} for metric, (a, b, low, high) in rows.items()])


def test_regression_fails_only_for_a_significant_drop_beyond_the_margin():
    spec = load_gate_spec()
    summary = summary_with({})
    deltas = deltas_from_table(compare_table(
        id_sim_sface=(0.60, 0.50, -0.14, -0.06),     # significant drop of 0.10 > 0.02: fail
        expr_div=(0.50, 0.40, -0.30, 0.10),           # bigger drop, but the CI holds 0: pass
        face_detect_rate=(0.90, 0.89, -0.015, -0.005),  # significant, within the margin: pass
        copy_paste_rate=(0.00, 0.20, 0.10, 0.30),     # lower is better: a significant rise fails
        pose_div_yaw=(5.0, 8.0, 2.0, 4.0),            # significant gain: pass
    ))
    results = {r.gate: r for r in regression_gates(spec, summary, deltas, "base:ideal")}
    assert results["regression_id_sim_sface"].verdict == "fail"
    assert results["regression_id_sim_sface"].ci == (-0.14, -0.06)
    assert "base:ideal" in results["regression_id_sim_sface"].message
    assert results["regression_expr_div"].verdict == "pass"
    assert results["regression_face_detect_rate"].verdict == "pass"
    assert results["regression_copy_paste_rate"].verdict == "fail"
    assert results["regression_pose_div_yaw"].verdict == "pass"
    assert results["regression_pose_div_pitch"].verdict == "unavailable"  # not in the comparison


def test_without_a_baseline_the_regression_gate_is_unavailable():
    [result] = regression_gates(load_gate_spec(), summary_with({}), None, None)
    assert result.verdict == "unavailable" and "--baseline" in result.message


def configured(consent=None, provenance=None, audit_ok=True) -> GovernanceChecks:
    return GovernanceChecks(
        configured=True, source="test",
        consent=consent if consent is not None else {
            "alice": {"avatar-generation": ConsentView(True, "granted", "r1"),
                      "evaluation": ConsentView(True, "granted", "r1")}},
        provenance=provenance if provenance is not None else [ProvenanceView("cand", "out/a.png", "trusted", "")],
        audit=AuditView(audit_ok, 7, None if audit_ok else 3, "" if audit_ok else "hash chain broken"))


def verdicts(results):
    return {r.gate: r.verdict for r in results}


def test_governance_not_configured_is_unavailable_never_passing():
    results = governance_gates(load_gate_spec(), not_configured("no config"), None)
    assert verdicts(results) == {"governance_provenance": "unavailable", "governance_consent": "unavailable",
                                 "governance_audit_log": "unavailable"}
    assert all("not configured" in r.message for r in results)


def test_governance_passes_when_every_check_holds():
    assert set(verdicts(governance_gates(load_gate_spec(), configured(), None)).values()) == {"pass"}


def test_governance_fails_naming_what_broke():
    checks = configured(
        consent={"alice": {"avatar-generation": ConsentView(False, "withdrawn", "r1")}, "bob": {}},
        provenance=[ProvenanceView("cand", "out/a.png", "trusted", ""),
                    ProvenanceView("cand", "out/b.png", "tampered", "hash mismatch")],
        audit_ok=False)
    results = {r.gate: r for r in governance_gates(load_gate_spec(), checks, None)}
    assert results["governance_provenance"].verdict == "fail"
    assert results["governance_provenance"].measured == 0.5 and "b.png (tampered)" in results["governance_provenance"].detail
    assert results["governance_consent"].verdict == "fail"
    assert "alice (withdrawn)" in results["governance_consent"].detail and "bob" in results["governance_consent"].detail
    assert results["governance_audit_log"].verdict == "fail" and "entry 3" in results["governance_audit_log"].detail


def test_outputs_that_are_not_generated_cannot_pass_the_provenance_or_consent_gates():
    checks = configured(
        consent={"alice": {"avatar-generation": ConsentView(False, "purpose not granted", "r1")}},
        provenance=[ProvenanceView("cand", "photos/a.jpg", "no-manifest", "")])
    results = {r.gate: r for r in governance_gates(load_gate_spec(), checks, "demo run: real photographs")}
    assert results["governance_provenance"].verdict == "unavailable"
    assert results["governance_provenance"].measured == 0.0
    assert results["governance_consent"].verdict == "unavailable"
    assert "REFUSED for alice (purpose not granted)" in results["governance_consent"].detail
    assert results["governance_audit_log"].verdict == "pass"


def test_the_candidate_is_judged_on_its_own_outputs_and_subjects(synthetic_run):
    run = copy.copy(synthetic_run)
    run.governance = configured(
        consent={"subject0": {"avatar-generation": ConsentView(True, "granted", "r")},
                 "stranger": {"avatar-generation": ConsentView(False, "no record", None)}},
        provenance=[ProvenanceView("candidate", "a.png", "trusted", ""),
                    ProvenanceView("baseline", "b.png", "no-manifest", "")])
    results = {r.gate: r for r in evaluate_gates(load_gate_spec(), run)}
    assert results["governance_provenance"].verdict == "pass" and results["governance_provenance"].n == 1
    assert results["governance_consent"].verdict == "pass" and results["governance_consent"].n == 1
