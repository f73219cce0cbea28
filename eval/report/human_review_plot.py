"""The human review's figure: each image's mean likeness against its ID-Sim, per recognizer, with the
calibrated threshold and the one that best reproduces the humans' judgment (Youden)."""
from __future__ import annotations

import pandas as pd

from eval.report.metrics import metric_label
from eval.report.plots import COLOURS, figure_svg, plt, roc_curves
from eval.review.stats import SAME_PERSON_LIKENESS, RecognizerAgreement


def likeness_scatter(images: pd.DataFrame, agreements: dict[str, RecognizerAgreement]) -> str | None:
    """One panel per recognizer with scores; None when no rated image has an ID-Sim."""
    shown = [a for a in agreements.values() if a.n > 0]
    if not shown:
        return None
    figure, axes = plt.subplots(1, len(shown), figsize=(6.6 * len(shown), 5.2), squeeze=False)
    systems = sorted(images["system"].unique())
    for axis, agreement in zip(axes.flat, shown):
        key = f"id_sim_{agreement.recognizer}"
        for index, system in enumerate(systems):
            rows = images[images["system"] == system].dropna(subset=[key, "likeness"])
            axis.scatter(rows[key], rows["likeness"], s=70, alpha=0.8, color=COLOURS[index % len(COLOURS)],
                         edgecolors="black", linewidths=0.5, label=system)
        axis.axhline(SAME_PERSON_LIKENESS, color="#5c5f66", linestyle=":", linewidth=1)
        if agreement.calibrated_threshold is not None:
            axis.axvline(agreement.calibrated_threshold, color="#111111", linestyle="--", linewidth=2,
                         label=f"calibrated {agreement.calibrated_threshold:.3f}")
        if agreement.youden_threshold is not None:
            axis.axvline(agreement.youden_threshold, color="#862e9c", linestyle="-.", linewidth=2,
                         label=f"humans (Youden) {agreement.youden_threshold:.3f}")
        rho = "" if agreement.spearman is None else f" (Spearman {agreement.spearman:.2f})"
        axis.set_title(f"{agreement.recognizer}{rho}")
        axis.set_xlabel(metric_label(key))
        axis.set_ylabel("mean human likeness (1-5)")
        axis.set_ylim(0.8, 5.2)
        axis.legend(loc="best", fontsize=10)
        axis.grid(alpha=0.3)
    figure.tight_layout()
    return figure_svg(figure)


def human_roc(agreements: dict[str, RecognizerAgreement]) -> str | None:
    """Each recognizer's ROC against the humans' "same person", its Youden point marked."""
    curves = {a.recognizer: {"fpr": a.fpr, "tpr": a.tpr, "auc": a.auc, "threshold": a.youden_threshold,
                             "threshold_fpr": a.youden_fpr, "threshold_tpr": a.youden_tpr}
              for a in agreements.values() if a.auc is not None}
    return roc_curves(curves, title=f"ROC against the humans (mean likeness >= {SAME_PERSON_LIKENESS:g})") if curves else None
