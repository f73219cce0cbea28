"""The report's figures, drawn with matplotlib and returned as SVG data URIs (crisp on a projector)."""
from __future__ import annotations

import io
import textwrap
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from eval.report.metrics import metric_label  # noqa: E402
from eval.report.thumbnails import svg_data_uri  # noqa: E402

plt.rcParams.update({
    "font.size": 13, "axes.titlesize": 15, "axes.labelsize": 14, "legend.fontsize": 12,
    "svg.hashsalt": "idavatar-report",  # stable ids: the same run gives the same file
})
COLOURS = ("#1f5fbf", "#d9480f", "#2b8a3e", "#862e9c", "#e67700", "#0b7285", "#5c5f66")
COPY_PASTE_FILL = "#ffc9c9"


def figure_svg(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(figure)
    return svg_data_uri(buffer.getvalue())


def _stats(summary: dict, system: str, key: str) -> dict | None:
    stats = summary["systems"][system].get("metrics", {}).get(key)
    return stats if stats and stats.get("mean") is not None else None


def identity_diversity_scatter(summary: dict, recognizer: str, diversity_metrics: Sequence[str],
                               copy_similarity: float | None, diversity_minimums: dict[str, float]) -> str:
    """One panel per diversity metric: each system's mean ID-Sim against its diversity, with 95% CIs.

    The copy-paste region - ID-Sim at copy level (`copy_similarity`) yet below the gates' diversity
    minimum - is shaded where both bounds are known."""
    id_key = f"id_sim_{recognizer}"
    systems = list(summary["systems"])
    columns = min(len(diversity_metrics), 2)
    rows = -(-len(diversity_metrics) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(6.4 * columns, 4.8 * rows), squeeze=False)
    for axis, key in zip(axes.flat, diversity_metrics):
        axis.set_title(f"{metric_label(id_key)} vs {metric_label(key)}")
        axis.set_xlabel(metric_label(key))
        axis.set_ylabel(metric_label(id_key))
        plotted = 0
        for index, system in enumerate(systems):
            x, y = _stats(summary, system, key), _stats(summary, system, id_key)
            if x is None or y is None:
                continue
            axis.errorbar(x["mean"], y["mean"],
                          xerr=[[x["mean"] - x["ci_low"]], [x["ci_high"] - x["mean"]]],
                          yerr=[[y["mean"] - y["ci_low"]], [y["ci_high"] - y["mean"]]],
                          fmt="o", markersize=10, capsize=5, color=COLOURS[index % len(COLOURS)],
                          label=system)
            plotted += 1
        if plotted == 0:
            reasons = {summary["systems"][s].get("unavailable", {}).get(key) for s in systems} - {None}
            text = textwrap.fill("; ".join(sorted(reasons)), width=48, max_lines=6, placeholder=" ...")
            axis.text(0.5, 0.5, "unavailable\n" + text, ha="center", va="center", fontsize=11,
                      transform=axis.transAxes, color="#5c5f66")
            axis.set_xticks([])
            axis.set_yticks([])
            continue
        minimum = diversity_minimums.get(key)
        if minimum is not None and copy_similarity is not None:
            x_low, _ = axis.get_xlim()
            _, y_high = axis.get_ylim()
            axis.fill_between([min(x_low, 0), minimum], copy_similarity, max(y_high, 1.0),
                              color=COPY_PASTE_FILL, alpha=0.6, zorder=0, label="copy-paste region")
            axis.axhline(copy_similarity, color="#5c5f66", linestyle="--", linewidth=1)
            axis.axvline(minimum, color="#5c5f66", linestyle=":", linewidth=1)
        axis.legend(loc="best")
        axis.grid(alpha=0.3)
    for axis in list(axes.flat)[len(diversity_metrics):]:
        axis.set_visible(False)
    figure.tight_layout()
    return figure_svg(figure)


def roc_curves(curves: dict[str, dict], title: str = "Recognizer calibration (ROC)") -> str:
    """ROC per recognizer: `curves[recognizer]` holds `fpr`, `tpr`, optionally `auc` and the chosen
    operating point `threshold_fpr`/`threshold_tpr`/`threshold`."""
    figure, axis = plt.subplots(figsize=(7.0, 6.0))
    for index, (recognizer, curve) in enumerate(curves.items()):
        colour = COLOURS[index % len(COLOURS)]
        label = recognizer + (f" (AUC {curve['auc']:.3f})" if curve.get("auc") is not None else "")
        axis.plot(curve["fpr"], curve["tpr"], drawstyle="steps-post", color=colour, linewidth=2.5, label=label)
        if curve.get("threshold_fpr") is not None:
            axis.plot(curve["threshold_fpr"], curve["threshold_tpr"], "o", color=colour, markersize=11,
                      markeredgecolor="black")
            axis.annotate(f"threshold {curve['threshold']:.3f}",
                          (curve["threshold_fpr"], curve["threshold_tpr"]), textcoords="offset points",
                          xytext=(10, -18 - 16 * index), color=colour)
    axis.plot([0, 1], [0, 1], color="#adb5bd", linestyle="--", linewidth=1)
    axis.set_xlim(-0.02, 1.02)
    axis.set_ylim(-0.02, 1.02)
    axis.set_xlabel("false accept rate (different people)")
    axis.set_ylabel("true accept rate (same person)")
    axis.set_title(title)
    axis.legend(loc="lower right")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    return figure_svg(figure)
