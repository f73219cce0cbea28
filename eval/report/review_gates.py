"""The human-review gates of `[review]` in gates.toml: reviewers agree, the candidate's MOS likeness,
A/B votes against the baseline's system, and a standing approval for every image. A run without
reviews makes each of them unavailable, never a pass."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from eval.files import sha256_file
from eval.report.comparison import Comparison
from eval.report.gates import GateResult, GateSpec, ReviewGates, _bound_gate
from eval.report.run import ReviewRun
from eval.review.stats import ReviewStatistics, pair_result

ALPHA_GATE = ("review_alpha_likeness", "reviewers agree on likeness (Krippendorff's alpha >= minimum)")
MOS_GATE = ("review_mos_likeness", "human MOS of likeness >= minimum")
AB_GATE = ("review_ab_baseline", "A/B votes: not significantly worse than the baseline")
APPROVAL_GATE = ("review_approval", "every image to be released is approved")


def _alpha_gate(spec: ReviewGates, statistics: ReviewStatistics, judge: str) -> GateResult:
    result = statistics.agreement["likeness"]
    if result.alpha is None:
        return GateResult(*ALPHA_GATE, "unavailable", threshold=spec.min_alpha, detail=result.reason)
    stats = {"mean": result.alpha, "ci_low": result.ci_low, "ci_high": result.ci_high, "n": result.n_images}
    return _bound_gate(*ALPHA_GATE, stats, "", spec.min_alpha, True, judge,
                       f"{result.n_reviewers} reviewers; n = images rated by two or more")


def _mos_gate(spec: ReviewGates, statistics: ReviewStatistics, system: str, judge: str) -> GateResult:
    stats = statistics.mos_of(system, "likeness")
    if stats is None:
        return GateResult(*MOS_GATE, "unavailable", threshold=spec.min_mos_likeness,
                          detail=f"no rating of likeness for {system}")
    alpha = statistics.agreement["likeness"].alpha
    if alpha is None or alpha < spec.min_alpha:
        shown = "unknown" if alpha is None else f"{alpha:.3f}"
        return GateResult(*MOS_GATE, "unavailable", measured=stats["mean"], threshold=spec.min_mos_likeness,
                          ci=(stats["ci_low"], stats["ci_high"]), n=stats["n"],
                          detail=f"MOS not reliable: reviewers' alpha {shown} < {spec.min_alpha:g}")
    return _bound_gate(*MOS_GATE, stats, "", spec.min_mos_likeness, True, judge, "n = ratings")


def _ab_gate(spec: ReviewGates, statistics: ReviewStatistics, system: str,
             comparison: Comparison | None) -> GateResult:
    baseline = comparison.baseline_system if comparison else None
    if baseline is None:
        return GateResult(*AB_GATE, "unavailable", detail="no baseline run given (--baseline)")
    if baseline == system:
        return GateResult(*AB_GATE, "unavailable",
                          detail=f"the baseline's system is named {system} too: A/B votes compare systems "
                                 "of the reviewed run (choose --baseline-system)")
    pair = pair_result(statistics.pairwise, system, baseline)
    if pair is None:
        return GateResult(*AB_GATE, "unavailable", detail=f"no A/B vote between {system} and {baseline}")
    decisive = pair["wins_a"] + pair["wins_b"]
    if decisive == 0:
        return GateResult(*AB_GATE, "unavailable", n=pair["n"],
                          detail=f"no decisive vote between {system} and {baseline} (only ties and both-bad)")
    p = pair["sign_test_p"]
    worse = pair["wins_b"] > pair["wins_a"] and p < spec.ab_significance
    return GateResult(*AB_GATE, "fail" if worse else "pass", measured=pair["wins_a"] / decisive,
                      threshold=spec.ab_significance, n=pair["n"],
                      detail=f"measured: {system}'s share of the decisive votes; {system} won {pair['wins_a']}, "
                             f"{baseline} {pair['wins_b']}, {pair['ties']} tie(s), {pair['both_bad']} both bad; "
                             f"two-sided sign test p = {p:.3g}; fails when {baseline} wins more with p < threshold")


def _unapproved(run: ReviewRun, statistics: ReviewStatistics, system: str) -> list[str]:
    standing = statistics.standing.set_index("line")
    problems = []
    for row in run.rows(system).to_dict("records"):
        name = Path(row["image"]).name
        if row["line"] not in standing.index:
            problems.append(f"{name}: not decided")
            continue
        decision = standing.loc[row["line"]]
        if decision["decision"] != "approve":
            reason = f": {decision['reason']}" if decision["reason"] else ""
            problems.append(f"{name}: rejected by {decision['approver']} (audit entry {decision['audit_seq']}){reason}")
            continue
        path = run.path_of(row["image"])
        if pd.isna(decision["audit_seq"]):
            problems.append(f"{name}: approved by {decision['approver']}, but not yet in the audit log")
        elif not path.is_file():
            problems.append(f"{name}: approved, but the image file is missing")
        elif str(decision["image_sha256"]).removeprefix("sha256:") != sha256_file(path):
            problems.append(f"{name}: approved by {decision['approver']}, but the image changed since")
    return problems


def _approval_gate(run: ReviewRun, statistics: ReviewStatistics, system: str) -> GateResult:
    n = len(run.rows(system))
    if statistics.standing.empty:
        return GateResult(*APPROVAL_GATE, "unavailable", threshold=1.0, detail="no approval decision in the reviews")
    problems = _unapproved(run, statistics, system)
    shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
    return GateResult(*APPROVAL_GATE, "fail" if problems else "pass", measured=(n - len(problems)) / n if n else None,
                      threshold=1.0, n=n, detail=f"not approved: {shown}" if problems else "")


def review_gates(spec: GateSpec, run: ReviewRun, comparison: Comparison | None) -> list[GateResult]:
    wanted = spec.review
    enabled = [(ALPHA_GATE, wanted.min_alpha, True),
               (MOS_GATE, wanted.min_mos_likeness, wanted.min_mos_likeness is not None),
               (AB_GATE, wanted.ab_significance, wanted.ab_significance is not None),
               (APPROVAL_GATE, 1.0, wanted.approval)]
    human = run.human_review
    if human is None or not human.available:
        reason = human.missing_reason if human is not None else "no reviews of this run"
        return [GateResult(*gate, "unavailable", threshold=threshold, detail=reason)
                for gate, threshold, on in enabled if on]
    statistics, system = human.statistics, run.candidate
    results = [_alpha_gate(wanted, statistics, spec.judge)]
    if wanted.min_mos_likeness is not None:
        results.append(_mos_gate(wanted, statistics, system, spec.judge))
    if wanted.ab_significance is not None:
        results.append(_ab_gate(wanted, statistics, system, comparison))
    if wanted.approval:
        results.append(_approval_gate(run, statistics, system))
    return results
