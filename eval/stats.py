"""Bootstrap confidence intervals and the paired comparison of two systems.

Every interval is a percentile bootstrap of the mean with a fixed seed, so the same scores always give
the same summary. The paired test is a sign-flip permutation test on the per-pair differences: under
the null hypothesis (no difference between the systems) each difference is as likely positive as
negative. It is exact (all 2^n sign patterns) up to 2^16 patterns and Monte Carlo beyond.
"""
from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass

import numpy as np

CONFIDENCE = 0.95
N_RESAMPLES = 4000
SEED = 0
EXACT_PERMUTATION_MAX_N = 16
BLOCK_INDICES = 1 << 21  # resample indices held at once (16 MiB of int64, as much again for the values)


class _Rounded:
    def as_dict(self) -> dict:
        return {key: (round(value, 6) if isinstance(value, float) else value) for key, value in asdict(self).items()}


@dataclass(frozen=True)
class Interval(_Rounded):
    mean: float
    ci_low: float
    ci_high: float
    n: int


@dataclass(frozen=True)
class PairedDifference(_Rounded):
    diff: float  # mean of (b - a)
    ci_low: float
    ci_high: float
    p_value: float
    n: int


def _clean(values) -> np.ndarray:
    array = np.asarray(values, dtype=float).ravel()
    return array[np.isfinite(array)]


def _bootstrap_means(values: np.ndarray, n_resamples: int, seed: int) -> np.ndarray:
    """Means of `n_resamples` resamples, drawn in blocks of at most BLOCK_INDICES indices so memory
    stays bounded for any n; the draws are the same stream as one (n_resamples x n) draw."""
    rng = np.random.default_rng(seed)
    rows = max(1, BLOCK_INDICES // len(values))
    means = np.empty(n_resamples)
    for start in range(0, n_resamples, rows):
        count = min(rows, n_resamples - start)
        means[start : start + count] = values[rng.integers(0, len(values), size=(count, len(values)))].mean(axis=1)
    return means


def bootstrap_ci(values, *, confidence: float = CONFIDENCE, n_resamples: int = N_RESAMPLES,
                 seed: int = SEED) -> Interval | None:
    """Mean and percentile-bootstrap interval of the finite values; None when there are none."""
    array = _clean(values)
    if array.size == 0:
        return None
    means = _bootstrap_means(array, n_resamples, seed)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    mean = float(array.mean())
    # the percentile interval of a constant sample can land a rounding error off its mean
    return Interval(mean=mean, ci_low=min(float(low), mean), ci_high=max(float(high), mean), n=int(array.size))


def sign_flip_p_value(differences, *, n_resamples: int = 20000, seed: int = SEED) -> float:
    """Two-sided p-value of the paired sign-flip permutation test of mean difference 0."""
    diffs = _clean(differences)
    if diffs.size == 0:
        return float("nan")
    observed = abs(diffs.mean())
    if diffs.size <= EXACT_PERMUTATION_MAX_N:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=diffs.size)))
    else:
        rng = np.random.default_rng(seed)
        signs = rng.choice((1.0, -1.0), size=(n_resamples, diffs.size))
    permuted = np.abs((signs * diffs).mean(axis=1))
    tolerance = 1e-12 * max(1.0, observed)
    extreme = np.count_nonzero(permuted >= observed - tolerance)
    if diffs.size > EXACT_PERMUTATION_MAX_N:  # Monte Carlo: count the observed pattern itself
        return float((extreme + 1) / (len(signs) + 1))
    return float(extreme / len(signs))


def paired_difference(a, b, *, confidence: float = CONFIDENCE, n_resamples: int = N_RESAMPLES,
                      seed: int = SEED) -> PairedDifference | None:
    """Mean of b - a over pairs where both are finite, with bootstrap CI and sign-flip p-value."""
    a = np.asarray(a, dtype=float).ravel()
    b = np.asarray(b, dtype=float).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired samples differ in length: {a.size} vs {b.size}")
    both = np.isfinite(a) & np.isfinite(b)
    differences = b[both] - a[both]
    interval = bootstrap_ci(differences, confidence=confidence, n_resamples=n_resamples, seed=seed)
    if interval is None:
        return None
    return PairedDifference(diff=interval.mean, ci_low=interval.ci_low, ci_high=interval.ci_high,
                            p_value=sign_flip_p_value(differences, seed=seed), n=interval.n)
