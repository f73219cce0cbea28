"""One review, as the report and the gates both see it: the gates file, the run, the baseline comparison."""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from eval.report.comparison import Comparison, compare_runs
from eval.report.gates import GateResult, GateSpec, evaluate_gates, load_gate_spec
from eval.report.human_review import load_human_review
from eval.report.run import ReviewRun, load_run


@dataclass
class Review:
    spec: GateSpec
    run: ReviewRun
    comparison: Comparison | None = None

    def gates(self) -> list[GateResult]:
        return evaluate_gates(self.spec, self.run, self.comparison)


def prepare_review(run: str | Path | None = None, *, system: str | None = None, baseline: str | Path | None = None,
                   baseline_system: str | None = None, gates_file: str | Path | None = None,
                   calibration: str | Path | None = None, governance: str | Path | None = None,
                   demo_dir: str | Path | None = None, reviews: str | Path | None = None,
                   progress: bool = True) -> Review:
    """Load the gates file, the run (the demo when `run` is None), its human reviews (the export
    folder `reviews`, else the review store of the governance workspace) and, if given, the baseline."""
    spec = load_gate_spec(gates_file)
    review_run = load_run(run, system=system, calibration=calibration, governance=governance,
                          demo_dir=demo_dir, progress=progress)
    human = load_human_review(reviews, review_run.name, review_run.scores, review_run.summary, governance)
    review_run = replace(review_run, human_review=human)
    comparison = None
    if baseline is not None:
        other = load_run(baseline, system=baseline_system, prefer=review_run.candidate, with_governance=False,
                         progress=progress)
        comparison = compare_runs(review_run, other)
    return Review(spec, review_run, comparison)
