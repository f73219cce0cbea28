"""The calibration section: each recognizer's chosen same-person threshold and its ROC curve,
read from the harness's calibration JSON (`python -m eval.calibrate`)."""
from __future__ import annotations

from dataclasses import dataclass

from eval.report.run import ReviewRun


@dataclass
class CalibrationView:
    source: str
    thresholds: list[tuple[str, float, str]]  # (recognizer, threshold, how it was chosen)
    curves: dict[str, dict]  # recognizer -> fpr, tpr, auc, threshold point (for plots.roc_curves)


def _per_recognizer(calibration: dict) -> dict[str, dict]:
    nested = calibration.get("recognizers")
    return nested if isinstance(nested, dict) else {k: v for k, v in calibration.items() if isinstance(v, dict)}


def calibration_view(run: ReviewRun) -> CalibrationView | None:
    if run.calibration is None:
        return None
    thresholds, curves = [], {}
    for recognizer, entry in _per_recognizer(run.calibration).items():
        threshold = entry.get("threshold")
        if threshold is None:
            continue
        how = entry.get("rule") or (f"false accept rate <= {entry['target_far']}" if "target_far" in entry else "")
        thresholds.append((recognizer, float(threshold), how))
        roc = entry.get("roc") or {}
        if roc.get("fpr") and roc.get("tpr"):
            curves[recognizer] = {"fpr": roc["fpr"], "tpr": roc["tpr"], "auc": entry.get("auc"),
                                  "threshold": float(threshold), "threshold_fpr": entry.get("far"),
                                  "threshold_tpr": entry.get("tar")}
    return CalibrationView(run.calibration_source, thresholds, curves)
