"""The review report: one self-contained HTML file per run (`python -m eval.report`).

    from eval.report import build_report
    path = build_report("runs/a/manifest.jsonl", baseline="runs/b/scores")   # -> reports/a.html
    path = build_report()                                                     # the demo -> reports/demo.html

The gate verdicts come from eval.report.gates, the same code `pytest benchmarks/` runs.
"""
from __future__ import annotations

from pathlib import Path

REPORTS_DIR = Path("reports")


def build_report(run=None, *, out=None, progress=True, **options) -> Path:
    """Load (and score if needed) the run, judge its gates, write the HTML report; return its path.

    `options` are those of `eval.report.review.prepare_review` (system, baseline, baseline_system,
    gates_file, calibration, governance, demo_dir)."""
    from eval.report.render import render_report, write_report
    from eval.report.review import prepare_review

    review = prepare_review(run, progress=progress, **options)
    html = render_report(review.run, review.spec, review.comparison, progress)
    return write_report(html, out or REPORTS_DIR / f"{review.run.name}.html")
