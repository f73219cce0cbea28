"""A run's reviews as files: `ratings.parquet`, `votes.parquet`, `decisions.parquet` (one row per action)
and `review_summary.json` (eval.review.stats), written by `python -m eval.review export RUN --out DIR`
and read back by the report (`python -m eval.report RUN --reviews DIR`)."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from eval.files import write_atomic, write_text_atomic
from eval.review.stats import ReviewStatistics, run_statistics

COLUMNS = {
    "ratings": ("rating_id", "run_id", "line", "image_sha256", "system", "subject", "prompt", "prompt_category",
                "seed", "reviewer", "likeness", "prompt_fidelity", "quality", "flag_copy", "flag_not_same",
                "flag_artefacts", "flag_unsafe", "flag_other", "other_text", "skipped", "created",
                "time_spent_s", "presented_position"),
    "votes": ("vote_id", "run_id", "subject", "prompt", "seed", "system_left", "system_right", "line_left",
              "line_right", "reviewer", "outcome", "winner", "created", "time_spent_s"),
    "decisions": ("decision_id", "run_id", "line", "image_sha256", "system", "subject", "approver", "decision",
                  "reason", "created", "time_spent_s", "audit_seq"),
}
OUTCOMES = {"left", "right", "tie", "both_bad"}
DECISIONS = {"approve", "reject"}
SUMMARY_FILE = "review_summary.json"


class ReviewsError(ValueError):
    """The reviews cannot be read: an export folder that is not one, or a review store that fails."""


def _check(name: str, frame: pd.DataFrame, source: str) -> pd.DataFrame:
    missing = [column for column in COLUMNS[name] if column not in frame.columns]
    if missing:
        raise ReviewsError(f"{source}: not a review export of {name}: missing column(s) {', '.join(missing)}")
    allowed = {"votes": ("outcome", OUTCOMES), "decisions": ("decision", DECISIONS)}.get(name)
    if allowed:
        column, values = allowed
        bad = frame.index[~frame[column].isin(values)]
        if len(bad):
            raise ReviewsError(f"{source}: row {int(bad[0])}: {column} {frame.at[bad[0], column]!r} "
                                    f"is not one of {', '.join(sorted(values))}")
    return frame


def empty_frames() -> dict[str, pd.DataFrame]:
    return {name: pd.DataFrame(columns=list(columns)) for name, columns in COLUMNS.items()}


def read_export(folder: str | Path) -> dict[str, pd.DataFrame]:
    """The three frames of an export folder, checked; a clear error naming the file otherwise."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ReviewsError(f"{folder}: no such review export folder")
    frames = {}
    for name in COLUMNS:
        path = folder / f"{name}.parquet"
        if not path.is_file():
            raise ReviewsError(f"{path}: missing from the review export")
        try:
            frame = pd.read_parquet(path)
        except (OSError, ValueError) as exc:
            raise ReviewsError(f"{path}: not a readable parquet file ({exc})") from exc
        frames[name] = _check(name, frame, str(path))
    return frames


def write_export(frames: dict[str, pd.DataFrame], out: str | Path, statistics: ReviewStatistics | None = None) -> Path:
    """Write the frames (and, given, the statistics as review_summary.json) atomically into `out`."""
    out = Path(out)
    checked = {name: _check(name, frames[name], f"{name} frame") for name in COLUMNS}  # all, before any write
    out.mkdir(parents=True, exist_ok=True)
    for name, frame in checked.items():
        write_atomic(out / f"{name}.parquet", lambda path, frame=frame: frame.to_parquet(path, index=False))
    if statistics is not None:
        write_text_atomic(out / SUMMARY_FILE, json.dumps(statistics.as_dict(), indent=1, sort_keys=True) + "\n")
    return out


def export_run(frames: dict[str, pd.DataFrame], scores: pd.DataFrame, summary: dict, out: str | Path) -> Path:
    """Write a run's review frames with their statistics against the run's scores and summary."""
    return write_export(frames, out, run_statistics(frames, scores, summary))
