"""pdeconv.layers.quasilinear: D(a ⊙ b) with (a, b) = split(W₁ u)."""

import pytest
import torch
import torch.nn.functional as F

from pdeconv.layers import DifferentialConv2d, QuasiLinear


def test_formula():
    torch.manual_seed(0)
    block = QuasiLinear(3, 2, bc="neumann")
    assert isinstance(block.differential, DifferentialConv2d)
    u = torch.randn(2, 3, 5, 8)
    ab = F.conv2d(u, block.expand.weight)
    expected = block.differential(ab[:, :3] * ab[:, 3:])
    assert torch.equal(block(u), expected)


@pytest.mark.parametrize("shape", [(5, 8), (12, 20)])
def test_shapes_stride_and_out_channels_on_non_square_inputs(shape):
    torch.manual_seed(1)
    u = torch.randn(2, 4, *shape)
    assert QuasiLinear(4)(u).shape == u.shape
    strided = tuple((n + 1) // 2 for n in shape)
    assert QuasiLinear(4, 4, stride=2, out_channels=6, order=2, bc="periodic")(u).shape == (2, 6, *strided)
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


def test_gradient_reaches_every_parameter_and_the_input():
    torch.manual_seed(3)
    block = QuasiLinear(3, order=2)
    u = torch.randn(2, 3, 5, 8, requires_grad=True)
    block(u).square().sum().backward()
    assert sorted(n for n, _ in block.named_parameters()) == [
        "differential.coefficients",
        "differential.pointwise.weight",
        "expand.weight",
    ]
    for name, p in block.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert u.grad.abs().sum() > 0
