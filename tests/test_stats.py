"""pdeconv.experiment.stats: paired differences, Holm's adjustment and the summaries, against scipy and by hand."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from pdeconv.experiment.stats import benjamini_hochberg, equivalence, holm, paired, summarize, welch, welch_p

# test accuracies of two variants over five seeds (fixed numbers, as a report would have them)
A = {0: 0.9312, 1: 0.9288, 2: 0.9335, 3: 0.9301, 4: 0.9297}
B = {0: 0.9290, 1: 0.9281, 2: 0.9302, 3: 0.9299, 4: 0.9270}


def test_paired_matches_scipy_ttest_rel_and_its_interval():
    c = paired(A, B)
    a, b = [A[s] for s in range(5)], [B[s] for s in range(5)]
    oracle = sps.ttest_rel(a, b)
    assert c.seeds == (0, 1, 2, 3, 4) and c.n == 5
    assert c.mean == pytest.approx(sum(x - y for x, y in zip(a, b)) / 5, rel=1e-12)
    assert c.p == pytest.approx(oracle.pvalue, rel=1e-10)
    low, high = oracle.confidence_interval(0.95)
    assert c.ci == pytest.approx((low, high), rel=1e-10)
    assert c.half_width == pytest.approx((high - low) / 2, rel=1e-10)
    # pairing matters: the same numbers unpaired give a much weaker test here
    assert welch_p(a, b) > c.p


def test_paired_uses_only_the_shared_seeds_and_handles_degenerate_cases():
    c = paired({0: 0.5, 1: 0.6, 7: 0.9}, {0: 0.4, 1: 0.4, 2: 0.1})
    assert c.seeds == (0, 1) and c.mean == pytest.approx(0.15)
    same = paired(A, dict(A))  # the same model twice: Δ = 0 exactly
    assert (same.mean, same.ci, same.p, same.std) == (0.0, (0.0, 0.0), 1.0, 0.0)
    shifted = paired({0: 0.6, 1: 0.7}, {0: 0.5, 1: 0.6})  # constant nonzero Δ: p is the limit t → ∞, 0
    assert shifted.p == 0.0 and shifted.ci is not None
    assert holm([shifted.p, 0.04]) == pytest.approx([0.0, 0.04])  # and it counts in Holm's m
    single = paired({3: 0.9}, {3: 0.8})
    assert single.n == 1 and single.ci is None and single.p is None and single.half_width is None
    with pytest.raises(ValueError, match="share no seed"):
        paired({0: 0.9}, {1: 0.9})


def test_holm_on_a_worked_example():
    # sorted: 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 = 0.04 → running maximum 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.2, None, 0.9]) == pytest.approx([0.4, None, 0.9])  # None does not count in m
    assert holm([0.6, 0.7]) == [1.0, 1.0] and holm([]) == []


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=1, max_size=8), st.sampled_from([0.01, 0.05, 0.1]))
def test_holm_rejects_exactly_what_the_step_down_procedure_rejects(ps, alpha):
    adjusted = holm(ps)
    assert all(p <= q <= 1 for p, q in zip(ps, adjusted))
    # the procedure itself: sorted ascending, reject while (m − j)·p_(j) ≤ α, stop at the first failure
    m, rejected = len(ps), set()
    for j, (p, i) in enumerate(sorted((p, i) for i, p in enumerate(ps))):
        if (m - j) * p > alpha:
            break
        rejected.add(i)
    assert {i for i, q in enumerate(adjusted) if q <= alpha} == rejected


def test_summarize_interval_is_students():
    values = [A[s] for s in range(5)]
    s = summarize(values)
    low, high = sps.t.interval(0.95, 4, loc=s.mean, scale=sps.sem(values))
    assert s.ci == pytest.approx((low, high), rel=1e-10) and s.std == pytest.approx(sps.tstd(values), rel=1e-12)


def test_benjamini_hochberg_on_a_worked_example_and_against_scipy():
    # sorted 0.005, 0.01, 0.03, 0.04 (m = 4): m·p/j = 0.02, 0.02, 0.04, 0.04 → running minimum from the top
    assert benjamini_hochberg([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.02, 0.04, 0.04, 0.02])
    assert benjamini_hochberg([0.2, None, 0.9]) == pytest.approx([0.4, None, 0.9])
    ps = [0.001, 0.02, 0.3, 0.04, 0.011, 0.5, 0.049]
    assert benjamini_hochberg(ps) == pytest.approx(list(sps.false_discovery_control(ps, method="bh")), rel=1e-12)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=1, max_size=10))
def test_benjamini_hochberg_is_never_stricter_than_holm(ps):
    assert all(b <= h + 1e-12 for b, h in zip(benjamini_hochberg(ps), holm(ps)))


def test_equivalence_is_the_90_percent_interval_inside_delta():
    c = paired(A, B)  # Δ ≈ +0.20 points, small spread
    low, high = sps.t.interval(0.90, c.df, loc=c.mean, scale=c.se)
    for delta in (0.001, 0.003, 0.005):  # in accuracy units: 0.1, 0.3, 0.5 points
        inside = -delta < low and high < delta
        assert (equivalence(c.mean, c.se, c.df, delta) <= 0.05) == inside
    # the two one-sided tests, by hand with scipy's one-sided paired tests
    a, b = [A[s] for s in range(5)], [B[s] for s in range(5)]
    lower = sps.ttest_rel([x + 0.003 for x in a], b, alternative="greater").pvalue
    upper = sps.ttest_rel([x - 0.003 for x in a], b, alternative="less").pvalue
    assert equivalence(c.mean, c.se, c.df, 0.003) == pytest.approx(max(lower, upper), rel=1e-10)


def test_welch_difference_matches_scipy():
    a, b = [0.91, 0.93, 0.92, 0.95, 0.90], [0.89, 0.90, 0.88, 0.91, 0.90, 0.86]
    d = welch(a, b)
    oracle = sps.ttest_ind(a, b, equal_var=False)
    assert d.p == pytest.approx(oracle.pvalue, rel=1e-10)
    assert d.ci == pytest.approx(tuple(oracle.confidence_interval(0.95)), rel=1e-10)
    assert d.mean == pytest.approx(sum(a) / 5 - sum(b) / 6, rel=1e-12)
    with pytest.raises(ValueError, match="two values"):
        welch([0.9], b)
