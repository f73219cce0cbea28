"""The calibration section: each recognizer's chosen same-person threshold and its ROC curve, read
from the harness's calibration JSON (`python -m eval.calibrate`, see eval/calibrate.py)."""
from __future__ import annotations

from dataclasses import dataclass

from eval.report.run import ReviewRun


@dataclass
class CalibrationView:
    source: str
    thresholds: list[tuple[str, float, str]]  # (recognizer, threshold, how it was chosen)
    curves: dict[str, dict]  # recognizer -> fpr, tpr, auc, threshold point (for plots.roc_curves)


def _how(entry: dict) -> str:
    parts = []
    if entry.get("target_far") is not None:
        parts.append(f"false accept rate <= {entry['target_far']:g}")
    if entry.get("far") is not None and entry.get("frr") is not None:
        parts.append(f"achieved FAR {entry['far']:.3f}, FRR {entry['frr']:.3f}")
    if entry.get("n_genuine") is not None:
        parts.append(f"{entry['n_genuine']} genuine / {entry.get('n_impostor', '?')} impostor pairs")
    return "; ".join(parts)


def calibration_view(run: ReviewRun) -> CalibrationView | None:
    if run.calibration is None:
        return None
    thresholds, curves = [], {}
    for recognizer, entry in (run.calibration.get("recognizers") or {}).items():
        if entry.get("threshold") is None:
            continue
        threshold = float(entry["threshold"])
        thresholds.append((recognizer, threshold, _how(entry)))
        roc = entry.get("roc") or {}
        if roc.get("fpr") and roc.get("tpr"):
            curves[recognizer] = {
                "fpr": roc["fpr"], "tpr": roc["tpr"], "auc": entry.get("auc"), "threshold": threshold,
                "threshold_fpr": entry.get("far"),
                "threshold_tpr": None if entry.get("frr") is None else 1 - entry["frr"],
            }
    return CalibrationView(run.calibration_source, thresholds, curves)
