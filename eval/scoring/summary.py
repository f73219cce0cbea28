"""From the per-image scores to summary.json's aggregates: per system and per system x category,
each metric's mean with a 95% bootstrap interval, or null with the reason beside it.

Denominators: the detection and multi-face rates count every readable image; ID-Sim, Expr-Div,
Pose-Div and the copy-paste rate count the images with a scored face; CLIP-T/CLIP-I every readable
image; Face Div one value per subject x prompt set with at least two faces.
"""
from __future__ import annotations

import itertools
import json
import math

import pandas as pd

from eval.cache import ResultCache, sha256_bytes
from eval.scoring.rows import FACE_STATUSES
from eval.stats import N_RESAMPLES, SEED, bootstrap_ci

SHARED_METRICS = ["face_detect_rate", "multi_face_rate", "expr_div", "pose_div_pitch", "pose_div_yaw",
                  "face_div_lpips", "face_div_features", "clip_t", "clip_i", "copy_paste_rate"]
NO_FACE = "no image with a detected face"
NO_IMAGE = "no readable image"
SUMMARY_VERSION = f"summary-v1/bootstrap-{N_RESAMPLES}-seed{SEED}"


def metric_keys(recognizers: list[str]) -> list[str]:
    return [f"id_sim_{name}" for name in recognizers] + SHARED_METRICS


def _samples(rows: pd.DataFrame, face_div: list[float], recognizers: list[str],
             face_div_features: list[float]) -> dict[str, tuple[pd.Series, str]]:
    readable = rows[rows["status"] != "error"]
    faces = rows[rows["status"].isin(FACE_STATUSES)]
    samples = {f"id_sim_{name}": (faces[f"id_sim_{name}"], NO_FACE) for name in recognizers}
    samples.update({
        "face_detect_rate": (readable["status"].ne("no_face").astype(float), NO_IMAGE),
        "multi_face_rate": (readable["status"].eq("multi_face").astype(float), NO_IMAGE),
        "expr_div": (faces["expr_changed"].dropna().astype(float), "no face with an expression on both sides"),
        "pose_div_pitch": (faces["d_pitch"].abs(), "no face with a head pose on both sides"),
        "pose_div_yaw": (faces["d_yaw"].abs(), "no face with a head pose on both sides"),
        "face_div_lpips": (pd.Series(face_div, dtype=float), "no subject x prompt set with two or more faces"),
        "face_div_features": (pd.Series(face_div_features, dtype=float), "no subject x prompt set with two or more faces"),
        "clip_t": (readable["clip_t"], NO_IMAGE),
        "clip_i": (readable["clip_i"], NO_IMAGE),
        "copy_paste_rate": (faces["copy_paste"].astype(float), NO_FACE),
    })
    return samples


def summarize_group(rows: pd.DataFrame, face_div: list[float], recognizers: list[str],
                    unavailable: dict[str, str], face_div_features: list[float] = ()) -> dict:
    """Aggregates of one group of rows; `unavailable` holds run-wide reasons (a missing model)."""
    metrics, reasons = {}, {}
    for key, (values, empty_reason) in _samples(rows, face_div, recognizers, list(face_div_features)).items():
        interval = None if key in unavailable else bootstrap_ci(pd.to_numeric(values, errors="coerce"))
        metrics[key] = None if interval is None else interval.as_dict()
        if interval is None:
            reasons[key] = unavailable.get(key, empty_reason)
    return {"n_images": int(len(rows)), "metrics": metrics, "unavailable": reasons}


def recognizer_agreement(rows: pd.DataFrame, recognizers: list[str]) -> dict:
    """Spearman rank correlation of ID-Sim between each pair of recognizers, over faces scored by both."""
    faces = rows[rows["status"].isin(FACE_STATUSES)]
    agreement = {}
    for a, b in itertools.combinations(recognizers, 2):
        pair = faces[[f"id_sim_{a}", f"id_sim_{b}"]].apply(pd.to_numeric, errors="coerce").dropna()
        if len(pair) < 3 or pair.nunique().min() < 2:
            agreement[f"{a}~{b}"] = {"spearman": None, "p_value": None, "n": int(len(pair)),
                                     "reason": "fewer than 3 faces with distinct scores"}
            continue
        rho, p_value = spearman(pair.iloc[:, 0], pair.iloc[:, 1])
        agreement[f"{a}~{b}"] = {"spearman": round(rho, 6), "p_value": p_value, "n": int(len(pair))}
    return agreement


def spearman(a: pd.Series, b: pd.Series) -> tuple[float, float]:
    """Spearman's rho and its two-sided p-value, as scipy.stats.spearmanr gives them (Pearson on average
    ranks; Student's t with n - 2 degrees of freedom), without importing scipy.stats (a second of start-up)."""
    from scipy.special import stdtr

    rho = float(a.rank().corr(b.rank()))
    n = len(a)
    if abs(rho) >= 1.0:
        return rho, 0.0
    t = rho * math.sqrt((n - 2) / (1.0 - rho * rho))
    return rho, float(2.0 * stdtr(n - 2, -abs(t)))


def summarize_systems(scores: pd.DataFrame, face_div_sets: pd.DataFrame, recognizers: list[str],
                      unavailable: dict[str, str]) -> dict:
    """`face_div_sets` has one row per subject x prompt set: system, prompt_category, face_div_lpips,
    face_div_features."""
    systems = {}
    for system in scores["system"].drop_duplicates():
        rows = scores[scores["system"] == system]
        sets = face_div_sets[face_div_sets["system"] == system]
        summary = summarize_group(rows, list(sets["face_div_lpips"]), recognizers, unavailable,
                                  list(sets["face_div_features"]))
        summary["recognizer_agreement"] = recognizer_agreement(rows, recognizers)
        summary["by_category"] = {
            category: summarize_group(
                rows[rows["prompt_category"] == category],
                list(sets.loc[sets["prompt_category"] == category, "face_div_lpips"]), recognizers, unavailable,
                list(sets.loc[sets["prompt_category"] == category, "face_div_features"]))
            for category in rows["prompt_category"].drop_duplicates()
        }
        systems[str(system)] = summary
    return systems


def summarize_systems_cached(cache: ResultCache, scores: pd.DataFrame, face_div_sets: pd.DataFrame,
                             recognizers: list[str], unavailable: dict[str, str]) -> dict:
    """`summarize_systems`, looked up by the hash of exactly its inputs (the bootstrap is deterministic)."""
    content = sha256_bytes(b"\n".join([
        scores.to_csv(index=False).encode(), face_div_sets.to_csv(index=False).encode(),
        json.dumps([recognizers, unavailable], sort_keys=True).encode(),
    ]))
    hit = cache.get(SUMMARY_VERSION, content)
    if hit is not None and isinstance(hit.get("systems"), dict):  # any other shape is a miss
        return hit["systems"]
    systems = summarize_systems(scores, face_div_sets, recognizers, unavailable)
    cache.put(SUMMARY_VERSION, content, {"systems": systems})
    return systems
