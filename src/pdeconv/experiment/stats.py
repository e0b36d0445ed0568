"""The statistics of a comparison.

Main statistic: the **paired** difference to a reference variant. Seed s gives every variant the same data
order, augmentation draws and (where layers agree) initial weights, so ``Δ_s = acc(variant, s) − acc(ref, s)``
removes what the seeds share; :func:`paired` gives the mean Δ, its two-sided 95% Student-t interval over seeds and
the paired t-test's p-value, and :func:`holm` adjusts the p-values of one experiment's comparisons together
(Holm's step-down method: the family-wise error rate stays at most α).

Secondary: :func:`summarize` (mean, sample std and t interval of one variant's accuracies) and :func:`welch_p`
(Welch's unpaired t-test), which ignore the pairing.
"""

from __future__ import annotations

import math
import statistics
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["Paired", "Summary", "holm", "paired", "summarize", "welch_p"]


@dataclass
class Summary:
    """n values: mean, sample standard deviation and the two-sided 95% Student-t interval of the mean."""

    n: int
    mean: float
    std: float | None
    ci: tuple[float, float] | None

    @property
    def half_width(self) -> float | None:
        """Half the width of :attr:`ci` (``None`` without one)."""
        return None if self.ci is None else (self.ci[1] - self.ci[0]) / 2


def summarize(values: Sequence[float]) -> Summary:
    """:class:`Summary` of ``values`` (std and CI need at least two)."""
    from scipy import stats

    n, mean = len(values), statistics.fmean(values)
    if n < 2:
        return Summary(n, mean, None, None)
    std = statistics.stdev(values)
    half = stats.t.ppf(0.975, n - 1) * std / math.sqrt(n)
    return Summary(n, mean, std, (mean - half, mean + half))


@dataclass
class Paired(Summary):
    """:class:`Summary` of the paired differences ``variant − reference``, the seeds used and the paired t-test's
    two-sided p-value (``None`` with fewer than two pairs, or when every difference is the same nonzero value)."""

    seeds: tuple[int, ...] = ()
    p: float | None = None


def paired(values: Mapping[int, float], reference: Mapping[int, float]) -> Paired:
    """The paired comparison of ``values`` ({seed: accuracy}) with ``reference`` over the seeds both have.

    Differences that are all zero give Δ = 0, CI [0, 0] and p = 1. ``ValueError`` when no seed is shared.
    """
    from scipy import stats

    seeds = tuple(sorted(set(values) & set(reference)))
    if not seeds:
        raise ValueError("paired(): the two variants share no seed")
    diffs = [values[s] - reference[s] for s in seeds]
    s = summarize(diffs)
    p: float | None = None
    if s.n >= 2:
        if s.std == 0:
            p = 1.0 if s.mean == 0 else None
        else:
            with warnings.catch_warnings():  # nearly constant differences: scipy warns, the p-value stands
                warnings.simplefilter("ignore", RuntimeWarning)
                p = float(stats.ttest_rel([values[k] for k in seeds], [reference[k] for k in seeds]).pvalue)
    return Paired(s.n, s.mean, s.std, s.ci, seeds=seeds, p=p)


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm-adjusted p-values, in the order given; ``None`` entries stay ``None`` and do not count.

    With the m defined p-values sorted, p₍ᵢ₎ becomes max over j ≤ i of min(1, (m − j + 1)·p₍ⱼ₎); a comparison is
    significant at level α when its adjusted p-value is at most α.
    """
    defined = sorted((p, i) for i, p in enumerate(pvalues) if p is not None)
    m = len(defined)
    adjusted: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for j, (p, i) in enumerate(defined):
        running = max(running, min(1.0, (m - j) * p))
        adjusted[i] = running
    return adjusted


def welch_p(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Two-sided p-value of Welch's t-test (unequal variances) for equal means; ``None`` if undefined."""
    from scipy import stats

    if len(a) < 2 or len(b) < 2 or (statistics.pstdev(a) == 0 and statistics.pstdev(b) == 0):
        return None
    with warnings.catch_warnings():  # near-identical samples: scipy warns, the p-value is still meaningful
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(stats.ttest_ind(a, b, equal_var=False).pvalue)
