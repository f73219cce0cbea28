"""Assemble the sections and render the one self-contained HTML file."""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from eval.files import write_text_atomic
from eval.models import REGISTER
from eval.report import plots, sections
from eval.report.calibration import calibration_view
from eval.report.comparison import Comparison
from eval.report.gates import GateSpec, evaluate_gates
from eval.report.human_review import human_review_view
from eval.report.metrics import METHODS
from eval.report.run import ReviewRun

_environment = Environment(
    loader=PackageLoader("eval.report", "templates"),
    # autoescape everything: prompts, subjects and file names are user text
    autoescape=select_autoescape(default=True, default_for_string=True),
    undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True,
)


def _models(summary: dict) -> list[dict]:
    """The run's models with their weight licences; the register fills what the summary leaves out."""
    rows = []
    for entry in summary.get("models", []):
        spec = REGISTER.get(entry.get("id"))
        merged = ({**spec.as_dict(), **entry} if spec else dict(entry))
        rows.append({"id": merged.get("id", "?"), "task": merged.get("task", ""),
                     "license": merged.get("license", "unknown"),
                     "commercial_use": merged.get("commercial_use"),
                     "source": merged.get("source", ""), "note": merged.get("note", "")})
    return rows


def _scatter(run: ReviewRun, spec: GateSpec) -> str | None:
    recognizers = run.summary.get("recognizers", [])
    panels = sections.diversity_panels(run)
    if not recognizers or not panels:
        return None
    primary = recognizers[0]
    # The copy-paste region starts where the harness calls a face a copy; without that rule, at the
    # same-person threshold.
    copy_similarity = run.summary.get("copy_paste_rule", {}).get("min_similarity", {}).get(primary)
    id_floor = copy_similarity if copy_similarity is not None else run.summary.get("thresholds", {}).get(primary)
    return plots.identity_diversity_scatter(run.summary, primary, panels, id_floor, spec.min)


def render_report(run: ReviewRun, spec: GateSpec, comparison: Comparison | None = None,
                  progress: bool = False) -> str:
    """The report's HTML: the gate verdicts for the run's candidate, then every section."""
    gates = evaluate_gates(spec, run, comparison)
    calibration = calibration_view(run)
    verdicts = [gate.verdict for gate in gates]
    context = {
        "run": run,
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "gates": gates,
        "overall": "fail" if "fail" in verdicts else ("pass" if "pass" in verdicts else "unavailable"),
        "counts": {v: verdicts.count(v) for v in ("pass", "fail", "unavailable")},
        "headline": sections.headline_table(run),
        "categories": sections.category_tables(run),
        "scatter": _scatter(run, spec),
        "scatter_recognizer": (run.summary.get("recognizers") or ["?"])[0],
        "grids": sections.image_grids(run, progress),
        "calibration": calibration,
        "roc": plots.roc_curves(calibration.curves) if calibration and calibration.curves else None,
        "comparison": comparison,
        "human": human_review_view(run.human_review, run.scores),
        "comparison_rows": sections.comparison_rows(comparison) if comparison else [],
        "models": _models(run.summary),
        "trained_with": run.summary.get("trained_with", {}),
        "governance": run.governance,
        "methods": METHODS,
        "judge": spec.judge,
    }
    return _environment.get_template("report.html.j2").render(**context)


def write_report(html: str, out: str | Path) -> Path:
    """Write atomically: a reader never sees half a report, and a failed run leaves the old one intact."""
    return write_text_atomic(out, html).resolve()
