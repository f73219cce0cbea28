"""What a review looks at, loaded once: scores, summary, calibration, governance, the candidate system.

A run comes from a scores folder (`scores.parquet` + `summary.json`), from a manifest (scored here by
the harness) or, with no argument, from the built-in demo.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import platformdirs

from eval.files import read_json
from eval.report.governance_checks import GovernanceChecks, check_governance, load_context, not_configured

if TYPE_CHECKING:
    from eval.report.human_review import HumanReview

DEMO_CANDIDATE = "ideal"
DEMO_STAND_IN = "demo run: its outputs are real photographs standing in for generated avatars"


class RunError(ValueError):
    pass


@dataclass
class ReviewRun:
    name: str
    scores_dir: Path
    manifest_dir: Path  # image and reference paths in the scores are relative to it
    summary: dict
    scores: pd.DataFrame
    candidate: str
    calibration: dict | None = None
    calibration_source: str = ""  # the file, or why there is no calibration
    governance: GovernanceChecks | None = None
    stand_in: str | None = None  # set when the outputs are not generated images (the demo)
    human_review: HumanReview | None = None  # the reviewers' judgments, when the run has any

    @property
    def systems(self) -> list[str]:
        return list(self.summary["systems"])

    def path_of(self, relative: str) -> Path:
        return self.manifest_dir / relative

    def rows(self, system: str) -> pd.DataFrame:
        return self.scores[self.scores["system"] == system]


def default_demo_dir() -> Path:
    """Where the demo run is built: $IDAVATAR_DEMO_DIR, else the user cache."""
    override = os.environ.get("IDAVATAR_DEMO_DIR")
    return Path(override) if override else Path(platformdirs.user_cache_dir("idavatar")) / "demo"


def choose_candidate(summary: dict, requested: str | None, source: str, prefer: str | None = None) -> str:
    """The system under review: the one requested, else `prefer` when the run has it (a baseline
    compares like with like), else the only system, else the demo's 'ideal'."""
    systems = list(summary["systems"])
    if requested is not None:
        if requested not in systems:
            raise RunError(f"{source}: no system {requested!r} in the run (systems: {', '.join(systems)})")
        return requested
    if prefer in systems:
        return prefer
    if len(systems) == 1:
        return systems[0]
    if DEMO_CANDIDATE in systems:
        return DEMO_CANDIDATE
    raise RunError(f"{source}: the run has several systems ({', '.join(systems)}); "
                   "choose the candidate with --system")


def _manifest_dir(scores_dir: Path, summary: dict) -> Path:
    manifest = summary.get("manifest")
    if manifest:
        path = Path(manifest)
        for candidate in ([path] if path.is_absolute() else [scores_dir / path, scores_dir.parent / path]):
            if candidate.is_file():
                return candidate.parent
    return scores_dir.parent  # the harness's default: <manifest folder>/scores


def _run_in_folder(folder: Path) -> Path:
    """A run folder given instead of its scores: its scores/ when scored, else its manifest."""
    for candidate in (folder / "scores", folder / "manifest.jsonl"):
        if (candidate / "summary.json").is_file() or candidate.is_file():
            return candidate
    raise RunError(f"{folder}: not a scores folder (no summary.json) nor a run folder "
                   "(no scores/summary.json or manifest.jsonl)")


def _run_name(source: Path) -> str:
    """`runs/a/manifest.jsonl` and `runs/a/scores` are both the run "a"."""
    source = source.resolve()
    generic = source.stem in ("manifest", "scores") and source.parent.name
    return source.parent.name if generic else source.stem


def read_scores_dir(scores_dir: str | Path) -> tuple[pd.DataFrame, dict]:
    """The scores and summary of one scores folder, refused (RunError) unless they form one set."""
    from eval.outputs import OutputSetError, read_scores_set

    try:
        scores, summary = read_scores_set(scores_dir)
    except OutputSetError as exc:
        raise RunError(str(exc)) from None
    if not isinstance(summary.get("systems"), dict) or not summary["systems"]:
        raise RunError(f"{Path(scores_dir) / 'summary.json'}: no systems in the summary")
    return scores, summary


def _score_for_review(manifest: Path, calibration: str | Path | None, progress: bool) -> Path:
    from eval.cache import CacheError
    from eval.score import score_manifest

    try:
        return score_manifest(manifest, thresholds=calibration, progress=progress).out_dir
    except (ValueError, CacheError) as exc:  # ScoreError, OutputSetError: one line naming the file
        raise RunError(str(exc)) from None


def _calibration_used_in_scoring(summary: dict) -> Path | None:
    """The calibration file the harness took its thresholds from, when it is still there."""
    source = summary.get("threshold_source")
    if source and source.endswith(".json") and Path(source).is_file():
        return Path(source)
    return None


def _load_calibration(path: Path | None) -> tuple[dict | None, str]:
    if path is None:
        return None, "no calibration file given (--calibration)"
    try:
        return read_json(path), str(path)
    except (OSError, ValueError, RecursionError) as exc:  # ValueError: bad JSON or bad UTF-8
        raise RunError(f"{path}: cannot read the calibration ({exc})") from exc


def _governance_for(scores: pd.DataFrame, manifest_dir: Path, context, source: str) -> GovernanceChecks:
    outputs = [(system, manifest_dir / image) for system, image in zip(scores["system"], scores["image"])]
    return check_governance(context, scores["subject"].unique(), outputs, source=source)


def load_run(source: str | Path | None = None, *, system: str | None = None, prefer: str | None = None,
             calibration: str | Path | None = None, governance: str | Path | None = None,
             with_governance: bool = True, demo_dir: str | Path | None = None,
             progress: bool = True) -> ReviewRun:
    """Load (scoring if needed) the run at `source`: a scores folder, a manifest, or None for the demo.

    `with_governance=False` skips the governance checks (a baseline needs only its scores)."""
    if source is None:
        return load_demo_run(demo_dir or default_demo_dir(), system=system, prefer=prefer,
                             with_governance=with_governance, progress=progress)
    source = Path(source)
    if source.is_dir() and not (source / "summary.json").is_file():
        source = _run_in_folder(source)
    if source.is_dir():
        scores_dir = source
    elif source.is_file():
        scores_dir = _score_for_review(source, calibration, progress)
    else:
        raise RunError(f"{source}: no such manifest or scores folder")
    scores, summary = read_scores_dir(scores_dir)
    manifest_dir = _manifest_dir(scores_dir, summary)
    if calibration is None:
        calibration = _calibration_used_in_scoring(summary)
    calibration_data, calibration_source = _load_calibration(Path(calibration) if calibration else None)
    checks = None
    if with_governance:
        context, governance_source = load_context(governance)
        checks = (not_configured(governance_source) if context is None
                  else _governance_for(scores, manifest_dir, context, governance_source))
    return ReviewRun(name=_run_name(source), scores_dir=scores_dir,
                     manifest_dir=manifest_dir, summary=summary, scores=scores,
                     candidate=choose_candidate(summary, system, str(source), prefer),
                     calibration=calibration_data, calibration_source=calibration_source,
                     governance=checks)


def load_demo_run(demo_dir: str | Path, *, system: str | None = None, prefer: str | None = None,
                  with_governance: bool = True, progress: bool = True) -> ReviewRun:
    """Build (or reuse) and score the built-in demo: the bundled photos as 'ideal', 'copy-paste' and
    'impostor' systems, calibrated on the bundled identities, with the demo consent registry."""
    demo = _scored_demo(Path(demo_dir).resolve(), progress)
    return replace(demo, candidate=choose_candidate(demo.summary, system, "demo", prefer),
                   governance=demo.governance if with_governance else None)


_scored_demos: dict[Path, ReviewRun] = {}


def _scored_demo(demo_dir: Path, progress: bool) -> ReviewRun:
    # Memoised per folder: the demo is deterministic, and the report, the gates and their tests
    # share one process-wide copy instead of scoring it again.
    if demo_dir not in _scored_demos:
        _scored_demos[demo_dir] = _score_demo(demo_dir, progress)
    return _scored_demos[demo_dir]


def _score_demo(demo_dir: Path, progress: bool) -> ReviewRun:
    from eval.calibrate import calibrate_folder
    from eval.demo.build import build_demo_run, build_identity_folders
    from eval.score import score_manifest

    calibration_path = demo_dir / "calibration.json"
    if not calibration_path.is_file():
        calibrate_folder(build_identity_folders(demo_dir / "identities"), out_path=calibration_path)
    manifest = build_demo_run(demo_dir / "run")
    result = score_manifest(manifest, thresholds=calibration_path, progress=progress)
    checks = demo_governance(demo_dir / "governance", result.scores, manifest.parent)
    return ReviewRun(name="demo", scores_dir=result.out_dir, manifest_dir=manifest.parent,
                     summary=result.summary, scores=result.scores, candidate=DEMO_CANDIDATE,
                     calibration=json.loads(calibration_path.read_text()),
                     calibration_source=str(calibration_path), governance=checks, stand_in=DEMO_STAND_IN)


def demo_governance(folder: Path, scores: pd.DataFrame, manifest_dir: Path) -> GovernanceChecks:
    """The demo's own consent registry (evaluation only), audit log and provenance checks."""
    try:
        from governance.demo import create_demo_governance
    except ImportError as exc:
        return not_configured(f"the governance layer's demo is not available ({exc})")
    subjects = sorted(scores["subject"].unique())
    context = create_demo_governance(folder, subjects)
    return _governance_for(scores, manifest_dir, context, f"demo consent registry in {folder}")
