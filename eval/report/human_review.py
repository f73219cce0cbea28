"""The human review of a run, as the report and the gates see it: read from the review app's store (beside
the governance workspace) or from an export folder (`--reviews DIR`, written by `python -m eval.review
export`), its statistics computed once (eval.review.stats)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from eval.report.sections import Cell, MetricTable
from eval.review.export import ReviewsError, read_export
from eval.review.stats import FLAGS, QUESTIONS, ReviewStatistics, pair_result, run_statistics
from eval.review.store import workspace_store
from governance.database import StoreUnavailable, display, is_url

QUESTION_LABELS = {"likeness": "Likeness", "prompt_fidelity": "Prompt fidelity", "quality": "Quality"}
FLAG_LABELS = {"flag_copy": "copy of the reference", "flag_not_same": "not the same person",
               "flag_artefacts": "artefacts", "flag_unsafe": "unsafe", "flag_other": "other"}


@dataclass(frozen=True)
class HumanReview:
    source: str  # where the reviews came from, or why there are none
    statistics: ReviewStatistics | None = None

    @property
    def available(self) -> bool:
        s = self.statistics
        return s is not None and (s.n_ratings + s.n_votes + s.n_decisions) > 0

    @property
    def missing_reason(self) -> str:
        """Why there is nothing to show (when not available)."""
        return self.source if self.statistics is None else f"no reviews of this run in the {self.source}"


def review_store_url(governance: str | Path | None) -> str | Path | None:
    """The store the review app writes for this governance workspace (``workspace_store``: --governance,
    $GOVERNANCE_CONFIG, else ./governance.toml); None when it is a SQLite file that does not exist."""
    location = workspace_store(Path(governance or os.environ.get("GOVERNANCE_CONFIG") or "governance.toml"))
    return location if is_url(location) or Path(location).is_file() else None


def _store_frames(url: str, run_id: str) -> dict[str, pd.DataFrame]:
    from sqlalchemy.exc import SQLAlchemyError

    from eval.review.store import ReviewStore, StoreError

    try:
        store = ReviewStore(url)
        try:
            return store.export_frames(run_id=run_id)
        finally:
            store.close()
    except (StoreError, StoreUnavailable, SQLAlchemyError) as exc:
        raise ReviewsError(f"{url}: cannot read the review store ({type(exc).__name__}: {exc})") from exc


def load_human_review(reviews: str | Path | None, run_id: str, scores: pd.DataFrame, summary: dict,
                      governance: str | Path | None = None) -> HumanReview:
    """The reviews of run `run_id` judged against its scores: from the export folder `reviews` when
    given, else from the review store of the governance workspace. ReviewsError when either is unreadable."""
    if reviews is not None:
        return HumanReview(f"review export {reviews}", run_statistics(read_export(reviews), scores, summary))
    url = review_store_url(governance)
    if url is None:
        return HumanReview("no reviews of this run (no review store beside the governance workspace; "
                           "--reviews DIR reads an export)")
    frames = _store_frames(url, run_id)
    return HumanReview(f"review store {display(url)}, run {run_id}",
                       run_statistics(frames, scores, summary))


def _interval_cell(entry: dict | None, digits: int = 2, note: str = "") -> Cell:
    if entry is None or entry.get("mean") is None or pd.isna(entry["mean"]):
        return Cell("—", note=note or "no rating")
    ci = f"[{entry['ci_low']:.{digits}f}, {entry['ci_high']:.{digits}f}]"
    return Cell(f"{entry['mean']:.{digits}f}", ci, note or f"n = {entry['n']}")


def mos_tables(statistics: ReviewStatistics) -> tuple[MetricTable, dict[str, MetricTable]]:
    """MOS per system, and per system x prompt category (one table per system)."""
    columns = [QUESTION_LABELS[q] for q in QUESTIONS]

    def rows(frame: pd.DataFrame, label: str) -> list:
        out = []
        for key, group in frame.groupby(label, sort=True):
            by_question = group.set_index("question")
            cells = [_interval_cell(by_question.loc[q].to_dict() if q in by_question.index else None)
                     for q in QUESTIONS]
            out.append((str(key), int(group["n_images"].max()), cells))
        return out

    per_category = {str(system): MetricTable(columns, rows(group, "prompt_category"))
                    for system, group in statistics.mos_by_category.groupby("system", sort=True)}
    return MetricTable(columns, rows(statistics.mos, "system")), per_category


def flag_table(statistics: ReviewStatistics) -> MetricTable:
    rows = []
    for system, group in statistics.flags.groupby("system", sort=True):
        by_flag = group.set_index("flag")
        cells = [_interval_cell(by_flag.loc[f].to_dict(), 2, f"{by_flag.loc[f, 'count']} of {by_flag.loc[f, 'n']}")
                 for f in FLAGS]
        rows.append((str(system), int(group["n"].max()), cells))
    return MetricTable([FLAG_LABELS[f] for f in FLAGS], rows)


def ab_matrix(statistics: ReviewStatistics) -> tuple[list[str], list[tuple[str, list[dict | None]]]]:
    """Systems, and per row system its result against each column system (None on the diagonal or
    without votes): wins, losses, ties, both-bad, win rate with CI, sign-test p."""
    table = statistics.pairwise
    if table.empty:
        return [], []
    systems = sorted(set(table["system_a"]) | set(table["system_b"]))
    return systems, [(row, [None if row == column else pair_result(table, row, column) for column in systems])
                     for row in systems]


def decision_rows(statistics: ReviewStatistics, run_rows: pd.DataFrame) -> list[dict]:
    """Every decision in audit order: who, when, which image, what, why, and whether it still stands."""
    images = run_rows.set_index("line")["image"]
    standing = set(statistics.standing["decision_id"])
    return [{"seq": row["audit_seq"], "approver": row["approver"],
             "when": pd.Timestamp(row["created"]).strftime("%Y-%m-%d %H:%M UTC"),
             "image": Path(str(images.get(row["line"], f"line {row['line']}"))).name, "system": row["system"],
             "subject": row["subject"], "decision": row["decision"], "reason": row["reason"] or "",
             "standing": row["decision_id"] in standing}
            for row in statistics.decisions.to_dict("records")]


def human_review_view(human: HumanReview | None, scores: pd.DataFrame) -> dict:
    """The template's data for the Human review section."""
    if human is None or not human.available:
        return {"available": False, "source": human.missing_reason if human else "no reviews of this run"}
    from eval.report.human_review_plot import human_roc, likeness_scatter

    statistics = human.statistics
    mos, mos_by_category = mos_tables(statistics)
    systems, matrix = ab_matrix(statistics)
    return {
        "available": True, "source": human.source, "stats": statistics,
        "mos": mos, "mos_by_category": mos_by_category, "flags": flag_table(statistics),
        "agreement": [statistics.agreement[q] for q in QUESTIONS], "question_labels": QUESTION_LABELS,
        "ab_systems": systems, "ab_matrix": matrix,
        "ranking": [] if statistics.ranking is None else statistics.ranking.to_dict("records"),
        "recognizers": list(statistics.recognizers.values()),
        "scatter": likeness_scatter(statistics.images, statistics.recognizers),
        "roc": human_roc(statistics.recognizers),
        "copies": statistics.copies, "decisions": decision_rows(statistics, scores),
    }
