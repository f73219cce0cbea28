"""The review report: one self-contained HTML file per run (`python -m eval.report`).

    from eval.report import build_report
    path = build_report("runs/a/manifest.jsonl", baseline="runs/b/scores")   # -> reports/manifest.html
    path = build_report()                                                     # the demo -> reports/demo.html
"""
from __future__ import annotations

from pathlib import Path

REPORTS_DIR = Path("reports")


def build_report(run=None, *, out=None, baseline=None, system=None, gates_file=None, calibration=None,
                 governance=None, demo_dir=None, progress=True) -> Path:
    """Load (and score if needed) the run, judge its gates, write the HTML report; return its path."""
    from eval.report.comparison import compare_runs
    from eval.report.gates import load_gate_spec
    from eval.report.render import render_report, write_report
    from eval.report.run import load_run

    spec = load_gate_spec(gates_file)
    review = load_run(run, system=system, calibration=calibration, governance=governance,
                      demo_dir=demo_dir, progress=progress)
    comparison = None
    if baseline is not None:
        other = load_run(baseline, prefer=review.candidate, with_governance=False, progress=progress)
        comparison = compare_runs(review, other)
    html = render_report(review, spec, comparison)
    return write_report(html, out or REPORTS_DIR / f"{review.name}.html")
