"""Candidate vs baseline: the paired difference of each metric with its 95% CI (eval.compare)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd


@dataclass(frozen=True)
class MetricDelta:
    metric: str
    candidate: float | None = None
    baseline: float | None = None
    delta: float | None = None  # candidate - baseline
    ci_low: float | None = None
    ci_high: float | None = None
    p_value: float | None = None
    n: int | None = None
    unavailable: str = ""  # why no comparison could be made

    @property
    def significant(self) -> bool:
        """The 95% CI of the difference excludes zero."""
        if self.unavailable or self.ci_low is None or self.ci_high is None:
            return False
        return self.ci_low > 0 or self.ci_high < 0


@dataclass
class Comparison:
    candidate_label: str  # "run:system"
    baseline_label: str
    deltas: dict[str, MetricDelta] = field(default_factory=dict)
    baseline_system: str | None = None


def _finite(value) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def deltas_from_table(table: pd.DataFrame) -> dict[str, MetricDelta]:
    """Read eval.compare's table (one row per metric; `diff` is b - a with a = baseline)."""
    if "metric" in table.columns:
        table = table.set_index("metric")
    deltas = {}
    for metric, row in table.iterrows():
        delta = _finite(row.get("diff"))
        if delta is None:
            deltas[metric] = MetricDelta(str(metric), unavailable=str(row.get("unavailable") or
                                                                      "no pair where both runs have a value"))
            continue
        n = row.get("n_pairs")
        deltas[metric] = MetricDelta(
            str(metric), candidate=_finite(row.get("mean_b")), baseline=_finite(row.get("mean_a")),
            delta=delta, ci_low=_finite(row.get("ci_low")), ci_high=_finite(row.get("ci_high")),
            p_value=_finite(row.get("p_value")), n=None if n is None or pd.isna(n) else int(n))
    return deltas


def compare_runs(candidate, baseline) -> Comparison:
    """Compare two `ReviewRun`s' candidate systems, paired by the harness (eval.compare)."""
    from eval.compare import compare_scores
    from eval.report.run import RunError

    try:
        table = compare_scores(baseline.scores, candidate.scores, system_a=baseline.candidate,
                               system_b=candidate.candidate)
    except ValueError as exc:
        raise RunError(f"cannot compare {candidate.name}:{candidate.candidate} with baseline "
                       f"{baseline.name}:{baseline.candidate}: {exc}") from exc
    return Comparison(f"{candidate.name}:{candidate.candidate}", f"{baseline.name}:{baseline.candidate}",
                      deltas_from_table(table), baseline.candidate)
