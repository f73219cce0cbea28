"""Acceptance gates: thresholds from `benchmarks/gates.toml`, verdicts from a run's summary.

One module decides every verdict, so the report's banner and `pytest benchmarks/` never disagree.
A gate whose metric is unavailable is `unavailable` with the reason - never `pass`.
"""
from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from eval.report.comparison import Comparison, MetricDelta
from eval.report.governance_checks import GovernanceChecks, not_configured
from eval.report.metrics import LOWER_IS_BETTER, metric_label
from eval.report.run import ReviewRun

DEFAULT_GATES_FILE = Path(__file__).resolve().parents[2] / "benchmarks" / "gates.toml"

Verdict = Literal["pass", "fail", "unavailable"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class IdSimGates(_Strict):
    default: Literal["calibration"] | float = "calibration"
    min: dict[str, float] = Field(default_factory=dict)


class RegressionGates(_Strict):
    default_margin: float = Field(ge=0)
    metrics: list[str]
    margin: dict[str, float] = Field(default_factory=dict)

    def margin_for(self, metric: str) -> float:
        """A metric's own margin, else its family's (`id_sim` for every `id_sim_<recognizer>`)."""
        family = "id_sim" if metric.startswith("id_sim_") else metric
        return self.margin.get(metric, self.margin.get(family, self.default_margin))


class GovernanceGates(_Strict):
    provenance: bool = True
    consent_purpose: str | None = "avatar-generation"
    audit_log: bool = True


class ReviewGates(_Strict):
    """Gates on the human review (eval.review.stats); without reviews each is unavailable."""

    min_mos_likeness: float | None = 3.5
    min_alpha: float = Field(default=0.667, ge=-1, le=1)  # below it the MOS does not count
    ab_significance: float | None = Field(default=0.05, gt=0, lt=1)  # sign test level vs --baseline
    approval: bool = True  # every image of the candidate has a standing approval


class GateSpec(_Strict):
    """The parsed gates file."""

    version: int
    judge: Literal["mean", "ci"] = "mean"
    id_sim: IdSimGates = Field(default_factory=IdSimGates)
    min: dict[str, float] = Field(default_factory=dict)
    max: dict[str, float] = Field(default_factory=dict)
    regression: RegressionGates | None = None
    governance: GovernanceGates = Field(default_factory=GovernanceGates)
    review: ReviewGates = Field(default_factory=ReviewGates)


class GatesFileError(ValueError):
    pass


def load_gate_spec(path: str | Path | None = None) -> GateSpec:
    path = Path(path) if path is not None else DEFAULT_GATES_FILE
    try:
        with open(path, "rb") as handle:
            return GateSpec.model_validate(tomllib.load(handle))
    except FileNotFoundError as exc:
        raise GatesFileError(f"{path}: gates file not found") from exc
    except (tomllib.TOMLDecodeError, ValidationError) as exc:
        raise GatesFileError(f"{path}: not a valid gates file: {exc}") from exc


@dataclass(frozen=True)
class GateResult:
    gate: str  # stable id, e.g. "id_sim_sface", "regression_expr_div", "governance_provenance"
    title: str  # what is required, in words
    verdict: Verdict
    measured: float | None = None
    threshold: float | None = None
    ci: tuple[float, float] | None = None
    n: int | None = None
    detail: str = ""  # the reason when unavailable; provenance of the threshold or a caveat otherwise

    @property
    def message(self) -> str:
        parts = [f"{self.title}: {self.verdict.upper()}"]
        if self.measured is not None:
            parts.append(f"measured {_fmt(self.measured)}")
        if self.ci is not None:
            parts.append(f"95% CI [{_fmt(self.ci[0])}, {_fmt(self.ci[1])}]")
        if self.n is not None:
            parts.append(f"n={self.n}")
        if self.threshold is not None:
            parts.append(f"threshold {_fmt(self.threshold)}")
        if self.detail:
            parts.append(self.detail)
        return "; ".join(parts)


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def _metric(summary: dict, system: str, key: str) -> tuple[dict | None, str]:
    """(metric stats, reason it is unavailable)."""
    entry = summary["systems"][system]
    stats = entry.get("metrics", {}).get(key)
    if stats is None or stats.get("mean") is None or not math.isfinite(stats["mean"]):
        reason = entry.get("unavailable", {}).get(key) or f"metric {key} not in the run's summary"
        return None, reason
    return stats, ""


def _bound_gate(gate: str, title: str, stats: dict | None, reason: str, threshold: float,
                minimum: bool, judge: str, detail: str = "") -> GateResult:
    if stats is None:
        return GateResult(gate, title, "unavailable", threshold=threshold, detail=reason)
    mean = stats["mean"]
    has_ci = stats.get("ci_low") is not None and stats.get("ci_high") is not None
    ci = (stats["ci_low"], stats["ci_high"]) if has_ci else None
    if judge == "ci" and ci is not None:
        judged = ci[0] if minimum else ci[1]
        rule = f"whole 95% CI {'>=' if minimum else '<='} threshold"
    else:
        judged = mean
        rule = f"mean {'>=' if minimum else '<='} threshold"
    passed = judged >= threshold if minimum else judged <= threshold
    notes = "; ".join(filter(None, [rule, detail]))
    return GateResult(gate, title, "pass" if passed else "fail", measured=mean, threshold=threshold,
                      ci=ci, n=stats.get("n"), detail=notes)


def identity_gates(spec: GateSpec, summary: dict, system: str) -> list[GateResult]:
    results = []
    not_independent = set(summary.get("trained_with", {}).get(system, []))
    for recognizer in summary.get("recognizers", []):
        key = f"id_sim_{recognizer}"
        title = f"{metric_label(key)} >= minimum"
        if recognizer in spec.id_sim.min:
            threshold, source = spec.id_sim.min[recognizer], "threshold from gates.toml"
        elif spec.id_sim.default != "calibration":
            threshold, source = float(spec.id_sim.default), "threshold from gates.toml"
        else:
            threshold = summary.get("thresholds", {}).get(recognizer)
            source = "threshold from the calibration"
        if threshold is None:
            results.append(GateResult(key, title, "unavailable",
                                      detail=f"no calibrated threshold for {recognizer} "
                                             "and none set in gates.toml"))
            continue
        caveat = (f"{recognizer} was used to train {system}: not an independent judge"
                  if recognizer in not_independent else "")
        stats, reason = _metric(summary, system, key)
        results.append(_bound_gate(key, title, stats, reason, float(threshold), True, spec.judge,
                                   "; ".join(filter(None, [source, caveat]))))
    return results


def bound_gates(spec: GateSpec, summary: dict, system: str) -> list[GateResult]:
    results = []
    for table, minimum in ((spec.min, True), (spec.max, False)):
        for key, threshold in table.items():
            title = f"{metric_label(key)} {'>=' if minimum else '<='} {'minimum' if minimum else 'maximum'}"
            stats, reason = _metric(summary, system, key)
            results.append(_bound_gate(key, title, stats, reason, threshold, minimum, spec.judge))
    return results


def _expand_regression_metrics(spec: RegressionGates, summary: dict) -> list[str]:
    keys = []
    for name in spec.metrics:
        if name == "id_sim":
            keys += [f"id_sim_{r}" for r in summary.get("recognizers", [])]
        else:
            keys.append(name)
    return keys


def regression_gates(spec: GateSpec, summary: dict, deltas: dict[str, MetricDelta] | None,
                     baseline_label: str | None) -> list[GateResult]:
    if spec.regression is None:
        return []
    if deltas is None:
        return [GateResult("regression", "no regression vs a baseline run", "unavailable",
                           detail="no baseline run given (--baseline)")]
    results = []
    for key in _expand_regression_metrics(spec.regression, summary):
        margin = spec.regression.margin_for(key)
        worse = "higher" if key in LOWER_IS_BETTER else "lower"
        title = f"{metric_label(key)}: no regression vs baseline"
        gate = f"regression_{key}"
        delta = deltas.get(key)
        if delta is None or delta.unavailable:
            reason = delta.unavailable if delta is not None else f"{key} not comparable"
            results.append(GateResult(gate, title, "unavailable", threshold=margin,
                                      detail=reason))
            continue
        # Signed so that negative means worse, whatever the metric's direction.
        sign = -1.0 if key in LOWER_IS_BETTER else 1.0
        drop = -sign * delta.delta
        significant = delta.significant
        failed = drop > margin and significant
        detail = (f"candidate - baseline ({baseline_label}); fails when {worse} by more than the margin "
                  f"and the CI excludes 0 ({'significant' if significant else 'not significant'})")
        results.append(GateResult(gate, title, "fail" if failed else "pass", measured=delta.delta,
                                  threshold=margin, ci=(delta.ci_low, delta.ci_high), n=delta.n,
                                  detail=detail))
    return results


def _not_configured(gate: str, title: str, checks: GovernanceChecks, threshold: float | None) -> GateResult:
    return GateResult(gate, title, "unavailable", threshold=threshold,
                      detail=f"governance not configured ({checks.reason})")


def _provenance_gate(checks: GovernanceChecks, stand_in: str | None) -> GateResult:
    gate, title = "governance_provenance", "every output has trusted C2PA provenance"
    if not checks.configured:
        return _not_configured(gate, title, checks, 1.0)
    if not checks.provenance:
        return GateResult(gate, title, "unavailable", threshold=1.0, detail="no output image to verify")
    share, n = checks.trusted_share, len(checks.provenance)
    if stand_in:
        return GateResult(gate, title, "unavailable", measured=share, threshold=1.0, n=n,
                          detail=f"{stand_in}; real photographs carry no C2PA manifest of a generator")
    untrusted = [p for p in checks.provenance if p.status != "trusted"]
    named = ", ".join(f"{Path(p.path).name} ({p.status})" for p in untrusted[:5])
    more = f" and {len(untrusted) - 5} more" if len(untrusted) > 5 else ""
    return GateResult(gate, title, "fail" if untrusted else "pass", measured=share, threshold=1.0, n=n,
                      detail=f"not trusted: {named}{more}" if untrusted else "")


def _consent_gate(purpose: str, checks: GovernanceChecks, stand_in: str | None) -> GateResult:
    gate, title = "governance_consent", f"every subject had consent for {purpose}"
    if not checks.configured:
        return _not_configured(gate, title, checks, 1.0)
    decisions = {subject: per.get(purpose) for subject, per in checks.consent.items()}
    if not decisions:
        return GateResult(gate, title, "unavailable", threshold=1.0, detail="the run names no subject")
    refused = sorted(s for s, d in decisions.items() if d is None or not d.allowed)
    share = (len(decisions) - len(refused)) / len(decisions)
    reasons = ", ".join(f"{s} ({decisions[s].reason if decisions[s] else 'purpose unknown to the registry'})"
                        for s in refused)
    if stand_in:
        return GateResult(gate, title, "unavailable", measured=share, threshold=1.0, n=len(decisions),
                          detail=f"{stand_in}, so no avatar was generated"
                                 + (f"; {purpose} is REFUSED for {reasons}" if refused else ""))
    return GateResult(gate, title, "fail" if refused else "pass", measured=share, threshold=1.0,
                      n=len(decisions), detail=f"refused: {reasons}" if refused else "")


def _audit_gate(checks: GovernanceChecks) -> GateResult:
    gate, title = "governance_audit_log", "the audit log verifies"
    if not checks.configured:
        return _not_configured(gate, title, checks, None)
    audit = checks.audit
    broken = "" if audit.ok else f"; first bad entry {audit.first_bad}: {audit.reason}"
    return GateResult(gate, title, "pass" if audit.ok else "fail", detail=f"{audit.entries} entries{broken}")


def governance_gates(spec: GateSpec, checks: GovernanceChecks, stand_in: str | None) -> list[GateResult]:
    """`stand_in` is set when the run's outputs are not generated images (the demo's real photos):
    the provenance and consent-for-generation gates then cannot apply, and say so."""
    wanted = spec.governance
    return ([_provenance_gate(checks, stand_in)] if wanted.provenance else []) + (
        [_consent_gate(wanted.consent_purpose, checks, stand_in)] if wanted.consent_purpose else []) + (
        [_audit_gate(checks)] if wanted.audit_log else [])


def evaluate_gates(spec: GateSpec, run: ReviewRun, comparison: Comparison | None = None) -> list[GateResult]:
    """Every gate's verdict for the run's candidate system."""
    from eval.report.review_gates import review_gates  # it builds on this module's GateResult

    system = run.candidate
    checks = run.governance or not_configured("no governance checks were run")
    subjects = run.rows(system)["subject"].unique()
    return (identity_gates(spec, run.summary, system)
            + bound_gates(spec, run.summary, system)
            + regression_gates(spec, run.summary, comparison.deltas if comparison else None,
                               comparison.baseline_label if comparison else None)
            + governance_gates(spec, checks.restricted_to(system, subjects), run.stand_in)
            + review_gates(spec, run, comparison))
