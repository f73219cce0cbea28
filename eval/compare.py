"""Paired A/B comparison of two scored runs: `python -m eval.compare SCORES_A SCORES_B`.

Images are paired on (subject, prompt, seed): the same subject, prompt and seed given to both
systems. Per metric, the mean difference B - A over the pairs where both have a value, its 95%
paired-bootstrap interval and a sign-flip permutation p-value (eval.stats). Rows of one side that
share a key (several images per seed) are averaged first. A p-value above 0.05 or an interval that
spans 0 means the change cannot be told from noise on these pairs. Face Div is a property of a set of
images, not of one, so it is compared through the two summaries' intervals, not here.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from eval.outputs import check_scores_file, read_scores_set, read_scores_table
from eval.scoring.rows import FACE_STATUSES
from eval.stats import paired_difference

KEYS = ["subject", "prompt", "seed"]


def per_image_metrics(scores: pd.DataFrame) -> pd.DataFrame:
    """The per-image values whose means are the summary's metrics (NaN where undefined)."""
    faces = scores["status"].isin(FACE_STATUSES)
    readable = scores["status"] != "error"
    metrics = pd.DataFrame(index=scores.index)
    for column in [c for c in scores.columns if c.startswith("id_sim_")]:
        metrics[column] = scores[column].where(faces)
    metrics["face_detect_rate"] = scores["status"].ne("no_face").astype(float).where(readable)
    metrics["multi_face_rate"] = scores["status"].eq("multi_face").astype(float).where(readable)
    metrics["expr_div"] = pd.to_numeric(scores["expr_changed"].astype("Float64"), errors="coerce").where(faces)
    metrics["pose_div_pitch"] = scores["d_pitch"].abs().where(faces)
    metrics["pose_div_yaw"] = scores["d_yaw"].abs().where(faces)
    metrics["clip_t"] = scores["clip_t"].where(readable)
    metrics["clip_i"] = scores["clip_i"].where(readable)
    metrics["copy_paste_rate"] = pd.to_numeric(scores["copy_paste"].astype("Float64"), errors="coerce").where(faces)
    return metrics.astype(float)


REQUIRED = ["system", *KEYS, "status", "expr_changed", "d_pitch", "d_yaw", "clip_t", "clip_i", "copy_paste"]


def _load(scores: str | Path | pd.DataFrame, label: str) -> pd.DataFrame:
    """A scores table (a DataFrame, a scores folder, or scores.parquet / scores.csv), checked to be one
    run's and to hold the columns a comparison needs."""
    if isinstance(scores, pd.DataFrame):
        table, source = scores, f"scores {label}"
    else:
        path = Path(scores)
        if path.is_dir():
            table, _ = read_scores_set(path)
        elif not path.is_file():
            raise ValueError(f"{path}: no such scores file or folder")
        else:
            table = read_scores_table(path)
            check_scores_file(path, table)
        source = str(path)
    missing = [column for column in REQUIRED if column not in table.columns]
    if missing:
        raise ValueError(f"{source}: not a scores table (no {', '.join(missing)} column)")
    return table


def _keys(rows: pd.DataFrame) -> pd.DataFrame:
    """The pairing keys compared exactly: subject and prompt as text, seed as an integer (or missing)."""
    return pd.DataFrame({"subject": rows["subject"].astype(str), "prompt": rows["prompt"].astype(str),
                         "seed": rows["seed"].astype("Int64")}).reset_index(drop=True)


def _side(scores: pd.DataFrame, system: str | None, label: str) -> pd.DataFrame:
    systems = list(scores["system"].drop_duplicates())
    if system is None:
        if len(systems) != 1:
            raise ValueError(f"scores {label} hold several systems {systems}: choose one with --system-{label.lower()}")
        system = systems[0]
    elif system not in systems:
        raise ValueError(f"system {system!r} not in scores {label} (has {systems})")
    rows = scores[scores["system"] == system]
    keyed = pd.concat([_keys(rows), per_image_metrics(rows).reset_index(drop=True)], axis=1)
    return keyed.groupby(KEYS, dropna=False).mean()


def compare_scores(scores_a, scores_b, system_a: str | None = None, system_b: str | None = None) -> pd.DataFrame:
    """One row per metric: n_pairs, mean_a, mean_b, diff (B - A), ci_low, ci_high, p_value."""
    side_a = _side(_load(scores_a, "A"), system_a, "A")
    side_b = _side(_load(scores_b, "B"), system_b, "B")
    joined = side_a.add_suffix("_a").join(side_b.add_suffix("_b"), how="inner")
    if joined.empty:
        raise ValueError("no (subject, prompt, seed) is shared by the two runs: nothing to pair")
    rows = []
    for metric in side_a.columns.intersection(side_b.columns):
        a, b = joined[f"{metric}_a"], joined[f"{metric}_b"]
        both = a.notna() & b.notna()
        result = paired_difference(a[both], b[both])
        rows.append({"metric": metric, "n_pairs": int(both.sum()),
                     "mean_a": float(a[both].mean()) if both.any() else None,
                     "mean_b": float(b[both].mean()) if both.any() else None,
                     **({"diff": None, "ci_low": None, "ci_high": None, "p_value": None} if result is None else
                        {"diff": result.diff, "ci_low": result.ci_low, "ci_high": result.ci_high,
                         "p_value": result.p_value})})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.compare", description=__doc__.splitlines()[0])
    parser.add_argument("scores_a", type=Path, help="scores.parquet / scores.csv or a scores folder")
    parser.add_argument("scores_b", type=Path)
    parser.add_argument("--system-a", help="system to take from A (needed when A holds several)")
    parser.add_argument("--system-b", help="system to take from B")
    parser.add_argument("--out", type=Path, help="also write the table as CSV")
    args = parser.parse_args(argv)
    try:
        table = compare_scores(args.scores_a, args.scores_b, args.system_a, args.system_b)
    except (ValueError, TypeError, OSError) as error:  # OutputSetError is a ValueError
        print(f"error: {error}", file=sys.stderr)
        return 2
    with pd.option_context("display.width", 160, "display.max_columns", 20, "display.float_format", "{:.4f}".format):
        print(table.to_string(index=False))
    if args.out:
        table.to_csv(args.out, index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
