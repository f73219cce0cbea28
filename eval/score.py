"""Score a run: `python -m eval.score MANIFEST [--out DIR]`.

Writes scores.parquet / scores.csv (one row per parsed manifest line), summary.json (aggregates with
bootstrap intervals) and crops/ (the aligned face crops) to DIR, default <manifest folder>/scores.
One bad image or line never stops the run; see docs/eval.md for the metrics.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from eval.cache import ResultCache, open_cache
from eval.calibrate import load_thresholds
from eval.faces import FaceAnalyzer, default_threshold
from eval.manifest import Manifest, ManifestEntry, ManifestError, read_manifest
from eval.models import REGISTER
from eval.scoring import MetricUnavailable
from eval.scoring.analysis import CachedFaceAnalysis, ImageRecord, default_recognizers
from eval.scoring.clip_score import ClipScorer, cosine
from eval.scoring.face_diversity import FaceLpips
from eval.scoring.identity import (COPY_MAX_PITCH, COPY_MAX_YAW, COPY_SIMILARITY, id_similarities,
                                   is_copy_paste, reference_profile)
from eval.scoring.summary import metric_keys, recognizer_agreement, summarize_systems_cached

@dataclass
class ScoreResult:
    scores: pd.DataFrame
    summary: dict
    out_dir: Path
    manifest_errors: list[ManifestError] = field(default_factory=list)

    @property
    def scores_path(self) -> Path:
        return self.out_dir / "scores.parquet"

    @property
    def csv_path(self) -> Path:
        return self.out_dir / "scores.csv"

    @property
    def summary_path(self) -> Path:
        return self.out_dir / "summary.json"


def _inside(root: Path, relative: str) -> Path:
    path = (root / relative).resolve()
    if not path.is_relative_to(root.resolve()):
        raise ValueError(f"{relative} resolves outside the manifest's folder (symbolic link?)")
    return path


def _row(entry: ManifestEntry, line: int) -> dict:
    return {"line": line, "system": entry.system, "subject": entry.subject, "prompt": entry.prompt,
            "prompt_category": entry.prompt_category, "seed": entry.seed, "image": entry.image,
            "references": json.dumps(entry.references), "status": "error", "error": None, "n_faces": 0}


def _score_identity(row: dict, image: ImageRecord, references: list[ImageRecord], recognizers: list[str]) -> None:
    row["n_faces"] = image.n_faces
    if not image.readable:
        row["error"] = image.error or "cannot read image"
        return
    try:
        reference = reference_profile(references, recognizers)
    except ValueError as error:
        row["error"] = f"reference: {error}"
        return
    if not image.has_face:
        row["status"], row["error"] = "no_face", image.error or "no face detected"
        return
    row["status"] = "multi_face" if image.n_faces > 1 else "ok"
    similarities = id_similarities(image, reference)
    row.update({f"id_sim_{name}": value for name, value in similarities.items()})
    row.update(expr_label=image.expression, ref_expr_label=reference.expression,
               yaw=image.yaw, pitch=image.pitch, roll=image.roll)
    if image.expression and reference.expression:
        row["expr_changed"] = image.expression != reference.expression
    if image.yaw is not None and reference.yaw is not None:
        row["d_yaw"], row["d_pitch"] = image.yaw - reference.yaw, image.pitch - reference.pitch
    row["copy_paste"] = is_copy_paste(similarities, row.get("d_yaw"), row.get("d_pitch"))


def _clip_columns(rows: list[dict], images: list[ImageRecord | None], references: list[list[ImageRecord]],
                  scorer: ClipScorer, cache: ResultCache) -> None:
    readable = {r.sha256: r.path for r in [*images, *(x for refs in references for x in refs)] if r and r.readable}
    image_vectors = scorer.image_embeddings(readable, cache)
    text_vectors = scorer.text_embeddings([row["prompt"] for row in rows], cache)
    for row, image, refs in zip(rows, images, references):
        if image is None or image.sha256 not in image_vectors:
            continue
        vector = image_vectors[image.sha256]
        row["clip_t"] = cosine(vector, text_vectors[row["prompt"]])
        ref_vectors = [image_vectors[r.sha256] for r in refs if r.sha256 in image_vectors]
        if ref_vectors:
            row["clip_i"] = float(np.mean([cosine(vector, ref) for ref in ref_vectors]))


def _face_div_sets(scores: pd.DataFrame, images: list[ImageRecord | None], lpips: FaceLpips,
                   cache: ResultCache) -> pd.DataFrame:
    with_face = scores["status"].isin(["ok", "multi_face"]).to_numpy()
    sets = []
    for (system, subject, prompt), group in scores[with_face].groupby(["system", "subject", "prompt"], sort=False):
        crops = [images[i].aligned for i in group.index]
        value = lpips.mean_pairwise(crops, cache)
        if value is not None:
            sets.append({"system": system, "subject": subject, "prompt": prompt,
                         "prompt_category": group["prompt_category"].iloc[0], "face_div_lpips": value})
    return pd.DataFrame(sets, columns=["system", "subject", "prompt", "prompt_category", "face_div_lpips"])


def _write_crops(scores: pd.DataFrame, images: list[ImageRecord | None], out_dir: Path) -> None:
    crops_dir = out_dir / "crops"
    crops_dir.mkdir(parents=True, exist_ok=True)
    column = []
    for image, status in zip(images, scores["status"]):
        if image is None or image.aligned is None or status not in ("ok", "multi_face"):
            column.append(None)
            continue
        name = f"crops/{image.sha256[:20]}.png"
        if not (out_dir / name).exists():
            Image.fromarray(image.aligned).save(out_dir / name, compress_level=1)  # speed over size: 112x112
        column.append(name)
    scores["face_crop"] = column


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    tmp.replace(path)


def _thresholds(recognizers: list[str], thresholds: str | Path | dict | None) -> tuple[dict[str, float], str]:
    chosen = {name: default_threshold(name) for name in recognizers}
    if thresholds is None:
        return chosen, "face-core defaults"
    loaded = thresholds if isinstance(thresholds, dict) else load_thresholds(thresholds)
    chosen.update({name: float(value) for name, value in loaded.items() if name in chosen})
    return chosen, "given" if isinstance(thresholds, dict) else str(thresholds)


def score_manifest(manifest_path: str | Path, out_dir: str | Path | None = None, *,
                   analyzer: FaceAnalyzer | None = None, thresholds: str | Path | dict | None = None,
                   cache: str | Path | ResultCache | bool | None = None, clip_model: str | None = None,
                   progress: bool = True) -> ScoreResult:
    manifest: Manifest = read_manifest(manifest_path)
    out_dir = Path(out_dir) if out_dir is not None else manifest.root / "scores"
    out_dir.mkdir(parents=True, exist_ok=True)
    for error in manifest.errors:
        print(f"{manifest.path}: {error} (skipped)", file=sys.stderr)
    analyzer = analyzer or FaceAnalyzer(recognizers=default_recognizers())
    result_cache = open_cache(cache)
    faces = CachedFaceAnalysis(analyzer, result_cache)
    recognizers = faces.recognizers

    rows, image_paths, reference_paths = [], [], []
    for entry, line in zip(manifest.entries, manifest.lines):
        row = _row(entry, line)
        try:
            image_paths.append(_inside(manifest.root, entry.image))
            reference_paths.append([_inside(manifest.root, ref) for ref in entry.references])
        except ValueError as error:
            row["error"] = str(error)
            image_paths.append(None)
            reference_paths.append([])
        rows.append(row)
    wanted = [p for p in image_paths if p] + [p for refs in reference_paths for p in refs]
    records = faces.analyze(wanted, progress=progress)
    images = [records[p] if p else None for p in image_paths]
    references = [[records[p] for p in refs] for refs in reference_paths]
    for row, image, refs in tqdm(list(zip(rows, images, references)), desc="scoring", unit="img",
                                 disable=not progress):
        if image is not None:
            _score_identity(row, image, refs, recognizers)

    unavailable: dict[str, str] = {}
    model_ids = list(analyzer.model_ids)
    try:
        scorer = ClipScorer(clip_model)
        _clip_columns(rows, images, references, scorer, result_cache)
        model_ids.append("clip")
    except MetricUnavailable as error:
        unavailable["clip_t"] = unavailable["clip_i"] = str(error)

    columns = ["line", "system", "subject", "prompt", "prompt_category", "seed", "image", "references", "status",
               "error", "n_faces", *[f"id_sim_{name}" for name in recognizers], "expr_label", "ref_expr_label",
               "expr_changed", "yaw", "pitch", "roll", "d_yaw", "d_pitch", "copy_paste", "clip_t", "clip_i"]
    scores = pd.DataFrame(rows).reindex(columns=columns)
    scores["seed"] = scores["seed"].astype("Int64")
    scores["n_faces"] = scores["n_faces"].astype("Int64")
    scores["expr_changed"] = scores["expr_changed"].astype("boolean")
    scores["copy_paste"] = scores["copy_paste"].astype("boolean")
    for column in ["expr_label", "ref_expr_label", "error"]:
        scores[column] = scores[column].astype("string")
    for column in [f"id_sim_{name}" for name in recognizers] + ["yaw", "pitch", "roll", "d_yaw", "d_pitch",
                                                                "clip_t", "clip_i"]:
        scores[column] = scores[column].astype(float)

    try:
        lpips = FaceLpips()
        face_div_sets = _face_div_sets(scores, images, lpips, result_cache)
        model_ids.append("lpips_alex")
    except MetricUnavailable as error:
        unavailable["face_div_lpips"] = str(error)
        face_div_sets = pd.DataFrame(columns=["system", "subject", "prompt", "prompt_category", "face_div_lpips"])
    _write_crops(scores, images, out_dir)

    chosen_thresholds, threshold_source = _thresholds(recognizers, thresholds)
    trained_with: dict[str, list[str]] = {}
    for entry in manifest.entries:
        if entry.generator and entry.generator.trained_with:
            trained_with.setdefault(entry.system, [])
            trained_with[entry.system] = sorted(set(trained_with[entry.system]) | set(entry.generator.trained_with))
    summary = {
        "manifest": str(manifest.path.resolve()),
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "recognizers": recognizers,
        "thresholds": chosen_thresholds,
        "threshold_source": threshold_source,
        "trained_with": trained_with,
        "copy_paste_rule": {"min_similarity": {k: v for k, v in COPY_SIMILARITY.items() if k in recognizers},
                            "max_abs_d_yaw": COPY_MAX_YAW, "max_abs_d_pitch": COPY_MAX_PITCH},
        "metric_keys": metric_keys(recognizers),
        "models": [REGISTER[model].as_dict() for model in dict.fromkeys(model_ids)],
        "status_counts": dict(Counter(scores["status"])),
        "manifest_errors": [{"line": e.line, "reason": e.reason} for e in manifest.errors],
        "recognizer_agreement": recognizer_agreement(scores, recognizers),
        "systems": summarize_systems_cached(result_cache, scores, face_div_sets, recognizers, unavailable),
    }
    _atomic_write(out_dir / "scores.parquet", lambda p: scores.to_parquet(p, index=False))
    _atomic_write(out_dir / "scores.csv", lambda p: scores.to_csv(p, index=False))
    _atomic_write(out_dir / "summary.json", lambda p: p.write_text(json.dumps(summary, indent=2, allow_nan=False)))
    return ScoreResult(scores=scores, summary=summary, out_dir=out_dir, manifest_errors=manifest.errors)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.score", description=__doc__.splitlines()[0])
    parser.add_argument("manifest", type=Path)
    parser.add_argument("--out", type=Path, help="output folder (default: <manifest folder>/scores)")
    parser.add_argument("--thresholds", type=Path, help="calibration JSON from python -m eval.calibrate")
    parser.add_argument("--cache", type=Path, help="cache file (default: the user cache; $IDAVATAR_CACHE_DIR)")
    parser.add_argument("--no-cache", action="store_true", help="keep results in memory only")
    parser.add_argument("--clip", help="CLIP model directory or HF id (local files only)")
    parser.add_argument("--recognizers", help="comma-separated, e.g. sface,dlib,arcface")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if not args.manifest.is_file():
        parser.error(f"{args.manifest}: no such manifest file")
    recognizers = args.recognizers.split(",") if args.recognizers else default_recognizers()
    result = score_manifest(
        args.manifest, args.out, analyzer=FaceAnalyzer(recognizers=recognizers), thresholds=args.thresholds,
        cache=False if args.no_cache else args.cache, clip_model=args.clip, progress=not args.quiet,
    )
    for system, summary in result.summary["systems"].items():
        shown = ", ".join(f"{key} {value['mean']:.3f} [{value['ci_low']:.3f}, {value['ci_high']:.3f}]"
                          for key, value in summary["metrics"].items() if value is not None)
        print(f"{system} ({summary['n_images']} images): {shown}")
    for key, reason in next(iter(result.summary["systems"].values()), {}).get("unavailable", {}).items():
        print(f"unavailable: {key}: {reason}")
    print(f"wrote {result.scores_path}, {result.csv_path}, {result.summary_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
