"""The report's sections as plain data for the template, built from a `ReviewRun`."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from eval.report.comparison import Comparison
from eval.report.metrics import DIVERSITY_METRICS, LOWER_IS_BETTER, headline_metrics, metric_label
from eval.report.run import ReviewRun
from eval.report.thumbnails import CROP_PX, ThumbnailError, thumbnail_data_uri

FAILURE_LABELS = {"no_face": "no face", "multi_face": "several faces", "error": "unreadable"}


@dataclass(frozen=True)
class Cell:
    value: str  # the mean, or "—" when unavailable
    ci: str = ""
    note: str = ""  # n, or why the value is unavailable


def _number(value) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def stat_cell(entry: dict, key: str) -> Cell:
    stats = entry.get("metrics", {}).get(key)
    if not stats or _number(stats.get("mean")) is None:
        return Cell("—", note=entry.get("unavailable", {}).get(key, "not computed"))
    ci = ""
    if _number(stats.get("ci_low")) is not None and _number(stats.get("ci_high")) is not None:
        ci = f"[{stats['ci_low']:.3f}, {stats['ci_high']:.3f}]"
    return Cell(f"{stats['mean']:.3f}", ci, f"n = {stats.get('n', '?')}")


@dataclass
class MetricTable:
    columns: list[str]  # metric labels
    rows: list[tuple[str, int | None, list[Cell]]]  # (row label, n images, cells)


def headline_table(run: ReviewRun) -> MetricTable:
    keys = headline_metrics(run.summary)
    rows = [(system, entry.get("n_images"), [stat_cell(entry, key) for key in keys])
            for system, entry in run.summary["systems"].items()]
    return MetricTable([metric_label(k) for k in keys], rows)


def category_tables(run: ReviewRun) -> dict[str, MetricTable]:
    keys = headline_metrics(run.summary)
    tables = {}
    for system, entry in run.summary["systems"].items():
        categories = entry.get("by_category") or {}
        rows = [(category, sub.get("n_images"), [stat_cell(sub, key) for key in keys])
                for category, sub in sorted(categories.items())]
        if rows:
            tables[system] = MetricTable([metric_label(k) for k in keys], rows)
    return tables


@dataclass
class Tile:
    name: str
    prompt: str
    category: str
    thumbnail: str | None
    crop: str | None
    failure: str  # "" when scored normally
    scores: list[tuple[str, str, bool | None]]  # (label, value, good?)


@dataclass
class SubjectGrid:
    subject: str
    references: list[tuple[str, str | None, str]]  # (name, data URI or None, problem)
    tiles: list[Tile] = field(default_factory=list)


def _references(value) -> list[str]:
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            return [value]
        return parsed if isinstance(parsed, list) else [value]
    return [str(v) for v in value] if value is not None else []


def _thumb(path: Path, size: int | None = None) -> tuple[str | None, str]:
    try:
        return (thumbnail_data_uri(path) if size is None else thumbnail_data_uri(path, size)), ""
    except ThumbnailError as exc:
        return None, str(exc)


def _tile_scores(row: pd.Series, thresholds: dict[str, float], recognizers: list[str]) -> list:
    scores = []
    for recognizer in recognizers:
        value = _number(row.get(f"id_sim_{recognizer}"))
        if value is not None:
            threshold = thresholds.get(recognizer)
            scores.append((f"ID {recognizer}", f"{value:.2f}", None if threshold is None else value >= threshold))
    if isinstance(row.get("expr_label"), str):
        reference = row.get("ref_expr_label")
        text = f"{reference}→{row['expr_label']}" if isinstance(reference, str) else row["expr_label"]
        scores.append(("expr", text, None))  # a kept expression is not a fault in itself
    for key, label in (("d_yaw", "Δyaw"), ("d_pitch", "Δpitch")):
        value = _number(row.get(key))
        if value is not None:
            scores.append((label, f"{round(value):d}°", None))
    for key in ("clip_t", "clip_i"):
        value = _number(row.get(key))
        if value is not None:
            scores.append((metric_label(key), f"{value:.2f}", None))
    copy_paste = row.get("copy_paste")
    if copy_paste is not None and not pd.isna(copy_paste):
        scores.append(("copy-paste", "YES" if bool(copy_paste) else "no", not bool(copy_paste)))
    return scores


def image_grids(run: ReviewRun, progress: bool = False) -> dict[str, list[SubjectGrid]]:
    """Per system, per subject: the references, then every output with its crop and scores."""
    thresholds = run.summary.get("thresholds", {})
    recognizers = run.summary.get("recognizers", [])
    grids: dict[str, list[SubjectGrid]] = {}
    for system in tqdm(run.systems, desc="report images", unit="system", disable=not progress):
        rows = run.rows(system)
        subjects = []
        for subject, group in rows.groupby("subject", sort=True):
            references = []
            for reference in _references(group.iloc[0]["references"]):
                uri, problem = _thumb(run.path_of(reference))
                references.append((Path(reference).name, uri, problem))
            grid = SubjectGrid(str(subject), references)
            for _, row in group.iterrows():
                thumbnail, problem = _thumb(run.path_of(row["image"]))
                crop = None
                if isinstance(row.get("face_crop"), str) and row["face_crop"]:
                    crop, _ = _thumb(run.scores_dir / row["face_crop"], CROP_PX)
                status = row.get("status", "ok")
                failure = ""
                if status != "ok":
                    label = FAILURE_LABELS.get(status, status)
                    reason = row.get("error") if isinstance(row.get("error"), str) else ""
                    failure = f"{label}: {reason}" if reason and reason != label else label
                elif problem:
                    failure = problem
                grid.tiles.append(Tile(Path(row["image"]).name, str(row.get("prompt", "")),
                                       str(row.get("prompt_category", "")), thumbnail, crop, failure,
                                       _tile_scores(row, thresholds, recognizers)))
            subjects.append(grid)
        grids[system] = subjects
    return grids


def comparison_rows(comparison: Comparison) -> list[dict]:
    rows = []
    for key, delta in comparison.deltas.items():
        if delta.unavailable:
            rows.append({"metric": metric_label(key), "unavailable": delta.unavailable})
            continue
        better = (delta.delta < 0) if key in LOWER_IS_BETTER else (delta.delta > 0)
        rows.append({
            "metric": metric_label(key), "unavailable": "",
            "baseline": f"{delta.baseline:.3f}" if delta.baseline is not None else "—",
            "candidate": f"{delta.candidate:.3f}" if delta.candidate is not None else "—",
            "delta": f"{delta.delta:+.3f}", "ci": f"[{delta.ci_low:+.3f}, {delta.ci_high:+.3f}]",
            "p": "—" if delta.p_value is None else f"{delta.p_value:.3g}", "n": delta.n,
            "significant": delta.significant,
            "direction": ("better" if better else "worse") if delta.significant else "no significant change",
        })
    return rows


def diversity_panels(run: ReviewRun) -> list[str]:
    return [key for key in DIVERSITY_METRICS
            if any(key in entry.get("metrics", {}) or key in entry.get("unavailable", {})
                   for entry in run.summary["systems"].values())]
