"""eval.review.stats on frames shaped like the review store's export, and on the demo run's real scores."""
from __future__ import annotations

from fractions import Fraction

import krippendorff
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import binomtest

from eval.review import stats

# Krippendorff, "Computing Krippendorff's Alpha-Reliability" (2011), the reliability data matrix of
# section C (4 observers, 12 units, values 1-5; "." = missing), with the alphas the note derives.
NA = np.nan
PAPER_MATRIX = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, NA, NA, NA],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, NA, 3],
    [NA, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, NA],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, NA],
]
PAPER_ALPHA = {"nominal": 0.743, "ordinal": 0.815, "interval": 0.849, "ratio": 0.797}


def paper_ratings(make) -> pd.DataFrame:
    rows = []
    for observer, values in zip("ABCD", PAPER_MATRIX):
        for unit, value in enumerate(values, start=1):
            if not np.isnan(value):
                rows.append(make.rating(make.image(unit), observer, (int(value), 3, 3), n=len(rows)))
    return make.ratings(rows)


@pytest.mark.parametrize("level", PAPER_ALPHA)
def test_the_krippendorff_package_reproduces_the_papers_worked_example(level):
    assert round(krippendorff.alpha(reliability_data=PAPER_MATRIX, level_of_measurement=level), 3) == PAPER_ALPHA[level]


def test_the_papers_nominal_and_interval_alphas_exactly():
    # nominal: 1 - (n-1)(n - sum o_cc) / (n^2 - sum n_c^2) with n = 40 pairable values -> 113/152
    nominal = krippendorff.alpha(reliability_data=PAPER_MATRIX, level_of_measurement="nominal")
    interval = krippendorff.alpha(reliability_data=PAPER_MATRIX, level_of_measurement="interval")
    assert Fraction(nominal).limit_denominator(10_000) == Fraction(113, 152)
    assert Fraction(interval).limit_denominator(10_000) == Fraction(951, 1120)
    assert nominal == pytest.approx(113 / 152, abs=1e-12) and interval == pytest.approx(951 / 1120, abs=1e-12)


def test_agreement_on_ratings_frames_gives_the_papers_ordinal_alpha(make):
    result = stats.agreement(paper_ratings(make), "likeness", n_resamples=200)
    assert round(result.alpha, 3) == 0.815
    assert result.alpha == pytest.approx(krippendorff.alpha(reliability_data=PAPER_MATRIX,
                                                            level_of_measurement="ordinal"), abs=1e-12)
    assert result.n_images == 11 and result.n_reviewers == 4  # unit 12 has one value: not pairable
    assert result.ci_low <= result.alpha <= result.ci_high
    assert result.reliable


def test_a_reviewers_latest_answer_is_the_one_that_counts(make):
    frame = make.ratings([make.rating(make.image(1), "A", (1, 3, 3), n=0), make.rating(make.image(1), "A", (5, 3, 3), n=1),
                           make.rating(make.image(1), "B", (5, 3, 3), n=2)])
    matrix = stats.reliability_matrix(frame, "likeness")
    assert matrix.loc["A", 1] == 5


def test_agreement_is_unavailable_with_one_reviewer_or_no_spread(make):
    one = make.ratings([make.rating(make.image(i), "A", (i % 5 + 1, 3, 3), n=i) for i in range(6)])
    assert stats.agreement(one, "likeness").alpha is None
    assert "1 reviewer" in stats.agreement(one, "likeness").reason
    same = make.ratings([make.rating(make.image(i), r, (4, 3, 3), n=i) for i in range(4) for r in "AB"])
    result = stats.agreement(same, "likeness")
    assert result.alpha is None and not result.reliable and "same value" in result.reason


def test_disagreeing_reviewers_are_not_reliable(make):
    frame = make.ratings([make.rating(make.image(i), r, ((i + (3 if r == "B" else 0)) % 5 + 1, 3, 3), n=i)
                           for i in range(20) for r in "AB"])
    result = stats.agreement(frame, "likeness", n_resamples=200)
    assert result.alpha < stats.RELIABLE_ALPHA and not result.reliable


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(1, 5), min_size=3, max_size=15).filter(lambda v: len(set(v)) > 1),
       st.integers(2, 4))
def test_reviewers_who_always_agree_have_alpha_one(make, values, n_reviewers):
    frame = make.ratings([make.rating(make.image(i), f"r{k}", (v, 3, 3), n=i * 10 + k)
                           for i, v in enumerate(values) for k in range(n_reviewers)])
    result = stats.agreement(frame, "likeness", n_resamples=20)
    assert result.alpha == pytest.approx(1.0)


def test_mos_leaves_out_skipped_ratings_and_groups_by_category(make):
    frame = make.ratings([
        make.rating(make.image(1, "a", "identity"), "A", (5, 4, 3), n=0),
        make.rating(make.image(2, "a", "style"), "A", (3, 2, 1), n=1),
        make.rating(make.image(2, "a", "style"), "B", (None, None, None), n=2, skipped=True, flags=("flag_unsafe",)),
        make.rating(make.image(3, "b", "identity"), "A", (1, 1, 1), n=3),
    ])
    mos = stats.mos_table(frame).set_index(["system", "question"])
    assert mos.loc[("a", "likeness"), "mean"] == 4.0 and mos.loc[("a", "likeness"), "n"] == 2
    assert mos.loc[("a", "quality"), "mean"] == 2.0
    assert mos.loc[("b", "likeness"), "ci_low"] == mos.loc[("b", "likeness"), "ci_high"] == 1.0
    by_category = stats.mos_table(frame, ("system", "prompt_category")).set_index(["system", "prompt_category", "question"])
    assert by_category.loc[("a", "style", "likeness"), "mean"] == 3.0
    flags = stats.flag_rates(frame).set_index(["system", "flag"])
    assert flags.loc[("a", "flag_unsafe"), "count"] == 1  # a skipped rating's flag still counts
    assert flags.loc[("a", "flag_unsafe"), "mean"] == pytest.approx(1 / 3)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(1, 5), min_size=1, max_size=30))
def test_mos_is_the_mean_inside_its_interval(make, values):
    frame = make.ratings([make.rating(make.image(i), "A", (v, v, v), n=i) for i, v in enumerate(values)])
    entry = stats.mos_table(frame).set_index("question").loc["likeness"]
    assert entry["mean"] == pytest.approx(np.mean(values))
    assert 1 <= entry["ci_low"] <= entry["mean"] <= entry["ci_high"] <= 5


def test_pairwise_rates_and_the_sign_test(make):
    a, b = make.image(1, "a"), make.image(2, "b")
    outcomes = ["left"] * 9 + ["right"] + ["tie"] * 3 + ["both_bad"] * 2
    frame = make.votes([make.vote(a, b, o, n=i) if i % 2 else make.vote(b, a, {"left": "right", "right": "left"}.get(o, o), n=i)
                         for i, o in enumerate(outcomes)])
    table = stats.pairwise_table(frame).iloc[0]
    assert (table["system_a"], table["system_b"], table["n"]) == ("a", "b", 15)
    assert (table["wins_a"], table["wins_b"], table["ties"], table["both_bad"]) == (9, 1, 3, 2)
    assert table["sign_test_p"] == pytest.approx(22 / 1024)  # two-sided, 9 of 10 decisive votes
    assert table["win_a_rate"] == pytest.approx(9 / 15)
    wilson = binomtest(9, 15).proportion_ci(0.95, method="wilson")
    assert (table["win_a_ci_low"], table["win_a_ci_high"]) == pytest.approx((wilson.low, wilson.high))
    turned = stats.pair_result(stats.pairwise_table(frame), "b", "a")
    assert (turned["system_a"], turned["wins_a"], turned["wins_b"]) == ("b", 1, 9)
    assert turned["win_a_rate"] == pytest.approx(1 / 15)
    assert stats.pair_result(stats.pairwise_table(frame), "a", "c") is None


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abc"), st.sampled_from("abc"),
                          st.sampled_from(["left", "right", "tie", "both_bad"])), min_size=1, max_size=40)
       .map(lambda votes: [v for v in votes if v[0] != v[1]]).filter(bool))
def test_pairwise_counts_add_up(make, raw):
    frame = make.votes([make.vote(make.image(i, left), make.image(i, right), outcome, n=i) for i, (left, right, outcome) in enumerate(raw)])
    table = stats.pairwise_table(frame)
    assert table["n"].sum() == len(raw)
    assert ((table["wins_a"] + table["wins_b"] + table["ties"] + table["both_bad"]) == table["n"]).all()
    assert (table["system_a"] < table["system_b"]).all()


def test_bradley_terry_ranks_a_consistent_order_and_needs_three_systems(make):
    a, b, c = make.image(1, "a"), make.image(2, "b"), make.image(3, "c")
    votes = [make.vote(a, b, "left", n=0)] * 8 + [make.vote(b, a, "left")] * 2 + [make.vote(b, c, "left")] * 8 + \
            [make.vote(c, b, "left")] * 2 + [make.vote(a, c, "left")] * 9 + [make.vote(c, a, "left")] + [make.vote(a, c, "tie")] * 3
    ranking = stats.bradley_terry(make.votes(votes), n_resamples=200)
    assert list(ranking["system"]) == ["a", "b", "c"] and list(ranking["rank"]) == [1, 2, 3]
    assert ranking["strength"].sum() == pytest.approx(0, abs=1e-6)
    assert (ranking["ci_low"] <= ranking["strength"]).all() and (ranking["strength"] <= ranking["ci_high"]).all()
    assert ranking.set_index("system").loc["a", "wins"] == 17  # ties are not decisive
    assert stats.bradley_terry(make.votes([make.vote(a, b, "left")] * 5)) is None


def test_human_likeness_against_the_real_id_sim_of_the_demo(demo_run, demo_frames):
    result = stats.run_statistics(demo_frames, demo_run.scores, demo_run.summary, n_resamples=300)
    assert result.unmatched_lines == [] and result.n_ratings == 3 * len(demo_run.scores)
    for recognizer in demo_run.summary["recognizers"]:
        agreement = result.recognizers[recognizer]
        similarity = demo_run.scores.set_index("line")[f"id_sim_{recognizer}"]
        same_lines = result.images.loc[result.images["likeness"] >= 4, "line"]
        assert agreement.n == len(demo_run.scores) and agreement.n_same == len(same_lines) == 17
        assert agreement.spearman > 0.7 and agreement.spearman_ci_low <= agreement.spearman <= agreement.spearman_ci_high
        # the real photos of other people all score below every photo of the person: a perfect ROC,
        # whose Youden point is the lowest same-person ID-Sim; the calibrated threshold sits below it
        assert agreement.auc == 1.0
        assert agreement.youden_threshold == pytest.approx(similarity[same_lines].min())
        assert (agreement.youden_tpr, agreement.youden_fpr) == (1.0, 0.0)
        assert agreement.calibrated_threshold == demo_run.summary["thresholds"][recognizer]
        assert (agreement.calibrated_tpr, agreement.calibrated_fpr) == (1.0, 0.0)


def test_copy_paste_rule_against_the_humans_copy_flags_on_the_demo(demo_run, demo_frames):
    ratings = demo_frames["ratings"].copy()
    ideal_line = int(demo_run.rows("ideal")["line"].iloc[0])
    ratings.loc[ratings["line"] == ideal_line, "flag_copy"] = True  # the humans also call one real photo a copy
    frames = {**demo_frames, "ratings": ratings}
    copies = stats.review_statistics(frames, demo_run.scores, n_resamples=10).copies
    rule = int(demo_run.scores["copy_paste"].sum())
    assert (copies.n, copies.rule_copies, copies.human_copies, copies.both) == (29, rule, rule + 1, rule)
    assert copies.rule_confirmed_share == 1.0
    assert copies.human_confirmed_share == pytest.approx(rule / (rule + 1))


def test_the_demo_panel_ranks_real_photos_first_and_its_likeness_is_reliable(demo_run, demo_frames):
    result = stats.review_statistics(demo_frames, demo_run.scores, n_resamples=200)
    assert list(result.ranking["system"]) == ["ideal", "copy-paste", "impostor"]
    assert result.agreement["likeness"].reliable
    assert result.mos_of("impostor")["mean"] == pytest.approx(4 / 3)
    pair = stats.pair_result(result.pairwise, "ideal", "impostor")
    assert pair["wins_a"] == 10 and pair["sign_test_p"] == pytest.approx(2 / 1024)


def test_judgments_of_lines_not_in_the_run_are_left_out_and_named(make, demo_run, demo_frames):
    ratings = demo_frames["ratings"]
    stranger = make.rating(make.image(999, "ideal"), "alice", (1, 1, 1), n=1000)
    wrong_system = make.rating({**make.image(1), "system": "impostor"}, "alice", (1, 1, 1), n=1001)
    frames = {**demo_frames, "ratings": pd.concat([ratings, make.ratings([stranger, wrong_system])], ignore_index=True)}
    result = stats.review_statistics(frames, demo_run.scores, n_resamples=10)
    assert result.unmatched_lines == [999] and result.n_ratings == len(ratings)
    assert result.mos_of("ideal") == stats.review_statistics(demo_frames, demo_run.scores, n_resamples=10).mos_of("ideal")


def test_the_standing_decision_is_the_last_in_audit_order(make):
    image = make.image(4, "a")
    frame = make.decisions([make.decision(image, "approve", 3), make.decision(image, "reject", 7, reason="extra finger"),
                             make.decision(make.image(5, "a"), "approve", 5)])
    standing = stats.latest_decisions(frame).set_index("line")
    assert standing.loc[4, "decision"] == "reject" and standing.loc[4, "reason"] == "extra finger"
    assert standing.loc[5, "decision"] == "approve"


def test_a_decision_not_yet_in_the_audit_log_comes_after_the_logged_ones(make):
    image = make.image(4, "a")
    frame = make.decisions([decision | {"audit_seq": seq} for decision, seq in
                            ((make.decision(image, "reject", 9), None), (make.decision(image, "approve", 3), 3))])
    frame["audit_seq"] = frame["audit_seq"].astype("Int64")
    assert stats.latest_decisions(frame).iloc[0]["decision"] == "reject"


def as_the_store_types_them(frame: pd.DataFrame) -> pd.DataFrame:
    """Text and id columns as plain objects, as the review store's export_frames leaves them."""
    kept = {"likeness", "prompt_fidelity", "quality", "created", "time_spent_s", *stats.FLAGS, "skipped"}
    return frame.astype({column: object for column in frame.columns if column not in kept})


def test_object_typed_frames_give_the_same_statistics(demo_run, demo_frames):
    typed = {name: as_the_store_types_them(frame) for name, frame in demo_frames.items()}
    assert str(typed["votes"]["line_left"].dtype) == "object"
    first = stats.run_statistics(demo_frames, demo_run.scores, demo_run.summary, n_resamples=50)
    second = stats.run_statistics(typed, demo_run.scores, demo_run.summary, n_resamples=50)
    assert first.as_dict() == second.as_dict()


def test_a_recognizer_without_scores_or_without_both_classes_has_no_roc(make):
    frame = make.ratings([make.rating(make.image(i), r, (5 if i < 3 else 4, 3, 3), n=i * 2 + k)
                          for i in range(5) for k, r in enumerate("AB")])
    scores = pd.DataFrame({"line": range(5), "system": "a", "id_sim_sface": [0.9, 0.8, 0.7, 0.6, 0.5],
                           "copy_paste": False})
    result = stats.review_statistics({"ratings": frame, "votes": make.votes([]), "decisions": make.decisions([])},
                                     scores, recognizers=["sface", "dlib"], thresholds={"sface": 0.4}, n_resamples=50)
    sface, dlib = result.recognizers["sface"], result.recognizers["dlib"]
    assert sface.spearman == pytest.approx(np.sqrt(3) / 2)  # ranks (4, 4, 4, 1.5, 1.5) against (5, 4, 3, 2, 1)
    assert sface.auc is None and "all of the 5 images have mean likeness >= 4" in sface.reason
    assert sface.calibrated_threshold == 0.4
    assert dlib.n == 0 and "no rated image has an id_sim_dlib score" in dlib.reason


def test_side_bias_of_the_ab_screen(make):
    a, b = make.image(1, "a"), make.image(2, "b")
    frame = make.votes([make.vote(a, b, "left", n=i) for i in range(9)] + [make.vote(b, a, "right", n=9),
                                                                           make.vote(a, b, "tie", n=10)])
    bias = stats.side_bias(frame)
    assert (bias.decisive, bias.left, bias.left_share) == (10, 9, 0.9)
    assert bias.p_value == pytest.approx(22 / 1024)
    assert stats.side_bias(make.votes([])).p_value is None
