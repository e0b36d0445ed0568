"""pdeconv.layers.quasilinear: D(a ⊙ b) with (a, b) = split(W₁ u)."""

import pytest
import torch
from torch.func import functional_call

from pdeconv import stencil
from pdeconv.layers import DifferentialConv2d, QuasiLinear

F64 = torch.float64


def test_formula():
    """a = b = u and D = (∂x on channel 0, ∂y on channel 1): the block is ∂(u²) = 2u·∂u, known analytically."""
    C, H, W = 2, 6, 9
    block = QuasiLinear(C, 1, order=1, bc="neumann").double()
    assert isinstance(block.differential, DifferentialConv2d)
    names = [stencil.operator_name(ab) for ab in stencil.multi_indices(1, size=3)]
    assert names == ["1", "∂x", "∂y"]  # the columns of `coefficients`
    with torch.no_grad():
        block.expand.weight.copy_(torch.cat([torch.eye(C), torch.eye(C)])[:, :, None, None])  # [I; I]: a = b = u
        block.differential.coefficients.copy_(torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]))
        block.differential.pointwise.weight.copy_(torch.eye(C)[:, :, None, None])
    # per channel a plane u = α·x + γ·y + β (x along the columns, y down the rows): u² is quadratic, so the
    # central differences are exact and ∂x(u²) = 2u·α, ∂y(u²) = 2u·γ away from the padded border
    y, x = torch.meshgrid(torch.arange(H, dtype=F64), torch.arange(W, dtype=F64), indexing="ij")
    alpha, gamma, beta = torch.tensor([0.7, -0.3]), torch.tensor([0.4, 1.1]), torch.tensor([-1.5, 0.25])
    u = (alpha[:, None, None] * x + gamma[:, None, None] * y + beta[:, None, None])[None]
    with torch.no_grad():
        out = block(u)
    assert out.shape == (1, C, H, W)
    expected = torch.stack([2 * u[0, 0] * alpha[0], 2 * u[0, 1] * gamma[1]])[None]
    # float64 arithmetic on values ≤ ~200: rounding ~1e-14
    torch.testing.assert_close(out[..., 1:-1, 1:-1], expected[..., 1:-1, 1:-1], rtol=0, atol=1e-12)


@pytest.mark.parametrize("shape", [(5, 8), (12, 20)])
def test_shapes_stride_and_out_channels_on_non_square_inputs(shape):
    torch.manual_seed(1)
    u = torch.randn(2, 4, *shape)
    assert QuasiLinear(4)(u).shape == u.shape
    strided = tuple((n + 1) // 2 for n in shape)
    block = QuasiLinear(4, 4, stride=2, out_channels=6, order=2, bc="periodic").double()
    out = block(u.double())
    assert out.shape == (2, 6, *strided)
    # the stride samples the stride-1 output at the even pixels (same weights; only the summation order of
    # the conv kernels may differ, float64 → 1e-12)
    dense = QuasiLinear(4, 4, stride=1, out_channels=6, order=2, bc="periodic").double()
    dense.load_state_dict(block.state_dict())
    torch.testing.assert_close(out, dense(u.double())[..., ::2, ::2], rtol=1e-12, atol=1e-12)
    assert QuasiLinear(4, 3, mix=False)(u).shape == (2, 12, *shape)


@pytest.mark.parametrize("s", [2.0, -0.5, 3.0])
def test_homogeneous_of_degree_two_without_biases(s):
    torch.manual_seed(2)
    block = QuasiLinear(3, bc="replicate").double()
    u = torch.randn(2, 3, 5, 8, dtype=torch.float64)
    assert torch.allclose(block(s * u), s**2 * block(u), rtol=1e-12, atol=1e-12)
    torch.manual_seed(2)
    biased = QuasiLinear(3, bias=True).double()
    assert not torch.allclose(biased(s * u), s**2 * biased(u))


@pytest.mark.parametrize("order", [None, 2])
def test_gradient_reaches_every_parameter_and_the_input(order):
    torch.manual_seed(3)
    block = QuasiLinear(2, 2, order=order).double()
    names = sorted(n for n, _ in block.named_parameters())
    depthwise = "differential.weight" if order is None else "differential.coefficients"
    assert names == sorted([depthwise, "differential.pointwise.weight", "expand.weight"])
    params = [block.get_parameter(n).detach().clone().requires_grad_() for n in names]
    u = torch.randn(1, 2, 4, 5, dtype=F64, requires_grad=True)

    def f(u, *ps):
        return functional_call(block, dict(zip(names, ps)), (u,))

    # finite differences against the analytic backward, for the input and every parameter
    assert torch.autograd.gradcheck(f, (u, *params))
