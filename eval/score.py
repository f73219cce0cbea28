"""Score a run: `python -m eval.score MANIFEST [--out DIR] [--engine local|ray]`.

Writes scores.parquet / scores.csv (one row per parsed manifest line), summary.json (aggregates with
bootstrap intervals) and crops/ (the aligned face crops) to DIR, default <manifest folder>/scores.
One bad image or line never stops the run; see docs/eval.md for the metrics.
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
from PIL import Image

from eval.cache import CacheError, ResultCache, open_cache, sha256_bytes
from eval.calibrate import finite_threshold, load_thresholds
from eval.engines import ENGINES, TRANSPORTS, make_engine
from eval.faces import RECOGNIZERS, FaceAnalyzer, default_threshold
from eval.files import write_atomic
from eval.manifest import Manifest, ManifestError, read_manifest
from eval.models import REGISTER, ModelNotFound
from eval.outputs import OutputSetError, locked_out_dir, new_run_id, publish_scores_set
from eval.scoring import MetricUnavailable
from eval.scoring.analysis import CACHE_CHUNK, CachedFaceAnalysis, ImageRecord, LocalFaceEngine, default_recognizers
from eval.scoring.clip_score import ClipScorer, add_clip_columns
from eval.scoring.face_diversity import FaceLpips, face_div_sets
from eval.scoring.face_features import FaceFeatures
from eval.scoring.identity import COPY_MAX_PITCH, COPY_MAX_YAW, COPY_SIMILARITY
from eval.scoring.rows import FACE_STATUSES, manifest_rows, score_identity, typed_table
from eval.scoring.summary import metric_keys, recognizer_agreement, summarize_systems_cached


class ScoreError(ValueError):
    """The run cannot be scored at all (the message names the file and the reason)."""


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


def _write_crops(scores: pd.DataFrame, images: list[ImageRecord | None], crops_of: Callable[[list], list],
                 out_dir: Path) -> None:
    """crops/<content>.png for each scored face, read from the cache CACHE_CHUNK at a time."""
    crops_dir = out_dir / "crops"
    crops_dir.mkdir(parents=True, exist_ok=True)
    column: list[str | None] = [None] * len(scores)
    faces = [position for position, (image, status) in enumerate(zip(images, scores["status"]))
             if image is not None and status in FACE_STATUSES]
    for start in range(0, len(faces), CACHE_CHUNK):
        chunk = faces[start : start + CACHE_CHUNK]
        for position, crop in zip(chunk, crops_of([images[position] for position in chunk])):
            if crop is None:
                continue
            name = f"crops/{sha256_bytes(crop.tobytes())[:20]}.png"  # named by content: never stale
            if not (out_dir / name).exists():
                write_atomic(out_dir / name, lambda p: Image.fromarray(crop).save(p, format="PNG", compress_level=1))
            column[position] = name
    scores["face_crop"] = column


def _thresholds(recognizers: list[str], thresholds: str | Path | dict | None) -> tuple[dict[str, float], str]:
    chosen = {name: default_threshold(name) for name in recognizers}
    if thresholds is None:
        return chosen, "face-core defaults"
    try:
        loaded = thresholds if isinstance(thresholds, dict) else load_thresholds(thresholds)
        chosen.update({name: finite_threshold(value, f"the threshold of {name}")
                       for name, value in loaded.items() if name in chosen})
    except ValueError as error:
        raise ScoreError(str(error)) from None
    return chosen, "given" if isinstance(thresholds, dict) else str(thresholds)


def _read(manifest_path: Path) -> Manifest:
    try:
        manifest = read_manifest(manifest_path)
    except OSError as error:
        raise ScoreError(f"{manifest_path}: cannot read the manifest ({error.strerror or error})") from None
    for error in manifest.errors:
        print(f"{manifest.path}: {error} (skipped)", file=sys.stderr)
    if not manifest.entries and not manifest.errors:
        raise ScoreError(f"{manifest.path}: the manifest has no lines; nothing written")
    if not manifest.entries:
        raise ScoreError(f"{manifest.path}: no valid line to score ({len(manifest.errors)} malformed, "
                         "listed above); nothing written")
    return manifest


def _trained_with(manifest: Manifest) -> dict[str, list[str]]:
    """{system: recognizers its generator was trained with}, from the manifest's generator metadata."""
    found: dict[str, set[str]] = {}
    for entry in manifest.entries:
        if entry.generator and entry.generator.trained_with:
            found.setdefault(entry.system, set()).update(entry.generator.trained_with)
    return {system: sorted(names) for system, names in found.items()}


def score_manifest(manifest_path: str | Path, out_dir: str | Path | None = None, *,
                   analyzer: FaceAnalyzer | None = None, thresholds: str | Path | dict | None = None,
                   cache: str | Path | ResultCache | bool | None = None, clip_model: str | None = None,
                   progress: bool = True, engine: str | LocalFaceEngine = "local",
                   engine_options: dict | None = None) -> ScoreResult:
    """Score every valid line of the manifest and publish the outputs as one set (eval.outputs).

    `engine`: where cache misses are analysed: "local" (this process) or "ray", with `engine_options`
    as `eval.engines.ray.RayEngine` takes them (address, workers, gpus_per_worker, batch_size, transport);
    or an engine already made by `eval.engines.make_engine` (left open).

    Every option is checked before any work starts; ScoreError, OutputSetError or CacheError (each a
    one-line message naming the file) when the run cannot be scored at all."""
    manifest_path = Path(manifest_path)
    out_dir = Path(out_dir) if out_dir is not None else manifest_path.parent / "scores"
    if isinstance(engine, str):
        analyzer = analyzer or FaceAnalyzer(recognizers=default_recognizers())
    else:
        analyzer = analyzer or engine.analyzer
    chosen_thresholds, threshold_source = _thresholds(list(analyzer.recognizers), thresholds)
    manifest = _read(manifest_path)
    chosen = make_engine(engine, analyzer, **(engine_options or {})) if isinstance(engine, str) else engine
    try:
        with locked_out_dir(out_dir):
            return _score(manifest, out_dir, analyzer, open_cache(cache), clip_model, progress,
                          chosen_thresholds, threshold_source, chosen)
    finally:
        if chosen is not engine:
            chosen.close()


def _score(manifest: Manifest, out_dir: Path, analyzer: FaceAnalyzer, result_cache: ResultCache,
           clip_model: str | None, progress: bool, chosen_thresholds: dict[str, float],
           threshold_source: str, engine: LocalFaceEngine) -> ScoreResult:
    faces = CachedFaceAnalysis(analyzer, result_cache, engine)
    recognizers = faces.recognizers

    rows, image_paths, reference_paths = manifest_rows(manifest)
    records = faces.analyze([p for p in image_paths if p] + [p for refs in reference_paths for p in refs],
                            progress=progress)
    images = [records[p] if p else None for p in image_paths]
    references = [[records[p] for p in refs] for refs in reference_paths]
    for row, image, refs in zip(rows, images, references):
        if image is not None:
            score_identity(row, image, refs, recognizers)

    unavailable: dict[str, str] = {}
    model_ids = list(analyzer.model_ids)
    try:
        add_clip_columns(rows, images, references, ClipScorer(clip_model), result_cache, progress, engine.map_stage)
        model_ids.append("clip")
    except MetricUnavailable as error:
        unavailable["clip_t"] = unavailable["clip_i"] = str(error)
    scores = typed_table(rows, recognizers)
    scorers = {}
    try:
        scorers["face_div_lpips"] = FaceLpips()
        model_ids.append("lpips_alex")
    except MetricUnavailable as error:
        unavailable["face_div_lpips"] = str(error)
    try:
        scorers["face_div_features"] = FaceFeatures()
        model_ids.append("efficientnet_lite0")
    except ModelNotFound as error:
        unavailable["face_div_features"] = str(error)
    sets = face_div_sets(scores, images, faces.crops, scorers, result_cache, progress, engine.map_stage)
    _write_crops(scores, images, faces.crops, out_dir)

    summary = {
        "manifest": str(manifest.path.resolve()),
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "recognizers": recognizers,
        "thresholds": chosen_thresholds,
        "threshold_source": threshold_source,
        "trained_with": _trained_with(manifest),
        "copy_paste_rule": {"min_similarity": {k: v for k, v in COPY_SIMILARITY.items() if k in recognizers},
                            "max_abs_d_yaw": COPY_MAX_YAW, "max_abs_d_pitch": COPY_MAX_PITCH},
        "metric_keys": metric_keys(recognizers),
        "models": [REGISTER[model].as_dict() for model in dict.fromkeys(model_ids)],
        "status_counts": dict(Counter(scores["status"])),
        "manifest_errors": [{"line": e.line, "reason": e.reason} for e in manifest.errors],
        "recognizer_agreement": recognizer_agreement(scores, recognizers),
        "systems": summarize_systems_cached(result_cache, scores, sets, recognizers, unavailable),
    }
    scores, summary = publish_scores_set(out_dir, scores, summary, new_run_id())
    return ScoreResult(scores=scores, summary=summary, out_dir=out_dir, manifest_errors=manifest.errors)


def _at_least(low: float, kind: type):
    def parse(text: str):
        value = kind(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"{text}: must be at least {low}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its "invalid int value" message
    return parse


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
    scaling = parser.add_argument_group("engine", "where cache misses are analysed (docs/eval.md, Scaling out)")
    scaling.add_argument("--engine", choices=ENGINES, default="local", help="default: local (this process)")
    scaling.add_argument("--ray-address", help="auto or ray://HOST:PORT (default: start a private local cluster)")
    scaling.add_argument("--workers", type=_at_least(1, int), help="Ray actors, one FaceAnalyzer each (default 1)")
    scaling.add_argument("--gpus-per-worker", type=_at_least(0, float),
                         help="GPU fraction per actor, e.g. 0.25 (default 0)")
    scaling.add_argument("--batch-size", type=_at_least(1, int), help="images per Ray batch (default 8)")
    scaling.add_argument("--transport", choices=TRANSPORTS, help="images travel by path or by bytes "
                         "(default auto: by path when every node is this machine)")
    args = parser.parse_args(argv)
    if not args.manifest.is_file():
        parser.error(f"{args.manifest}: no such manifest file")
    ray_options = {key: value for key, value in [
        ("address", args.ray_address), ("workers", args.workers), ("gpus_per_worker", args.gpus_per_worker),
        ("batch_size", args.batch_size), ("transport", args.transport)] if value is not None}
    if args.engine == "local" and ray_options:
        parser.error("--ray-address, --workers, --gpus-per-worker, --batch-size and --transport need --engine ray")
    recognizers = [name.strip() for name in args.recognizers.split(",")] if args.recognizers else None
    if recognizers is not None and (unknown := sorted(set(recognizers) - set(RECOGNIZERS))):
        parser.error(f"--recognizers: unknown {', '.join(unknown)} (known: {', '.join(sorted(RECOGNIZERS))})")
    try:
        result = score_manifest(
            args.manifest, args.out, analyzer=FaceAnalyzer(recognizers=recognizers or default_recognizers()),
            thresholds=args.thresholds, cache=False if args.no_cache else args.cache, clip_model=args.clip,
            progress=not args.quiet, engine=args.engine, engine_options=ray_options,
        )
    except (ScoreError, OutputSetError, CacheError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
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
