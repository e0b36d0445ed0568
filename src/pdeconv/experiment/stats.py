"""The statistics of a comparison: mean, standard deviation and t-based 95% CI over seeds; Welch's t-test."""

from __future__ import annotations

import math
import statistics
import warnings
from dataclasses import dataclass

__all__ = ["Summary", "summarize", "welch_p"]


@dataclass
class Summary:
    """n values: mean, sample standard deviation and the two-sided 95% Student-t interval of the mean."""

    n: int
    mean: float
    std: float | None
    ci: tuple[float, float] | None


def summarize(values: list[float]) -> Summary:
    """:class:`Summary` of ``values`` (std and CI need at least two)."""
    from scipy import stats

    n, mean = len(values), statistics.fmean(values)
    if n < 2:
        return Summary(n, mean, None, None)
    std = statistics.stdev(values)
    half = stats.t.ppf(0.975, n - 1) * std / math.sqrt(n)
    return Summary(n, mean, std, (mean - half, mean + half))


def welch_p(a: list[float], b: list[float]) -> float | None:
    """Two-sided p-value of Welch's t-test (unequal variances) for equal means; ``None`` if undefined."""
    from scipy import stats

    if len(a) < 2 or len(b) < 2 or (statistics.pstdev(a) == 0 and statistics.pstdev(b) == 0):
        return None
    with warnings.catch_warnings():  # near-identical samples: scipy warns, the p-value is still meaningful
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(stats.ttest_ind(a, b, equal_var=False).pvalue)
