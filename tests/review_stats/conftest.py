"""Review frames built the way the review store exports them, for runs whose scores are real.

`judge_run` plays a panel of reviewers on a run's scores: the tests choose each system's likeness and
flags, and the statistics must find them again (and agree with the real ID-Sim of the demo's photos)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pandas as pd
import pytest

from eval.files import sha256_file
from eval.review.export import COLUMNS

START = datetime(2026, 12, 1, 9, 0, tzinfo=timezone.utc)
FLAG_COLUMNS = ("flag_copy", "flag_not_same", "flag_artefacts", "flag_unsafe", "flag_other")


def _frame(name: str, rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=list(COLUMNS[name]))
    for column in ("likeness", "prompt_fidelity", "quality"):
        if column in frame:
            frame[column] = frame[column].astype("Int64")
    if "created" in frame:
        frame["created"] = pd.to_datetime(frame["created"], utc=True)
    return frame


def image(line: int, system: str = "a", category: str = "identity") -> dict:
    """A scores row's identifying columns, for frames that need no real run."""
    return {"line": line, "system": system, "subject": f"s{line % 3}", "prompt": "a photo",
            "prompt_category": category, "seed": line}


def rating(row: dict, reviewer: str, scores: tuple[int | None, int | None, int | None], *, n: int = 0,
           flags: tuple[str, ...] = (), skipped: bool = False) -> dict:
    likeness, fidelity, quality = scores
    return {"rating_id": n, "run_id": "run", "line": int(row["line"]), "image_sha256": f"sha{row['line']}",
            "system": row["system"], "subject": row["subject"], "prompt": row["prompt"],
            "prompt_category": row["prompt_category"], "seed": int(row["seed"]), "reviewer": reviewer,
            "likeness": likeness, "prompt_fidelity": fidelity, "quality": quality,
            **{flag: flag in flags for flag in FLAG_COLUMNS}, "other_text": "", "skipped": skipped,
            "created": START + timedelta(seconds=n), "time_spent_s": 4.0, "presented_position": n}


def ratings_frame(rows: list[dict]) -> pd.DataFrame:
    return _frame("ratings", rows)


def vote(left: dict, right: dict, outcome: str, reviewer: str = "alice", n: int = 0) -> dict:
    winner = {"left": left["system"], "right": right["system"]}.get(outcome)
    return {"vote_id": n, "run_id": "run", "subject": left["subject"], "prompt": left["prompt"],
            "seed": int(left["seed"]), "system_left": left["system"], "system_right": right["system"],
            "line_left": int(left["line"]), "line_right": int(right["line"]), "reviewer": reviewer,
            "outcome": outcome, "winner": winner, "created": START + timedelta(seconds=n), "time_spent_s": 6.0}


def votes_frame(rows: list[dict]) -> pd.DataFrame:
    return _frame("votes", rows)


def decision(row: dict, verdict: str, seq: int, approver: str = "approver", reason: str = "",
             sha256: str | None = None) -> dict:
    return {"decision_id": seq, "run_id": "run", "line": int(row["line"]),
            "image_sha256": sha256 or f"sha{row['line']}",
            "system": row["system"], "subject": row["subject"], "approver": approver, "decision": verdict,
            "reason": reason, "created": START + timedelta(minutes=seq), "time_spent_s": 3.0, "audit_seq": seq}


def decisions_frame(rows: list[dict]) -> pd.DataFrame:
    return _frame("decisions", rows)


# What three reviewers answer (likeness, prompt fidelity, quality) per demo system: real photos of the
# person look like them, edited copies look like them but are copies, other people do not.
PANEL = {
    "ideal": {"alice": (5, 4, 4), "bob": (4, 4, 5), "carol": (5, 5, 4)},
    "copy-paste": {"alice": (5, 2, 3), "bob": (5, 2, 3), "carol": (4, 3, 3)},
    "impostor": {"alice": (1, 4, 4), "bob": (2, 4, 4), "carol": (1, 3, 4)},
}
COPY_FLAGGERS = {"copy-paste": ("alice", "bob"), "ideal": (), "impostor": ()}


def judge_demo(run) -> dict[str, pd.DataFrame]:
    """The panel's ratings of every demo image, A/B votes of each (subject, seed) pair of systems, and
    approvals of the ideal images but the last, which is rejected."""
    scores = run.scores
    ratings, votes, decisions = [], [], []
    for _, row in scores.iterrows():
        for reviewer, answers in PANEL[row["system"]].items():
            flags = ("flag_copy",) if reviewer in COPY_FLAGGERS[row["system"]] else ()
            flags += ("flag_not_same",) if row["system"] == "impostor" else ()
            ratings.append(rating(row, reviewer, answers, n=len(ratings), flags=flags))
    by_system = {system: group.to_dict("records") for system, group in scores.groupby("system")}
    for ideal, copy, impostor in zip(by_system["ideal"], by_system["copy-paste"], by_system["impostor"]):
        for reviewer in ("alice", "bob"):
            votes.append(vote(ideal, impostor, "left", reviewer, len(votes)))
            votes.append(vote(copy, ideal, "right", reviewer, len(votes)))
            votes.append(vote(impostor, copy, "both_bad" if reviewer == "alice" else "right", reviewer, len(votes)))
    ideal_rows = by_system["ideal"]
    for seq, row in enumerate(ideal_rows, start=1):
        last = seq == len(ideal_rows)
        decisions.append(decision(row, "reject" if last else "approve", seq,
                                  reason="hands look wrong" if last else "",
                                  sha256="sha256:" + sha256_file(run.path_of(row["image"]))))
    return {"ratings": ratings_frame(ratings), "votes": votes_frame(votes), "decisions": decisions_frame(decisions)}


@pytest.fixture(scope="session")
def demo_run():
    from eval.report.run import load_run

    return load_run(None, progress=False)


@pytest.fixture(scope="session")
def demo_frames(demo_run):
    return judge_demo(demo_run)


@pytest.fixture(scope="session")
def make():
    """The frame builders: make.rating(...), make.ratings([...]), make.vote, make.votes, make.decision..."""
    return SimpleNamespace(image=image, rating=rating, ratings=ratings_frame, vote=vote, votes=votes_frame,
                           decision=decision, decisions=decisions_frame)
