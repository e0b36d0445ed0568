"""The statistics of a comparison.

Main statistic: the **paired** difference to a reference variant. Seed s gives every variant the same data
order, augmentation draws and (where layers agree) initial weights, so ``Δ_s = acc(variant, s) − acc(ref, s)``
removes what the seeds share; :func:`paired` gives the mean Δ, its two-sided 95% Student-t interval over seeds and
the paired t-test's p-value, and :func:`holm` adjusts the p-values of one family of comparisons together
(Holm's step-down method: the family-wise error rate stays at most α); :func:`benjamini_hochberg` controls the
false discovery rate instead (less strict: it keeps more discoveries, of which at most a share α is expected false).

A null answer is not "no difference": :func:`equivalence` is the paired two one-sided tests (TOST) against a
declared smallest effect of interest ±δ: its p is small only when the whole 90% interval of Δ lies inside ±δ.

Secondary: :func:`summarize` (mean, sample std and t interval of one variant's accuracies), :func:`welch_p`
(Welch's unpaired t-test), which ignore the pairing, and :func:`welch` (the difference of two independent means
with Welch's interval: how two experiments' paired Δs compare when they ran on different data).
"""

from __future__ import annotations

import math
import statistics
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pdeconv.errors import PdeconvError

__all__ = ["Difference", "Paired", "Summary", "benjamini_hochberg", "equivalence", "holm", "paired", "summarize",
           "welch", "welch_p"]


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
    two-sided p-value (``None`` with fewer than two pairs)."""

    seeds: tuple[int, ...] = ()
    p: float | None = None

    @property
    def se(self) -> float | None:
        """Standard error of the mean difference (``None`` with fewer than two pairs)."""
        return None if self.std is None else self.std / math.sqrt(self.n)

    @property
    def df(self) -> int:
        """Degrees of freedom of the paired t statistic."""
        return self.n - 1


def paired(values: Mapping[int, float], reference: Mapping[int, float]) -> Paired:
    """The paired comparison of ``values`` ({seed: accuracy}) with ``reference`` over the seeds both have.

    Differences that are all zero give Δ = 0, CI [0, 0] and p = 1; differences that are all the same nonzero
    value give p = 0, the limit of the t-test's p as their spread goes to 0 (t → ∞), so the comparison keeps its
    place in a family's count. ``ValueError`` when no seed is shared.
    """
    from scipy import stats

    seeds = tuple(sorted(set(values) & set(reference)))
    if not seeds:
        raise PdeconvError("paired(): the two variants share no seed")
    diffs = [values[s] - reference[s] for s in seeds]
    s = summarize(diffs)
    p: float | None = None
    if s.n >= 2:
        if s.std == 0:
            p = 1.0 if s.mean == 0 else 0.0
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
    """Two-sided p-value of Welch's t-test (unequal variances) for equal means (:func:`welch`'s); ``None`` if
    undefined (fewer than two values on a side, or no spread on either)."""
    if len(a) < 2 or len(b) < 2 or (statistics.pstdev(a) == 0 and statistics.pstdev(b) == 0):
        return None
    return welch(a, b).p


def benjamini_hochberg(pvalues: Sequence[float | None]) -> list[float | None]:
    """Benjamini–Hochberg adjusted p-values (q-values), in the order given; ``None`` entries stay ``None``.

    With the m defined p-values sorted, p₍ᵢ₎ becomes min over j ≥ i of min(1, m·p₍ⱼ₎ / j); rejecting those at most α
    keeps the expected share of false discoveries at most α (for independent or positively dependent tests).
    """
    defined = sorted((p, i) for i, p in enumerate(pvalues) if p is not None)
    m = len(defined)
    adjusted: list[float | None] = [None] * len(pvalues)
    running = 1.0
    for j in range(m - 1, -1, -1):
        p, i = defined[j]
        running = min(running, m * p / (j + 1))
        adjusted[i] = min(1.0, running)
    return adjusted


def equivalence(mean: float, se: float, df: float, delta: float) -> float:
    """The p-value of the two one-sided t-tests (TOST) that a true difference estimated by ``mean`` (standard error
    ``se``, ``df`` degrees of freedom) lies inside ``(−delta, +delta)``: the larger of the one-sided p-values of
    H₀: Δ ≤ −δ and H₀: Δ ≥ +δ. Small (≤ α) exactly when the (1 − 2α) t interval lies inside ±δ.

    For a :class:`Paired` comparison ``c``: ``equivalence(c.mean, c.se, c.df, delta)``. With ``se == 0`` it is 0
    inside ±δ and 1 outside.
    """
    from scipy import stats

    if se == 0:
        return 0.0 if abs(mean) < delta else 1.0
    lower = stats.t.sf((mean + delta) / se, df)  # H₀: Δ ≤ −δ
    upper = stats.t.cdf((mean - delta) / se, df)  # H₀: Δ ≥ +δ
    return float(max(lower, upper))


@dataclass
class Difference:
    """A difference of two independent means (:func:`welch`): the first sample's size ``n``, the estimate, its
    standard error, the Welch–Satterthwaite degrees of freedom, the two-sided 95% interval and the p-value."""

    n: int
    mean: float
    se: float
    df: float
    ci: tuple[float, float]
    p: float


def welch(a: Sequence[float], b: Sequence[float]) -> Difference:
    """mean(a) − mean(b) for two independent samples (at least two values each), with Welch's interval and test."""
    from scipy import stats

    if len(a) < 2 or len(b) < 2:
        raise PdeconvError("welch() needs at least two values on each side")
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    mean = statistics.fmean(a) - statistics.fmean(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return Difference(len(a), mean, 0.0, math.inf, (mean, mean), 1.0 if mean == 0 else 0.0)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = stats.t.ppf(0.975, df) * se
    return Difference(len(a), mean, se, df, (mean - half, mean + half), float(2 * stats.t.sf(abs(mean) / se, df)))
