"""Statistics on the human judgments of a run: what a review meeting may trust, and how it ties to the metrics.

Input is the review store's export (`ratings`, `votes`, `decisions` frames, eval.review.export) and the
run's `scores.parquet`, joined on the manifest `line`:

- mean opinion score (MOS) per system, and per system x prompt category, with 95% bootstrap CIs (eval.stats);
- flag rates with CIs;
- inter-rater agreement: Krippendorff's alpha (ordinal) per question, bootstrap CI over images;
  below 0.667 (Krippendorff's lowest acceptable level) the MOS is not reliable;
- A/B votes: win / tie / both-bad rates per pair of systems (Wilson CIs), a two-sided sign test on the
  decisive votes, and with three or more systems a Bradley-Terry ranking (choix) with bootstrap CIs;
- human vs machine: Spearman between each image's mean likeness and its ID-Sim per recognizer (bootstrap
  CI), the ROC of each recognizer against "mean likeness >= 4" with the Youden threshold beside the
  calibrated one, and how the copy-paste rule and the humans' copy flags agree.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import choix
import krippendorff
import numpy as np
import pandas as pd
from scipy.stats import binomtest, spearmanr
from sklearn.metrics import roc_auc_score, roc_curve

from eval.stats import CONFIDENCE, SEED, bootstrap_ci

QUESTIONS = ("likeness", "prompt_fidelity", "quality")
FLAGS = ("flag_copy", "flag_not_same", "flag_artefacts", "flag_unsafe", "flag_other")
SCALE = (1, 2, 3, 4, 5)
RELIABLE_ALPHA = 0.667  # Krippendorff (2004): the lowest alpha from which tentative conclusions are acceptable
SAME_PERSON_LIKENESS = 4.0  # a mean likeness at or above this is the humans' "same person"
N_RESAMPLES = 1000  # for statistics that refit per resample (alpha, Spearman, Bradley-Terry)
BT_REGULARIZATION = 0.01  # keeps a system that never won at a finite strength


def _round(value):
    if isinstance(value, float):
        return round(value, 6) if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _round(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_round(item) for item in value]
    return value


def _records(frame: pd.DataFrame) -> list[dict]:
    return [_round({key: (None if _missing(value) else _plain(value)) for key, value in row.items()})
            for row in frame.to_dict("records")]


def _missing(value) -> bool:
    return value is None or value is pd.NA or value is pd.NaT or (isinstance(value, float) and math.isnan(value))


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return value


def _percentile_ci(samples: list[float], confidence: float = CONFIDENCE) -> tuple[float | None, float | None]:
    finite = np.asarray([s for s in samples if s is not None and math.isfinite(s)], dtype=float)
    if finite.size == 0:
        return None, None
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(finite, [tail, 100 - tail])
    return float(low), float(high)


def answered(ratings: pd.DataFrame) -> pd.DataFrame:
    """The ratings with scores: a skipped rating has no opinion on the questions (its flags still count)."""
    return ratings[~ratings["skipped"].astype(bool)]


# --- MOS and flag rates --------------------------------------------------------------------------------

def mos_table(ratings: pd.DataFrame, by: tuple[str, ...] = ("system",)) -> pd.DataFrame:
    """One row per group and question: mean opinion score with its 95% bootstrap CI over the ratings."""
    rows = []
    scored = answered(ratings)
    for key, group in scored.groupby(list(by), sort=True):
        labels = dict(zip(by, key if isinstance(key, tuple) else (key,)))
        for question in QUESTIONS:
            interval = bootstrap_ci(group[question].astype("Float64").dropna().to_numpy(dtype=float))
            rows.append({**labels, "question": question, "n_images": int(group["line"].nunique()),
                         **({"mean": None, "ci_low": None, "ci_high": None, "n": 0} if interval is None
                            else interval.as_dict())})
    return pd.DataFrame(rows, columns=[*by, "question", "n_images", "mean", "ci_low", "ci_high", "n"])


def flag_rates(ratings: pd.DataFrame, by: tuple[str, ...] = ("system",)) -> pd.DataFrame:
    """One row per group and flag: the share of ratings (skipped ones included) that raised it, with CI."""
    rows = []
    for key, group in ratings.groupby(list(by), sort=True):
        labels = dict(zip(by, key if isinstance(key, tuple) else (key,)))
        for flag in FLAGS:
            interval = bootstrap_ci(group[flag].astype(bool).to_numpy(dtype=float))
            rows.append({**labels, "flag": flag, "count": int(group[flag].astype(bool).sum()),
                         **interval.as_dict()})
    return pd.DataFrame(rows, columns=[*by, "flag", "count", "mean", "ci_low", "ci_high", "n"])


# --- Inter-rater agreement -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Agreement:
    question: str
    alpha: float | None
    ci_low: float | None
    ci_high: float | None
    n_images: int  # images rated by at least two reviewers (the only ones alpha can use)
    n_reviewers: int
    reason: str = ""  # why alpha is unavailable

    @property
    def reliable(self) -> bool:
        return self.alpha is not None and self.alpha >= RELIABLE_ALPHA

    def as_dict(self) -> dict:
        return _round({**asdict(self), "reliable": self.reliable})


def reliability_matrix(ratings: pd.DataFrame, question: str) -> pd.DataFrame:
    """Reviewers x images of one question's answers; a reviewer's latest answer counts, NaN where none."""
    scored = answered(ratings).dropna(subset=[question]).sort_values("created")
    latest = scored.drop_duplicates(["reviewer", "line"], keep="last")
    return latest.pivot(index="reviewer", columns="line", values=question).astype(float)


def _alpha(matrix: np.ndarray) -> float | None:
    try:
        with np.errstate(invalid="ignore", divide="ignore"):  # one value only: 0/0, undefined
            value = float(krippendorff.alpha(reliability_data=matrix, value_domain=SCALE,
                                             level_of_measurement="ordinal"))
    except ValueError:  # fewer than two values in the data: no disagreement to measure against
        return None
    return value if math.isfinite(value) else None


def agreement(ratings: pd.DataFrame, question: str, *, n_resamples: int = N_RESAMPLES,
              seed: int = SEED) -> Agreement:
    """Krippendorff's alpha (ordinal) of one question, with a percentile-bootstrap CI over the images."""
    matrix = reliability_matrix(ratings, question)
    pairable = matrix.loc[:, matrix.notna().sum(axis=0) >= 2].to_numpy()
    n_images, n_reviewers = pairable.shape[1], int(matrix.shape[0])
    if n_reviewers < 2 or n_images == 0:
        return Agreement(question, None, None, None, n_images, n_reviewers,
                         f"no image rated by two reviewers ({n_reviewers} reviewer(s))")
    alpha = _alpha(pairable)
    if alpha is None:
        return Agreement(question, None, None, None, n_images, n_reviewers,
                         "every answer is the same value: agreement is undefined")
    rng = np.random.default_rng(seed)
    samples = [_alpha(pairable[:, rng.integers(0, n_images, n_images)]) for _ in range(n_resamples)]
    low, high = _percentile_ci(samples)
    return Agreement(question, alpha, low, high, n_images, n_reviewers)


# --- A/B votes -------------------------------------------------------------------------------------------

def _proportion(count: int, n: int) -> dict:
    if n == 0:
        return {"rate": None, "ci_low": None, "ci_high": None}
    interval = binomtest(count, n).proportion_ci(CONFIDENCE, method="wilson")
    return {"rate": count / n, "ci_low": float(interval.low), "ci_high": float(interval.high)}


def pairwise_table(votes: pd.DataFrame) -> pd.DataFrame:
    """One row per pair of systems (named in sorted order, a < b): win / tie / both-bad counts and rates
    with Wilson CIs, and the two-sided sign test of a's wins against b's (ties and both-bad left out)."""
    rows = []
    left, right = votes["system_left"].astype(str), votes["system_right"].astype(str)
    pair_a = np.where(left <= right, left, right)
    pair_b = np.where(left <= right, right, left)
    for (a, b), group in votes.groupby([pair_a, pair_b], sort=True):
        n = len(group)
        wins_a = int((group["winner"] == a).sum())
        wins_b = int((group["winner"] == b).sum())
        ties = int((group["outcome"] == "tie").sum())
        both_bad = int((group["outcome"] == "both_bad").sum())
        decisive = wins_a + wins_b
        row = {"system_a": a, "system_b": b, "n": n, "wins_a": wins_a, "wins_b": wins_b, "ties": ties,
               "both_bad": both_bad,
               "sign_test_p": binomtest(wins_a, decisive, 0.5).pvalue if decisive else None}
        for name, count in (("win_a", wins_a), ("win_b", wins_b), ("tie", ties), ("both_bad", both_bad)):
            row.update({f"{name}_{key}": value for key, value in _proportion(count, n).items()})
        rows.append(row)
    return pd.DataFrame(rows)


def pair_result(table: pd.DataFrame, system: str, other: str) -> dict | None:
    """The pairwise row of `system` against `other`, turned so that `system` is a; None without votes."""
    match = table[((table["system_a"] == system) & (table["system_b"] == other))
                  | ((table["system_a"] == other) & (table["system_b"] == system))] if len(table) else table
    if match.empty:
        return None
    row = match.iloc[0].to_dict()
    if row["system_a"] == system:
        return row
    swap = {"system_a": "system_b", "wins_a": "wins_b"} | {f"win_a_{k}": f"win_b_{k}" for k in ("rate", "ci_low", "ci_high")}
    swap |= {value: key for key, value in swap.items()}
    return {swap.get(key, key): value for key, value in row.items()}


@dataclass(frozen=True)
class SideBias:
    """Whether the reviewers favour a side of the A/B screen: the share of decisive votes for the left
    image, and the two-sided sign test of it against one half."""

    decisive: int
    left: int
    p_value: float | None

    @property
    def left_share(self) -> float | None:
        return self.left / self.decisive if self.decisive else None

    def as_dict(self) -> dict:
        return _round({**asdict(self), "left_share": self.left_share})


def side_bias(votes: pd.DataFrame) -> SideBias:
    outcome = votes["outcome"]
    left, decisive = int((outcome == "left").sum()), int(outcome.isin(["left", "right"]).sum())
    return SideBias(decisive, left, binomtest(left, decisive, 0.5).pvalue if decisive else None)


def _bt_strengths(n_items: int, comparisons: np.ndarray) -> np.ndarray | None:
    try:
        return choix.ilsr_pairwise(n_items, comparisons, alpha=BT_REGULARIZATION)
    except (RuntimeError, ValueError, np.linalg.LinAlgError):
        return None


def bradley_terry(votes: pd.DataFrame, *, n_resamples: int = N_RESAMPLES, seed: int = SEED) -> pd.DataFrame | None:
    """With three or more systems: the Bradley-Terry log-strength of each (mean 0) from the decisive votes,
    with a percentile-bootstrap CI over the votes, ranked best first. None with fewer systems."""
    systems = sorted(set(votes["system_left"].astype(str)) | set(votes["system_right"].astype(str)))
    decisive = votes.dropna(subset=["winner"])
    if len(systems) < 3 or decisive.empty:
        return None
    index = {system: i for i, system in enumerate(systems)}
    losers = np.where(decisive["winner"] == decisive["system_left"], decisive["system_right"], decisive["system_left"])
    comparisons = np.array([(index[w], index[l]) for w, l in zip(decisive["winner"], losers)])
    strengths = _bt_strengths(len(systems), comparisons)
    if strengths is None:
        return None
    rng = np.random.default_rng(seed)
    resampled = [_bt_strengths(len(systems), comparisons[rng.integers(0, len(comparisons), len(comparisons))])
                 for _ in range(n_resamples)]
    resampled = np.array([s for s in resampled if s is not None])
    rows = []
    for system, i in index.items():
        low, high = _percentile_ci(list(resampled[:, i])) if len(resampled) else (None, None)
        rows.append({"system": system, "strength": float(strengths[i]), "ci_low": low, "ci_high": high,
                     "wins": int((decisive["winner"] == system).sum()),
                     "comparisons": int(((decisive["system_left"] == system) | (decisive["system_right"] == system)).sum())})
    table = pd.DataFrame(rows).sort_values("strength", ascending=False, ignore_index=True)
    table.insert(0, "rank", range(1, len(table) + 1))
    return table


# --- Human vs machine ------------------------------------------------------------------------------------

def image_likeness(ratings: pd.DataFrame, scores: pd.DataFrame) -> pd.DataFrame:
    """One row per rated image: its mean likeness, its reviewers' copy-flag share, and the run's scores
    of that image (joined on the manifest line)."""
    scored = answered(ratings).dropna(subset=["likeness"])
    per_image = scored.groupby("line").agg(likeness=("likeness", lambda s: float(s.astype(float).mean())),
                                           n_ratings=("likeness", "size"))
    copies = ratings.groupby("line").agg(copy_flag_share=("flag_copy", lambda s: float(s.astype(bool).mean())))
    table = per_image.join(copies, how="outer").reset_index()
    return table.merge(scores, on="line", how="inner", suffixes=("", "_scores"))


@dataclass(frozen=True)
class RecognizerAgreement:
    """How one recognizer's ID-Sim agrees with the humans' likeness."""

    recognizer: str
    n: int
    spearman: float | None = None
    spearman_ci_low: float | None = None
    spearman_ci_high: float | None = None
    auc: float | None = None
    n_same: int = 0  # images whose mean likeness >= SAME_PERSON_LIKENESS
    youden_threshold: float | None = None  # the ID-Sim that best reproduces the humans' label
    youden_tpr: float | None = None
    youden_fpr: float | None = None
    calibrated_threshold: float | None = None
    calibrated_tpr: float | None = None
    calibrated_fpr: float | None = None
    fpr: list[float] = field(default_factory=list)
    tpr: list[float] = field(default_factory=list)
    reason: str = ""  # why the ROC is unavailable

    def as_dict(self) -> dict:
        return _round(asdict(self))


def _spearman(x: np.ndarray, y: np.ndarray) -> float | None:
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    return float(spearmanr(x, y).statistic)


def _rates_at(threshold: float, scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    accepted = scores >= threshold
    return float(accepted[labels].mean()), float(accepted[~labels].mean())


def recognizer_agreement(images: pd.DataFrame, recognizer: str, calibrated: float | None, *,
                         n_resamples: int = N_RESAMPLES, seed: int = SEED) -> RecognizerAgreement:
    column = f"id_sim_{recognizer}"
    both = images.dropna(subset=["likeness", column]) if column in images else images.iloc[0:0]
    n = len(both)
    if n == 0:
        return RecognizerAgreement(recognizer, 0, calibrated_threshold=calibrated,
                                   reason=f"no rated image has an {column} score")
    likeness, similarity = both["likeness"].to_numpy(float), both[column].to_numpy(float)
    rho = _spearman(likeness, similarity)
    rng = np.random.default_rng(seed)
    draws = (rng.integers(0, n, n) for _ in range(n_resamples))
    low, high = _percentile_ci([_spearman(likeness[d], similarity[d]) for d in draws]) if rho is not None else (None, None)
    labels = likeness >= SAME_PERSON_LIKENESS
    result = dict(recognizer=recognizer, n=n, spearman=rho, spearman_ci_low=low, spearman_ci_high=high,
                  n_same=int(labels.sum()), calibrated_threshold=calibrated)
    if labels.all() or not labels.any():
        kind = "all" if labels.all() else "none"
        return RecognizerAgreement(**result, reason=f"{kind} of the {n} images have mean likeness >= "
                                                    f"{SAME_PERSON_LIKENESS:g}: no ROC without both classes")
    fpr, tpr, thresholds = roc_curve(labels, similarity)
    best = int(np.argmax(tpr - fpr))
    youden = float(thresholds[best])
    result.update(auc=float(roc_auc_score(labels, similarity)), fpr=fpr.tolist(), tpr=tpr.tolist(),
                  youden_threshold=youden, youden_tpr=float(tpr[best]), youden_fpr=float(fpr[best]))
    if calibrated is not None:
        result["calibrated_tpr"], result["calibrated_fpr"] = _rates_at(calibrated, similarity, labels)
    return RecognizerAgreement(**result)


@dataclass(frozen=True)
class CopyAgreement:
    """The harness's copy-paste rule against the humans' copy flags (an image is a human copy when at
    least half of its reviewers flagged it)."""

    n: int  # images with both a rule verdict and a rating
    rule_copies: int
    human_copies: int
    both: int

    @property
    def rule_confirmed_share(self) -> float | None:
        """Of the images the rule calls copies, the share the humans flagged as copies."""
        return self.both / self.rule_copies if self.rule_copies else None

    @property
    def human_confirmed_share(self) -> float | None:
        """Of the images the humans flagged as copies, the share the rule calls copies."""
        return self.both / self.human_copies if self.human_copies else None

    def as_dict(self) -> dict:
        return _round({**asdict(self), "rule_confirmed_share": self.rule_confirmed_share,
                       "human_confirmed_share": self.human_confirmed_share})


def copy_agreement(images: pd.DataFrame) -> CopyAgreement:
    known = images.dropna(subset=["copy_paste", "copy_flag_share"]) if "copy_paste" in images else images.iloc[0:0]
    rule = known["copy_paste"].astype(bool).to_numpy()
    human = (known["copy_flag_share"] >= 0.5).to_numpy()
    return CopyAgreement(len(known), int(rule.sum()), int(human.sum()), int((rule & human).sum()))


# --- Decisions -------------------------------------------------------------------------------------------

def in_audit_order(decisions: pd.DataFrame) -> pd.DataFrame:
    """Decisions in the audit log's order; one not yet in the log (no audit_seq) comes after every logged
    one, as it will be appended, in the order it was made."""
    return decisions.sort_values(["audit_seq", "created"], na_position="last", ignore_index=True)


def latest_decisions(decisions: pd.DataFrame) -> pd.DataFrame:
    """Each image's standing decision: the last one in the audit order."""
    ordered = in_audit_order(decisions)
    return ordered.drop_duplicates("line", keep="last").sort_values("line", ignore_index=True)


# --- Everything, once ------------------------------------------------------------------------------------

@dataclass
class ReviewStatistics:
    """Every statistic of one run's reviews; the report and the gates read the same object."""

    n_ratings: int
    n_votes: int
    n_decisions: int
    reviewers: list[str]
    unmatched_lines: list[int]  # judged lines that are not in the run's scores (left out of everything)
    mos: pd.DataFrame
    mos_by_category: pd.DataFrame
    flags: pd.DataFrame
    agreement: dict[str, Agreement]
    pairwise: pd.DataFrame
    sides: SideBias
    ranking: pd.DataFrame | None
    images: pd.DataFrame  # per rated image: mean likeness, copy-flag share, its scores
    recognizers: dict[str, RecognizerAgreement]
    copies: CopyAgreement
    decisions: pd.DataFrame  # every decision, in audit order
    standing: pd.DataFrame  # each decided image's latest decision

    def mos_of(self, system: str, question: str = "likeness") -> dict | None:
        row = self.mos[(self.mos["system"] == system) & (self.mos["question"] == question)]
        return None if row.empty or _missing(row.iloc[0]["mean"]) else row.iloc[0].to_dict()

    def as_dict(self) -> dict:
        """review_summary.json: everything but the ROC curves' and images' raw points."""
        return {
            "n_ratings": self.n_ratings, "n_votes": self.n_votes, "n_decisions": self.n_decisions,
            "reviewers": self.reviewers, "unmatched_lines": self.unmatched_lines,
            "reliable_alpha": RELIABLE_ALPHA, "same_person_likeness": SAME_PERSON_LIKENESS,
            "mos": _records(self.mos), "mos_by_category": _records(self.mos_by_category),
            "flags": _records(self.flags),
            "agreement": {q: a.as_dict() for q, a in self.agreement.items()},
            "pairwise": _records(self.pairwise), "side_bias": self.sides.as_dict(),
            "ranking": None if self.ranking is None else _records(self.ranking),
            "human_vs_machine": {r: {k: v for k, v in a.as_dict().items() if k not in ("fpr", "tpr")}
                                 for r, a in self.recognizers.items()},
            "copy_paste_vs_human": self.copies.as_dict(),
            "decisions": {"approve": int((self.standing["decision"] == "approve").sum()),
                          "reject": int((self.standing["decision"] == "reject").sum())},
        }


def _in_run(frame: pd.DataFrame, scores: pd.DataFrame) -> pd.DataFrame:
    """The judged rows whose line is the same image (same system) in the run's scores."""
    systems = scores.set_index("line")["system"]
    return frame[frame["line"].map(systems) == frame["system"]]


def review_statistics(frames: dict[str, pd.DataFrame], scores: pd.DataFrame, *,
                      recognizers: list[str] | tuple[str, ...] = (), thresholds: dict[str, float] | None = None,
                      n_resamples: int = N_RESAMPLES, seed: int = SEED) -> ReviewStatistics:
    """Every statistic of the export `frames` against the run's `scores` (scores.parquet)."""
    thresholds = thresholds or {}
    ratings, votes, decisions = frames["ratings"], frames["votes"], frames["decisions"]
    judged = pd.concat([ratings[["line", "system"]], decisions[["line", "system"]]])
    unmatched = sorted(set(judged["line"]) - set(_in_run(judged, scores)["line"]))
    ratings, decisions = _in_run(ratings, scores), _in_run(decisions, scores)
    images = image_likeness(ratings, scores)
    return ReviewStatistics(
        n_ratings=len(ratings), n_votes=len(votes), n_decisions=len(decisions),
        reviewers=sorted(set(ratings["reviewer"]) | set(votes["reviewer"])),
        unmatched_lines=[int(line) for line in unmatched],
        mos=mos_table(ratings), mos_by_category=mos_table(ratings, ("system", "prompt_category")),
        flags=flag_rates(ratings),
        agreement={q: agreement(ratings, q, n_resamples=n_resamples, seed=seed) for q in QUESTIONS},
        pairwise=pairwise_table(votes), sides=side_bias(votes), ranking=bradley_terry(votes, n_resamples=n_resamples, seed=seed),
        images=images,
        recognizers={r: recognizer_agreement(images, r, thresholds.get(r), n_resamples=n_resamples, seed=seed)
                     for r in recognizers},
        copies=copy_agreement(images),
        decisions=in_audit_order(decisions),
        standing=latest_decisions(decisions),
    )


def run_statistics(frames: dict[str, pd.DataFrame], scores: pd.DataFrame, summary: dict, **options) -> ReviewStatistics:
    """`review_statistics` against a scored run: its scores.parquet and the recognizers and calibrated
    thresholds of its summary.json."""
    return review_statistics(frames, scores, recognizers=summary.get("recognizers", []),
                             thresholds=summary.get("thresholds", {}), **options)
