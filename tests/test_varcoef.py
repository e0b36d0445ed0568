"""pdeconv.layers.varcoef: polynomial coefficient fields a(x, y) on a centred [−1, 1] grid."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from fixtures.tolerance import assert_same_sums
from torch import nn

from pdeconv.layers import VariableCoefficients, monomials


@pytest.mark.parametrize("degree", [0, 1, 2, 3, 4])
def test_monomial_count(degree):
    assert monomials(3, 4, degree).shape == (1, (degree + 1) * (degree + 2) // 2, 3, 4)
    assert VariableCoefficients(5, degree).weight.shape == (5, (degree + 1) * (degree + 2) // 2, 1, 1)


def test_grid_orientation_and_span_on_non_square_odd_grid():
    H, W = 5, 8
    P = monomials(H, W, dtype=torch.float64)[0]
    x, y = P[1], P[2]
    assert torch.equal(x, x[:1].expand(H, W)) and torch.equal(y, y[:, :1].expand(H, W))  # x: columns, y: rows
    assert torch.allclose(x[0], torch.linspace(-1 + 1 / W, 1 - 1 / W, W, dtype=torch.float64))
    assert torch.allclose(y[:, 0], torch.linspace(-1 + 1 / H, 1 - 1 / H, H, dtype=torch.float64))
    assert y[2, 0] == 0 and torch.allclose(x[0] + x[0].flip(0), torch.zeros(W, dtype=torch.float64))


def test_fields_match_closed_form_polynomial():
    torch.manual_seed(0)
    H, W = 5, 8
    m = VariableCoefficients(3, degree=3, init="default").double()
    y, x = torch.meshgrid(
        (torch.arange(H, dtype=torch.float64) * 2 + 1) / H - 1,
        (torch.arange(W, dtype=torch.float64) * 2 + 1) / W - 1,
        indexing="ij",
    )
    terms = [1 + 0 * x, x, y, x**2, x * y, y**2, x**3, x**2 * y, x * y**2, y**3]
    expected = torch.einsum("cn,nhw->chw", m.weight[:, :, 0, 0], torch.stack(terms))
    assert torch.allclose(m.coefficient_fields(H, W), expected, atol=1e-12)
    u = torch.randn(2, 3, H, W, dtype=torch.float64)
    assert torch.allclose(m(u), u * expected, atol=1e-12)


def _essay_xy(H, W, dtype):
    # the essay's Bottleneck, line for line (NumPy float64, then .type(out.dtype))
    XX = torch.from_numpy(np.indices((1, 1, H, W))[3] * 2 / W - 1)
    YY = torch.from_numpy(np.indices((1, 1, H, W))[2] * 2 / H - 1)
    ones = torch.from_numpy(np.ones((1, 1, H, W)))
    return torch.cat([ones, XX, YY, XX * XX, XX * YY, YY * YY], dim=1).type(dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16])
def test_seed_compatible_is_the_essays_grid_bit_for_bit_and_its_fields(dtype):
    H, W = 7, 12
    assert torch.equal(monomials(H, W, seed_compatible=True, dtype=dtype), _essay_xy(H, W, dtype))
    if dtype == torch.float16:
        return
    torch.manual_seed(1)
    mix = nn.Conv2d(6, 8, 1, bias=False).to(dtype)  # the essay's conv1x1(6, width * 4)
    m = VariableCoefficients(8, seed_compatible=True, init="default").to(dtype)
    m.load_state_dict(mix.state_dict())
    out = torch.randn(2, 8, H, W, dtype=dtype)
    # the same grid bit for bit (above); the field a = Σ_k w_k·P_k is a matrix product here and a 1×1 conv in the
    # essay (another kernel: 6 terms in another order), then one more rounding in the product
    scale = out.abs() * F.conv2d(_essay_xy(H, W, dtype).abs(), mix.weight.detach().abs())
    assert_same_sums(m(out), out * mix(_essay_xy(H, W, dtype)), terms=6 + 1, scale=scale)


def test_seed_compatible_needs_degree_2_and_init_is_checked():
    with pytest.raises(ValueError, match="degree=2"):
        VariableCoefficients(4, 3, seed_compatible=True)
    with pytest.raises(ValueError, match="valid ones: identity, default"):
        VariableCoefficients(4, init="zeros")


def test_identity_init_returns_the_input_exactly():
    torch.manual_seed(2)
    u = torch.randn(2, 4, 5, 8)
    assert torch.equal(VariableCoefficients(4)(u), u)
    assert torch.equal(VariableCoefficients(4, seed_compatible=True)(u), u)


def test_default_init_is_nn_conv2d_init():
    torch.manual_seed(3)
    ref = nn.Conv2d(6, 8, 1, bias=False).weight
    torch.manual_seed(3)
    assert torch.equal(VariableCoefficients(8, init="default").weight, ref)


def test_grid_is_cached_and_rebuilt_only_when_the_key_changes():
    m = VariableCoefficients(2)
    u = torch.randn(1, 2, 5, 8)
    m(u)
    grid = m.grid
    m(u + 1)
    assert m.grid is grid
    m(torch.randn(1, 2, 6, 8))
    assert m.grid is not grid and m.grid.shape == (1, 6, 6, 8)
    grid = m.grid
    m(torch.randn(1, 2, 6, 9))  # the essay keyed its cache on the height only; this must rebuild
    assert m.grid is not grid and m.grid.shape == (1, 6, 6, 9)
    m.double()(torch.randn(1, 2, 6, 9, dtype=torch.float64))
    assert m.grid.dtype == torch.float64


def test_state_dict_is_only_the_weight_and_gradient_reaches_it():
    torch.manual_seed(4)
    m = VariableCoefficients(3, init="default").double()
    u = torch.randn(2, 3, 5, 8, dtype=torch.float64)
    m(u).square().sum().backward()
    assert list(m.state_dict()) == ["weight"]
    # L = Σ (u·a)², a_c = Σ_k w[c, k]·P_k: ∂L/∂w[c, k] = Σ_{n,y,x} 2·u²·a·P_k
    P = monomials(5, 8, dtype=torch.float64)[0]
    a = m.coefficient_fields(5, 8)
    expected = torch.einsum("nchw,khw->ck", 2 * u * u * a, P)
    torch.testing.assert_close(m.weight.grad[:, :, 0, 0], expected, rtol=1e-12, atol=1e-12)


def test_training_product_passes_gradcheck():
    # the product has its own autograd function in training: finite differences in float64
    torch.manual_seed(4)
    m = VariableCoefficients(2, init="default").double()
    u = torch.randn(3, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: m(x), (u,))
    w = m.weight
    assert torch.autograd.gradcheck(lambda weight: torch.func.functional_call(m, {"weight": weight}, (u,)), (w,))


def test_bf16_autocast_forward():
    torch.manual_seed(5)
    conv = nn.Conv2d(3, 4, 3, padding=1)
    m = VariableCoefficients(4, init="default")
    x = torch.randn(2, 3, 5, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(conv(x))
    assert out.dtype == torch.bfloat16
    assert torch.allclose(out.float(), m(conv(x)), atol=0.05, rtol=0.05)


def _assert_same_product(got, m, u):
    """``got`` equals ``u · a(x, y)`` up to summation order: a is a sum of n monomial terms, times u one more
    rounding (an exported or compiled graph may compute the sum in another order: another kernel path)."""
    n = m.weight.shape[1]
    scale = u.abs() * F.conv2d(monomials(*u.shape[-2:]).abs(), m.weight.detach().abs())
    assert_same_sums(got, m(u), terms=n + 1, scale=scale)


def test_export_matches_eager_fresh_and_cached():
    torch.manual_seed(6)
    u = torch.randn(2, 3, 5, 8)
    for warm in (False, True):
        m = VariableCoefficients(3, init="default")
        if warm:
            m(u)
        program = torch.export.export(m, (u,))
        _assert_same_product(program.module()(u), m, u)


def test_compile_matches_eager():
    torch.manual_seed(7)
    m = VariableCoefficients(3, init="default")
    u = torch.randn(2, 3, 5, 8)
    compiled = torch.compile(m, backend="aot_eager", fullgraph=True)
    _assert_same_product(compiled(u), m, u)
    _assert_same_product(compiled(u), m, u)  # second call: from the cached grid


@pytest.mark.parametrize("channels_last", [False, True])
def test_training_backward_equals_autograds_product(channels_last):
    torch.manual_seed(8)
    m = VariableCoefficients(3, degree=2, init="default")
    u = torch.randn(4, 3, 5, 8)
    if channels_last:
        m, u = m.to(memory_format=torch.channels_last), u.contiguous(memory_format=torch.channels_last)
    g = torch.randn(4, 3, 5, 8)
    u1, u2 = u.clone().requires_grad_(), u.clone().requires_grad_()
    w2 = m.weight.detach().clone().requires_grad_()
    out = m(u1)
    out.backward(g)
    expected = u2 * nn.functional.conv2d(monomials(5, 8), w2)  # the plain product, autograd's backward
    expected.backward(g)
    assert torch.equal(out, expected)  # exact: the same conv2d call on the same grid, then the same product
    torch.testing.assert_close(u1.grad, u2.grad, rtol=0, atol=0)  # g·a, the same product
    # the field gradient Σ_{n,y,x} g·u·P_k is summed in another order (per sample, then over the batch)
    scale = torch.einsum("nchw,khw->ck", (g * u).abs(), monomials(5, 8)[0].abs())[..., None, None]
    assert_same_sums(m.weight.grad, w2.grad, terms=4 * 5 * 8, scale=scale)


def test_bf16_field_gradient_is_accumulated_in_float32():
    # the batch sum of the field's gradient under bf16 autocast, against float64: within the rounding of the bf16
    # inputs and result (autograd's own reduction measured 3.3e-3 here, a per-sample bf16 loop 1.3e-2)
    torch.manual_seed(9)
    m = VariableCoefficients(8, init="default")
    u = torch.randn(128, 8, 14, 14).contiguous(memory_format=torch.channels_last)
    g = torch.randn(128, 8, 14, 14).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(u.bfloat16().requires_grad_())
    out.backward(g.bfloat16())
    m64 = VariableCoefficients(8, init="default").double()
    m64.load_state_dict(m.state_dict())
    m64(u.bfloat16().double()).backward(g.bfloat16().double())
    error = (m.weight.grad.double() - m64.weight.grad).abs().max() / m64.weight.grad.abs().max()
    assert error < 5e-3


def test_compiling_does_not_resize_the_cached_grid():
    m = VariableCoefficients(3, init="default")
    compiled = torch.compile(m, backend="aot_eager", fullgraph=True)
    compiled(torch.randn(2, 3, 5, 8))
    assert m.grid.numel() == 0  # the graph computes its grid; the module's buffer is untouched
