"""pdeconv.stencil: the kernel ↔ differential-operator dictionary, checked against Taylor expansions."""

import math

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
import torch
from fixtures.tolerance import assert_same_sums
from hypothesis import given, settings
from hypothesis import strategies as st

from pdeconv import stencil as S

# ----------------------------------------------------------------------------------------------- moments


@settings(max_examples=40, deadline=None)
@given(
    k=st.sampled_from([3, 5, 7]),
    data=st.data(),
    h=st.sampled_from([1.0, 0.5, 0.1]),
)
def test_round_trip_kernel_moments_kernel(k, data, h):
    K = data.draw(hnp.arrays(np.float64, (2, k, k), elements=st.floats(-10, 10, allow_nan=False)))
    K = torch.from_numpy(K)
    back = S.kernel_from_moments(S.moments(K, h), h)
    assert torch.allclose(back, K, rtol=1e-9, atol=1e-9 * (1 + K.abs().max().item()))


def test_moments_match_definition_elementwise():
    torch.manual_seed(0)
    K = torch.randn(5, 5, dtype=torch.float64)
    h = 0.3
    M = S.moments(K, h)
    r = 2
    for a in range(5):
        for b in range(5):
            want = sum(
                K[p + r, q + r].item() * p**a * q**b * h ** (a + b) / (math.factorial(a) * math.factorial(b))
                for p in range(-r, r + 1)
                for q in range(-r, r + 1)
            )
            assert M[a, b].item() == pytest.approx(want, rel=1e-12, abs=1e-12)


def test_sobel_is_8dx_plus_2dxdyy():
    M = S.moments(S.sobel_x(dtype=torch.float64))
    want = torch.zeros(3, 3, dtype=torch.float64)
    want[0, 1], want[2, 1] = 8, 2
    assert torch.equal(M, want)
    assert S.describe(S.sobel_x()) == "8·∂x + 2·∂x∂y²"
    assert S.describe(S.sobel_y()) == "8·∂y + 2·∂x²∂y"


def test_gaussian_is_one_plus_quarter_laplacian():
    M = S.moments(S.gaussian(dtype=torch.float64))
    want = torch.zeros(3, 3, dtype=torch.float64)
    want[0, 0], want[0, 2], want[2, 0], want[2, 2] = 1, 0.25, 0.25, 1 / 16
    assert torch.allclose(M, want, atol=1e-15)
    assert S.describe(S.gaussian()) == "1 + 0.25·∂x² + 0.25·∂y² + 0.0625·∂x²∂y²"


def test_batched_shapes_dtype_device_autograd():
    torch.manual_seed(1)
    W = torch.randn(4, 3, 3, 3, requires_grad=True)
    M = S.moments(W)
    assert M.shape == W.shape and M.dtype == torch.float32
    K = S.kernel_from_moments(M)
    K.sum().backward()
    # K = W through the map and its inverse, so ∂(ΣK)/∂W is all ones
    assert torch.allclose(K, W, atol=1e-5) and torch.allclose(W.grad, torch.ones_like(W), atol=1e-5)
    M16 = S.moments(W.detach().to(torch.float16))
    # float16 moments: 3 + 3 products per value (axis by axis) with unit roundoff 2^-11, and a rounded input
    assert M16.dtype == torch.float16
    bound = 8 * 2**-11 * W.detach().abs().sum((-2, -1)).max()
    torch.testing.assert_close(M16.float(), S.moments(W.detach().double()).float(), rtol=0, atol=float(bound))


def test_orientation_on_a_nonsquare_image():
    """The moment (0, 1) must act on the x (column) axis: K ⋆ (ramp in x) = slope."""
    H, W = 5, 8
    y, x = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij")
    u = 3 * x + 7 * y
    dux = torch.nn.functional.conv2d(u[None, None], S.dx(dtype=torch.float64)[None, None])[0, 0]
    duy = torch.nn.functional.conv2d(u[None, None], S.dy(dtype=torch.float64)[None, None])[0, 0]
    assert torch.allclose(dux, torch.full_like(dux, 3.0)) and torch.allclose(duy, torch.full_like(duy, 7.0))


@pytest.mark.parametrize(
    "fn,index",
    [(S.dx, (0, 1)), (S.dy, (1, 0)), (S.dxx, (0, 2)), (S.dyy, (2, 0)), (S.dxy, (1, 1))],
)
def test_named_derivatives_have_unit_moment(fn, index):
    M = S.moments(fn(h=0.5, dtype=torch.float64), h=0.5)
    want = torch.zeros(3, 3, dtype=torch.float64)
    want[index] = 1
    # the 3×3 grid of moments holds exactly one non-zero (higher moments of central stencils are beyond it)
    assert torch.allclose(M, want, atol=1e-12)


def test_laplacians_and_upwind():
    for points in (5, 9):
        M = S.moments(S.laplacian(points, dtype=torch.float64))
        want = torch.zeros(3, 3, dtype=torch.float64)
        want[0, 2] = want[2, 0] = 1
        want[2, 2] = 0 if points == 5 else 1 / 6  # the 9-point stencil's isotropic correction (h²/6)∂x²∂y²
        assert torch.allclose(M, want, atol=1e-14)
    up = S.moments(S.upwind_x("forward", dtype=torch.float64))
    assert up[0, 1] == 1 and up[0, 2] == pytest.approx(0.5)  # forward difference: ∂x + (h/2)∂x²
    down = S.moments(S.upwind_y("backward", dtype=torch.float64))
    assert down[1, 0] == 1 and down[2, 0] == pytest.approx(-0.5)
    with pytest.raises(ValueError, match="forward"):
        S.upwind_x("sideways")


def test_describe_multichannel_and_errors():
    w = torch.stack([S.dx(), S.laplacian()]).unsqueeze(1)  # (2, 1, 3, 3)
    assert S.describe(w) == "[0, 0]: ∂x\n[1, 0]: ∂x² + ∂y²"
    big = torch.zeros(8, 8, 3, 3)
    big[..., 1, 1] = 2.0
    assert S.describe(big).startswith("64 kernels (8, 8); mean |coefficient| 1: 2")
    with pytest.raises(ValueError, match="odd"):
        S.moments(torch.zeros(4, 4))


def test_describe_takes_arrays_and_lists_and_says_what_it_needs():
    np = pytest.importorskip("numpy")
    assert S.describe(S.laplacian().numpy()) == "∂x² + ∂y²"
    assert S.describe([[0, 0, 0], [-0.5, 0, 0.5], [0, 0, 0]]) == "∂x"  # rows are y, columns are x
    assert S.describe(np.array([[0, -0.5, 0], [0, 0, 0], [0, 0.5, 0]])) == "∂y"  # y grows down the rows
    with pytest.raises(TypeError, match="tensor or array-like; got str"):
        S.describe("laplacian")
    with pytest.raises(ValueError, match=r"k odd; got shape \(2, 2\)"):
        S.describe([[1, 0], [0, 1]])
    with pytest.raises(ValueError, match=r"got shape \(3, 5\)"):
        S.describe(torch.zeros(3, 5))


def test_operator_names():
    assert [S.operator_name(i) for i in S.multi_indices(2)] == ["1", "∂x", "∂y", "∂x²", "∂x∂y", "∂y²"]
    assert [S.term_name(i) for i in S.multi_indices(2)] == ["u", "u_x", "u_y", "u_xx", "u_xy", "u_yy"]
    assert len(S.multi_indices(4, size=3)) == 9


# --------------------------------------------------------------------------------------- bases and FDs


def test_basis_spans_exactly_the_order2_operators():
    B = S.basis(2, dtype=torch.float64)
    assert B.shape == (6, 3, 3)
    M = S.moments(B)
    for i, (a, b) in enumerate(S.multi_indices(2)):
        want = torch.zeros(3, 3, dtype=torch.float64)
        want[a, b] = 1
        assert torch.allclose(M[i], want, atol=1e-12)
    # rank 6 in the 9-dimensional kernel space
    assert torch.linalg.matrix_rank(B.reshape(6, 9)) == 6


def _sample(f, h, n=40):
    """f on an n×n grid of spacing h around (0.3, 0.2); returns the grid values."""
    idx = torch.arange(n, dtype=torch.float64) - n // 2
    y, x = torch.meshgrid(0.2 + idx * h, 0.3 + idx * h, indexing="ij")
    return f(x, y)


def _centre_error(kernel, f, exact, h):
    u = _sample(f, h)
    out = torch.nn.functional.conv2d(u[None, None], kernel[None, None])[0, 0]
    r = kernel.shape[-1] // 2
    c = u.shape[0] // 2 - r  # output index of the grid point (0.3, 0.2)
    return abs(out[c, c].item() - exact)


def _f(x, y):
    return torch.sin(1.3 * x + 0.4) * torch.exp(0.7 * y) + torch.cos(0.9 * x * y)


# exact derivatives of _f at (x, y) = (0.3, 0.2), by sympy-free hand differentiation checked below
def _exact(a, b, x=0.3, y=0.2):
    xx = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    yy = torch.tensor(y, dtype=torch.float64, requires_grad=True)
    g = _f(xx, yy)
    for _ in range(b):
        (g,) = torch.autograd.grad(g, xx, create_graph=True)
    for _ in range(a):
        (g,) = torch.autograd.grad(g, yy, create_graph=True)
    return g.item()


@pytest.mark.parametrize(
    "order,accuracy",
    [((0, 1), 2), ((1, 0), 2), ((0, 2), 2), ((1, 1), 2), ((2, 0), 2), ((0, 1), 4), ((1, 1), 4), ((0, 0), 2)],
)
def test_finite_difference_convergence_order(order, accuracy):
    exact = _exact(*order)
    errs = []
    for h in (0.04, 0.02, 0.01):
        K = S.finite_difference(order, accuracy=accuracy, h=h, dtype=torch.float64)
        errs.append(_centre_error(K, _f, exact, h))
    if order == (0, 0):
        assert max(errs) < 1e-14
        return
    rates = [math.log2(errs[i] / errs[i + 1]) for i in range(2)]
    assert min(rates) > accuracy - 0.25, (errs, rates)


def test_finite_difference_constraint_and_errors():
    K = S.finite_difference((0, 2), accuracy=2, dtype=torch.float64)
    assert K.shape == (3, 3) and torch.allclose(K, S.dxx(dtype=torch.float64))
    values, mask = S.moment_constraints((0, 1), size=5, accuracy=2)
    assert mask.sum() == 6 and values[0, 1] == 1  # moments of total order < 3
    with pytest.raises(ValueError, match="size"):
        S.finite_difference((0, 1), size=3, accuracy=4)


def test_operator_matrices_grouped_block_diagonal():
    torch.manual_seed(2)
    groups, c_in, c_out = 2, 4, 6
    w = torch.randn(c_out, c_in // groups, 3, 3, dtype=torch.float64)
    mats = S.operator_matrices(w, groups=groups)
    assert set(mats) == {(a, b) for a in range(3) for b in range(3)}
    for A in mats.values():
        assert A.shape == (c_out, c_in)
        assert torch.all(A[:3, 2:] == 0) and torch.all(A[3:, :2] == 0)
    # the operator matrices reproduce the convolution on quadratic polynomials exactly
    conv = torch.nn.Conv2d(c_in, c_out, 3, groups=groups, bias=False).double()
    conv.weight.data.copy_(w)
    y, x = torch.meshgrid(torch.arange(5.0, dtype=torch.float64), torch.arange(7.0, dtype=torch.float64), indexing="ij")
    coef = torch.randn(c_in, 6, dtype=torch.float64)
    mon = torch.stack([torch.ones_like(x), x, y, x * x, x * y, y * y])  # 1, x, y, x², xy, y²
    u = torch.einsum("cm,mhw->chw", coef, mon)[None]
    derivs = {  # ∂_y^a ∂_x^b u, analytically
        (0, 0): u[0],
        (0, 1): torch.einsum("cm,mhw->chw", coef[:, [1, 3, 4]], torch.stack([torch.ones_like(x), 2 * x, y])),
        (1, 0): torch.einsum("cm,mhw->chw", coef[:, [2, 4, 5]], torch.stack([torch.ones_like(x), x, 2 * y])),
        (0, 2): 2 * coef[:, 3, None, None].expand_as(u[0]),
        (1, 1): coef[:, 4, None, None].expand_as(u[0]),
        (2, 0): 2 * coef[:, 5, None, None].expand_as(u[0]),
    }
    want = sum(torch.einsum("oc,chw->ohw", mats[ab], d) for ab, d in derivs.items())
    got = conv(u)[0]
    assert torch.allclose(got, want[:, 1:-1, 1:-1], atol=1e-10)


def test_system_moments_is_block_diagonal_and_batches_over_leading_dims():
    torch.manual_seed(0)
    w = torch.randn(2, 6, 2, 3, 3, dtype=torch.float64)  # two stacked convs, 6 → 6 channels in 3 groups
    M = S.system_moments(w, groups=3, h=0.5)
    assert M.shape == (2, 6, 6, 3, 3)
    for n in range(2):
        # batched vs one at a time: another matrix-product shape, so possibly another summation order of the
        # 3 + 3 products (axis by axis) behind each moment; with |p|, |q| ≤ 1 and h ≤ 1, Σ|products| ≤ Σ|K|
        scale = w[n].abs().sum((-2, -1)).max()
        assert_same_sums(M[n], S.system_moments(w[n], groups=3, h=0.5), terms=6, scale=scale)
        for g in range(3):
            block = M[n, 2 * g:2 * g + 2, 2 * g:2 * g + 2]
            torch.testing.assert_close(block, S.moments(w[n, 2 * g:2 * g + 2], 0.5))
            block.zero_()
        assert not M[n].any()  # nothing outside the diagonal blocks
    # groups=1 against the definition, M[o, i, a, b] = Σ_pq K[o, i, p, q]·p^a·q^b·h^(a+b)/(a!·b!), term by term
    ungrouped = torch.randn(4, 4, 3, 3, dtype=torch.float64)
    h = 0.5
    expected = torch.zeros(4, 4, 3, 3, dtype=torch.float64)
    for a in range(3):
        for b in range(3):
            for p in (-1, 0, 1):
                for q in (-1, 0, 1):
                    weight = p**a * q**b * h ** (a + b) / (math.factorial(a) * math.factorial(b))
                    expected[:, :, a, b] += ungrouped[:, :, p + 1, q + 1] * weight
    torch.testing.assert_close(S.system_moments(ungrouped, h=h), expected, rtol=1e-12, atol=1e-12)
    mats = S.operator_matrices(ungrouped)  # A_01, the ∂x coefficient at h = 1: Σ_pq K[o, i, p, q]·q
    torch.testing.assert_close(mats[0, 1], (ungrouped * torch.tensor([-1.0, 0, 1], dtype=torch.float64)).sum((2, 3)))
    with pytest.raises(ValueError, match="not divisible"):
        S.system_moments(torch.randn(5, 1, 3, 3), groups=2)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 4), st.integers(0, 2**31 - 1))
def test_truncate_keeps_exactly_the_moments_up_to_the_order(max_order, seed):
    w = torch.randn(3, 2, 3, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    t = S.truncate(w, max_order)
    M, Mt = S.moments(w), S.moments(t)
    order = torch.arange(3)[:, None] + torch.arange(3)[None, :]
    torch.testing.assert_close(Mt[..., order <= max_order], M[..., order <= max_order], rtol=1e-12, atol=1e-12)
    assert float(Mt[..., order > max_order].abs().sum()) < 1e-11
    torch.testing.assert_close(S.truncate(t, max_order), t, rtol=1e-12, atol=1e-12)  # a projection


def test_binomial_rows_make_the_gaussian():
    assert S.binomial(5, torch.float64).tolist() == [1 / 16, 4 / 16, 6 / 16, 4 / 16, 1 / 16]
    torch.testing.assert_close(S.gaussian(5, torch.float64), torch.outer(S.binomial(5, torch.float64),
                                                                         S.binomial(5, torch.float64)))
    with pytest.raises(ValueError, match="odd"):
        S.binomial(4)
