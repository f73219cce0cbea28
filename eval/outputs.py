"""A run's outputs as one set: scores.parquet, scores.csv and summary.json, published together.

The three files are written into a staging folder inside the out folder, then renamed into place
(summary.json last) under an exclusive lock on the out folder, so two runs never interleave. Every
file carries the run's id — summary.json's `run_id`, the tables' `run_id` column — and every reader
goes through `read_scores_set`, which refuses a set whose ids differ (a run killed between two
renames, a full disk, an old file left beside new ones) instead of pairing new scores with an old
summary. A failed write leaves the previous set whole.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import uuid
from pathlib import Path

import pandas as pd

from eval.files import read_json

SCORES_PARQUET, SCORES_CSV, SUMMARY_JSON = "scores.parquet", "scores.csv", "summary.json"
LOCK_FILE = ".eval-score.lock"
RUN_ID = "run_id"


class OutputSetError(ValueError):
    """The outputs cannot be written, or a folder does not hold one consistent set (names the folder)."""


def new_run_id() -> str:
    return uuid.uuid4().hex


@contextlib.contextmanager
def locked_out_dir(out_dir: Path):
    """Hold the out folder for one run; a second run into it is refused, not interleaved."""
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputSetError(f"{out_dir}: --out names a file, not a folder")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        handle = open(out_dir / LOCK_FILE, "a+b")
    except OSError as error:
        raise OutputSetError(f"{out_dir}: cannot write the output folder ({error.strerror or error})") from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno in (errno.EWOULDBLOCK, errno.EACCES):
                raise OutputSetError(f"{out_dir}: another eval.score run is writing this folder") from None
            raise
        yield


def _fsynced(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def publish_scores_set(out_dir: Path, scores: pd.DataFrame, summary: dict,
                       run_id: str) -> tuple[pd.DataFrame, dict]:
    """Write the three files as one set stamped `run_id` (call inside `locked_out_dir`); return the
    stamped scores and summary."""
    scores = scores.assign(**{RUN_ID: run_id})
    summary = {**summary, RUN_ID: run_id}
    staging = out_dir / f".staging-{run_id}"
    try:
        staging.mkdir()
        scores.to_parquet(staging / SCORES_PARQUET, index=False)
        # CRLF rows (RFC 4180): a field holding a lone "\r" or "\n" is then quoted, so it reads back as one field
        scores.to_csv(staging / SCORES_CSV, index=False, lineterminator="\r\n")
        (staging / SUMMARY_JSON).write_text(json.dumps(summary, indent=2, allow_nan=False), encoding="utf-8")
        for name in (SCORES_PARQUET, SCORES_CSV, SUMMARY_JSON):
            _fsynced(staging / name)
        for name in (SCORES_PARQUET, SCORES_CSV, SUMMARY_JSON):  # the summary last: it names the set
            os.replace(staging / name, out_dir / name)
    except OSError as error:
        raise OutputSetError(f"{out_dir}: cannot write the scores ({error.strerror or error}); "
                             "the previous outputs are untouched") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return scores, summary


def _run_ids(scores: pd.DataFrame, path: Path) -> set[str]:
    if RUN_ID not in scores.columns:
        raise OutputSetError(f"{path}: no {RUN_ID} column (not written by this version of eval.score); rescore the run")
    return set(scores[RUN_ID].astype(str).unique())


def _file_run_ids(path: Path) -> set[str]:
    """The run ids in one table, reading only that column."""
    try:
        if path.suffix == ".parquet":
            column = pd.read_parquet(path, columns=[RUN_ID])
        else:
            column = pd.read_csv(path, usecols=[RUN_ID], dtype=str, keep_default_na=False)
    except Exception as error:  # a missing column, a corrupt file: pandas and pyarrow raise many kinds
        raise OutputSetError(f"{path}: cannot read its {RUN_ID} column ({type(error).__name__}: {error})") from None
    return set(column[RUN_ID].unique())


def read_summary(folder: Path) -> dict:
    path = folder / SUMMARY_JSON
    try:
        summary = read_json(path)
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as error:
        raise OutputSetError(f"{path}: cannot read the summary ({type(error).__name__}: {error})") from None
    if not isinstance(summary, dict):
        raise OutputSetError(f"{path}: not a summary (a JSON object)")
    return summary


def read_scores_table(path: Path) -> pd.DataFrame:
    """scores.parquet or scores.csv, the CSV's text read as text exactly (`NA`, `null`, `1` stay strings)."""
    from eval.scoring.rows import read_scores_csv

    try:
        return pd.read_parquet(path) if path.suffix == ".parquet" else read_scores_csv(path)
    except (OSError, ValueError, TypeError, KeyError, UnicodeDecodeError) as error:
        raise OutputSetError(f"{path}: cannot read the scores ({type(error).__name__}: {error})") from None
    except Exception as error:  # pyarrow's own errors for a corrupt file (ArrowInvalid is a ValueError; others are not)
        if type(error).__module__.startswith("pyarrow"):
            raise OutputSetError(f"{path}: cannot read the scores ({type(error).__name__}: {error})") from None
        raise


def check_scores_file(path: Path, scores: pd.DataFrame) -> None:
    """A scores file alone: one run id throughout; and the same as its folder's summary, when one is there."""
    ids = _run_ids(scores, path)
    if len(ids) > 1:
        raise OutputSetError(f"{path}: rows of {len(ids)} different runs in one file")
    if (path.parent / SUMMARY_JSON).is_file():
        summary_id = read_summary(path.parent).get(RUN_ID)
        if ids and summary_id not in ids:
            raise OutputSetError(f"{path.parent}: torn output set: {path.name} is from run {min(ids)} but "
                                 f"{SUMMARY_JSON} from run {summary_id}; rescore the run")


def read_scores_set(folder: str | Path) -> tuple[pd.DataFrame, dict]:
    """(scores, summary) of a scores folder, refused unless every file present is from the same run."""
    folder = Path(folder)
    if not (folder / SUMMARY_JSON).is_file():
        raise OutputSetError(f"{folder}: not a scores folder (no {SUMMARY_JSON})")
    summary = read_summary(folder)
    run_id = summary.get(RUN_ID)
    if not isinstance(run_id, str):
        raise OutputSetError(f"{folder / SUMMARY_JSON}: no {RUN_ID} (not written by this version of eval.score); "
                             "rescore the run")
    tables = [folder / name for name in (SCORES_PARQUET, SCORES_CSV) if (folder / name).is_file()]
    if not tables:
        raise OutputSetError(f"{folder}: no {SCORES_PARQUET} or {SCORES_CSV} beside {SUMMARY_JSON}")
    scores = read_scores_table(tables[0])
    for path in tables:
        ids = _run_ids(scores, path) if path == tables[0] else _file_run_ids(path)
        if ids and ids != {run_id}:
            raise OutputSetError(f"{folder}: torn output set: {path.name} is from run {', '.join(sorted(ids))} but "
                                 f"{SUMMARY_JSON} from run {run_id}; rescore the run")
    return scores, summary
