import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from eval.stats import bootstrap_ci, paired_difference, sign_flip_p_value


def test_interval_covers_the_true_mean_at_about_the_nominal_rate():
    rng = np.random.default_rng(1)
    covered = 0
    for trial in range(200):
        sample = rng.normal(loc=0.5, scale=0.2, size=40)
        interval = bootstrap_ci(sample, n_resamples=1000, seed=trial)
        covered += interval.ci_low <= 0.5 <= interval.ci_high
    assert 0.88 <= covered / 200 <= 0.99


def test_same_input_gives_the_same_interval_and_nans_are_dropped():
    values = [0.1, 0.4, np.nan, 0.9, 0.3]
    first, second = bootstrap_ci(values), bootstrap_ci(values)
    assert first == second
    assert first.n == 4
    assert first.mean == pytest.approx(np.mean([0.1, 0.4, 0.9, 0.3]))


def test_no_values_gives_none():
    assert bootstrap_ci([]) is None
    assert bootstrap_ci([np.nan]) is None
    assert paired_difference([np.nan], [1.0]) is None


@given(st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=1, max_size=30))
@settings(max_examples=60, deadline=None)
def test_interval_contains_the_mean_and_lies_within_the_data(values):
    interval = bootstrap_ci(values, n_resamples=200)
    tol = 1e-9 * max(1.0, max(abs(v) for v in values))
    assert min(values) - tol <= interval.ci_low <= interval.mean <= interval.ci_high <= max(values) + tol


def test_exact_sign_flip_p_value_matches_hand_count():
    # 3 positive differences of 1: only the all-positive and all-negative patterns reach |mean| = 1
    assert sign_flip_p_value([1.0, 1.0, 1.0]) == pytest.approx(2 / 8)


def test_paired_difference_tells_a_real_shift_from_noise():
    rng = np.random.default_rng(3)
    base = rng.normal(0.6, 0.1, size=60)
    shifted = base + 0.05 + rng.normal(0, 0.01, size=60)
    noisy = base + rng.normal(0, 0.01, size=60)
    real = paired_difference(base, shifted)
    noise = paired_difference(base, noisy)
    assert real.p_value < 0.001 and real.ci_low > 0.04 and real.ci_high < 0.06
    assert noise.p_value > 0.01 and noise.ci_low < 0 < noise.ci_high


def test_paired_difference_rejects_unequal_lengths():
    with pytest.raises(ValueError, match="differ in length"):
        paired_difference([1, 2], [1])


@given(st.lists(st.tuples(st.integers(0, 5), st.floats(-1, 1)), min_size=3, max_size=40))
@settings(max_examples=60, deadline=None)
def test_spearman_matches_scipy(pairs):
    import pandas as pd
    from scipy.stats import spearmanr

    from eval.scoring.summary import spearman

    a, b = pd.Series([p[0] for p in pairs], dtype=float), pd.Series([p[1] for p in pairs])
    if a.nunique() < 2 or b.nunique() < 2:
        return
    expected = spearmanr(a, b)
    rho, p_value = spearman(a, b)
    assert np.isclose(rho, expected.statistic, atol=1e-12) and np.isclose(p_value, expected.pvalue, rtol=1e-9, atol=1e-12)


def test_bootstrap_in_blocks_is_the_one_big_draw_and_bounded_in_memory(monkeypatch):
    import tracemalloc

    from eval import stats

    values = np.random.default_rng(3).random(5000)
    monkeypatch.setattr(stats, "BLOCK_INDICES", 10**9)  # one block: the old (n_resamples x n) draw
    whole = stats.bootstrap_ci(values)
    monkeypatch.setattr(stats, "BLOCK_INDICES", 7919)
    assert stats.bootstrap_ci(values) == whole
    monkeypatch.undo()
    tracemalloc.start()
    stats.bootstrap_ci(np.random.default_rng(4).random(200_000), n_resamples=400)  # one draw: 640 MB of indices
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 100 * 2**20
