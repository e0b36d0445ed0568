"""pdeconv.regularize: the hyperbolicity penalty and score of a model's convolutions."""

import math

import pytest
import torch
from torch import nn

from pdeconv import stencil
from pdeconv.regularize import hyperbolicity, hyperbolicity_penalty

F64 = torch.float64


def _penalty(model: nn.Module, weights=(1.0, 1.0, 1.0)) -> float:
    return hyperbolicity_penalty(model, weights).item()


def _conv(weight: torch.Tensor, groups: int = 1) -> nn.Conv2d:
    c_out, c_in_g, k, _ = weight.shape
    conv = nn.Conv2d(c_in_g * groups, c_out, k, padding=k // 2, groups=groups).to(weight.dtype)
    with torch.no_grad():
        conv.weight.copy_(weight)
    return conv


def _reference_terms(conv: nn.Conv2d) -> tuple[float, float, float, float]:
    """(antisymmetric, diffusive, zeroth, E) of one conv, computed from the definitions independently of the
    library: the grouped weight densified block by block, the moments M[o, i, a, b] = Σ_pq K[p, q] (p h)^a (q h)^b
    / (a! b!) (a along the rows/y, b along the columns/x, h = the dilation) by an explicit einsum, in float64."""
    W = conv.weight.detach().double()
    c_out, c_in_g, k, _ = W.shape
    n_out = c_out // conv.groups
    dense = W.new_zeros(c_out, conv.in_channels, k, k)
    for g in range(conv.groups):
        dense[g * n_out:(g + 1) * n_out, g * c_in_g:(g + 1) * c_in_g] = W[g * n_out:(g + 1) * n_out]
    h = conv.dilation[0]
    offsets = torch.arange(k, dtype=F64) - k // 2
    V = torch.stack([(offsets * h) ** a / math.factorial(a) for a in range(k)])  # V[a, p]; 0**0 = 1
    M = torch.einsum("ap,oipq,bq->oiab", V, dense, V)
    A01, A10, A00 = M[:, :, 0, 1], M[:, :, 1, 0], M[:, :, 0, 0]
    anti = float(((A01 - A01.T) / 2).square().sum() + ((A10 - A10.T) / 2).square().sum())
    diff = sum(float(M[:, :, a, b].square().sum()) for a in range(k) for b in range(k) if a + b >= 2)
    zero = float(((A00 + A00.T) / 2).square().sum())
    return anti, diff, zero, float(M.square().sum())


def _reference_score(conv: nn.Conv2d) -> float:
    anti, diff, zero, E = _reference_terms(conv)
    return 1 - (anti + diff + zero) / E


def _kron(M: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    return M[..., None, None] * kernel.to(M)


def _hyperbolic_weight(c: int, seed: int) -> torch.Tensor:
    """A⊗Dx + B⊗Dy + C⊗1 with A, B symmetric and C skew: u_t = A u_x + B u_y + C u."""
    g = torch.Generator().manual_seed(seed)
    P, Q, R = torch.randn(3, c, c, dtype=F64, generator=g)
    return _kron(P + P.T, stencil.dx()) + _kron(Q + Q.T, stencil.dy()) + _kron(R - R.T, stencil.identity())


def test_symmetric_hyperbolic_kernel_has_zero_penalty_and_score_one():
    conv = _conv(_hyperbolic_weight(4, 0))
    assert _penalty(conv) < 1e-12
    assert hyperbolicity(conv) == {"": pytest.approx(1.0, abs=1e-12)}


def test_laplacian_is_purely_diffusive():
    conv = _conv(_kron(torch.eye(3, dtype=F64), stencil.laplacian()))
    assert _penalty(conv) == pytest.approx(1.0)
    assert _penalty(conv, (1.0, 2.5, 1.0)) == pytest.approx(2.5)
    assert _penalty(conv, {"diffusive": 0.0}) == 0.0
    assert hyperbolicity(conv)[""] == pytest.approx(0.0, abs=1e-12) and hyperbolicity(conv)[""] < 1


def test_each_term_is_its_share_of_the_moment_energy():
    g = torch.Generator().manual_seed(1)
    M, S = torch.randn(2, 3, 3, dtype=F64, generator=g)
    skew = (M - M.T) / 2
    # M·∂x (‖skew M‖² antisymmetric) + (S + Sᵀ)·1 (all zeroth-order energy is symmetric)
    weight = _kron(M, stencil.dx()) + _kron(S + S.T, stencil.identity())
    total = M.square().sum() + (S + S.T).square().sum()
    conv = _conv(weight)
    expected = {
        (1, 0, 0): skew.square().sum() / total,
        (0, 1, 0): 0.0,
        (0, 0, 1): (S + S.T).square().sum() / total,
    }
    for w, value in expected.items():
        assert _penalty(conv, w) == pytest.approx(float(value), abs=1e-12)
    assert hyperbolicity(conv)[""] == pytest.approx(1 - float(sum(expected.values())))


def test_penalty_is_scale_free():
    torch.manual_seed(6)
    conv = nn.Conv2d(5, 5, 3).double()
    p = hyperbolicity_penalty(conv)
    with torch.no_grad():
        conv.weight.mul_(7.0)
    torch.testing.assert_close(hyperbolicity_penalty(conv), p)


def test_a_gradient_step_reduces_the_penalty():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(4, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 5))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    values = []
    for _ in range(5):
        opt.zero_grad()
        penalty = hyperbolicity_penalty(model)
        penalty.backward()
        opt.step()
        values.append(penalty.item())
    assert all(b < a for a, b in zip(values, values[1:])), values
    assert model[0].bias.grad is None or float(model[0].bias.grad.abs().max()) == 0.0


@pytest.mark.parametrize("seed", range(5))
def test_scores_of_random_convs_lie_in_the_unit_interval(seed):
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(6, 6, 3), nn.Conv2d(6, 6, 3, groups=3), nn.Conv2d(6, 6, 5, groups=6), nn.Conv2d(6, 6, 3, dilation=2)
    )
    scores = hyperbolicity(model)
    assert list(scores) == ["0", "1", "2", "3"]
    assert all(0.0 < s < 1.0 for s in scores.values()), scores
    # the values themselves, against the definitions computed independently (float64 sums of ≤ 900 terms: 1e-12)
    for name, conv in zip(["0", "1", "2", "3"], model):
        assert scores[name] == pytest.approx(_reference_score(conv), abs=1e-12), name
    shares = [sum(t[:3]) / t[3] for t in map(_reference_terms, model)]
    # the penalty runs in the model's float32: relative rounding ~1e-6 on sums of a few hundred terms
    assert _penalty(model) == pytest.approx(sum(shares) / len(shares), rel=1e-5)


@pytest.mark.parametrize("groups", [2, 6])
def test_grouped_convs_are_read_as_block_diagonal_systems(groups):
    torch.manual_seed(3)
    grouped = nn.Conv2d(6, 6, 3, groups=groups).double()
    dense = nn.Conv2d(6, 6, 3).double()
    with torch.no_grad():  # the same operator with explicit zeros between the groups
        dense.weight.zero_()
        n = 6 // groups
        for g in range(groups):
            dense.weight[g * n:(g + 1) * n, g * n:(g + 1) * n] = grouped.weight[g * n:(g + 1) * n]
    for w in [(1, 0, 0), (0, 1, 0), (0, 0, 1)]:
        torch.testing.assert_close(hyperbolicity_penalty(grouped, w), hyperbolicity_penalty(dense, w))


def test_depthwise_transport_is_hyperbolic():
    """Per-channel speeds c_i·∂x + d_i·∂y: diagonal, hence symmetric, first-order matrices."""
    speeds = torch.randn(2, 4, dtype=F64, generator=torch.Generator().manual_seed(4))
    weight = speeds[0, :, None, None, None] * stencil.dx(dtype=F64) + speeds[1, :, None, None, None] * stencil.dy(
        dtype=F64
    )
    conv = _conv(weight, groups=4)
    assert _penalty(conv) < 1e-12
    with torch.no_grad():  # + a decay term: zeroth order, symmetric, penalised
        conv.weight[:, :, 1, 1] -= 0.1
    # the centre tap only moves M00 = −0.1·I (4 channels: ‖sym M00‖² = 4·0.01); ∂x, ∂y keep M01 = diag(c),
    # M10 = diag(d) and have no other moment, so E = Σc² + Σd² + 0.04
    zeroth = 4 * 0.1**2
    energy = float(speeds.square().sum()) + zeroth
    assert _penalty(conv, (0, 0, 1)) == pytest.approx(zeroth / energy, rel=1e-12)
    assert _penalty(conv, (1, 1, 0)) == pytest.approx(0.0, abs=1e-12)
    assert hyperbolicity(conv)[""] == pytest.approx(1 - zeroth / energy, abs=1e-12)


def test_models_without_square_convs_give_a_zero_tensor():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 1), nn.Linear(4, 4))
    p = hyperbolicity_penalty(model)
    assert p.shape == () and float(p) == 0.0 and p.device == model[0].weight.device
    assert _penalty(nn.ReLU()) == 0.0
    assert hyperbolicity(model) == {}


def test_resnet18_scores_exactly_its_square_channel_3x3_convs():
    from torchvision.models import resnet18

    torch.manual_seed(5)
    model = resnet18(weights=None)
    expected = {
        name
        for name, m in model.named_modules()
        if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3) and m.in_channels == m.out_channels
    }
    scores = hyperbolicity(model)
    assert set(scores) == expected and len(expected) == 13
    modules = dict(model.named_modules())
    for name, score in scores.items():  # float64 sums of up to 2.4M squares: far inside 1e-12
        assert score == pytest.approx(_reference_score(modules[name]), abs=1e-12), name
    hyperbolicity_penalty(model).backward()
    with_grad = {n.rsplit(".", 1)[0] for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad == expected


def test_invalid_weights():
    conv = nn.Conv2d(2, 2, 3)
    with pytest.raises(ValueError, match="valid keys: antisymmetric, diffusive, zeroth"):
        hyperbolicity_penalty(conv, {"dispersive": 1.0})
    for bad in [(1.0, 1.0), (1.0, -1.0, 1.0)]:
        with pytest.raises(ValueError, match="3 numbers ≥ 0"):
            hyperbolicity_penalty(conv, bad)


def test_penalty_of_a_model_is_the_mean_of_its_layers_penalties():
    # the penalty batches convs of one shape: it must equal the layer-by-layer mean, in any module order,
    # with grouped convs, other sizes and dilations mixed in, and give every layer its own gradient
    torch.manual_seed(0)
    convs = [
        nn.Conv2d(4, 4, 3, padding=1),
        nn.Conv2d(6, 6, 3, padding=1, groups=2),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.Conv2d(4, 4, 5, padding=2),
        nn.Conv2d(4, 4, 3, padding=2, dilation=2),
        nn.Conv2d(4, 4, 3, padding=1),
    ]
    model = nn.Sequential(*convs).to(F64)
    weights = (1.0, 0.5, 2.0)
    each = [_penalty(nn.Sequential(c), weights) for c in convs]
    assert _penalty(model, weights) == pytest.approx(sum(each) / len(each), rel=1e-12)
    hyperbolicity_penalty(model, weights).backward()
    for c in convs:
        alone = c.weight.grad.clone() * len(convs)
        c.weight.grad = None
        hyperbolicity_penalty(nn.Sequential(c), weights).backward()
        torch.testing.assert_close(alone, c.weight.grad, rtol=1e-10, atol=1e-12)


def test_pdeconv_layers_are_scored_as_their_operator_matrices():
    from pdeconv.layers import DifferentialConv2d, SymmetricHyperbolic2d
    from pdeconv.regularize import scored_layers

    torch.manual_seed(11)
    diff = DifferentialConv2d(3, 4).double()
    hyper = SymmetricHyperbolic2d(3, dissipation=0.3, spacing=0.5).double()
    unmixed = DifferentialConv2d(3, 4, mix=False)  # C → 4C: not a C×C system, not scored
    model = nn.Sequential(diff, hyper, unmixed)
    assert scored_layers(model) == {"0": "DifferentialConv2d", "1": "SymmetricHyperbolic2d"}
    scores = hyperbolicity(model)
    # the depthwise ×4 + 1×1 pair is the dense conv with its folded weight
    dense = nn.Conv2d(3, 3, 3, padding=1, bias=False).double()
    with torch.no_grad():
        dense.weight.copy_(diff.folded_weight())
    assert scores["0"] == pytest.approx(hyperbolicity(dense)[""], abs=1e-12)
    # A·∂x + B·∂y + C − γ: only the damping is not hyperbolic; E = ‖A‖² + ‖B‖² + ‖C − γI‖² in physical units
    gamma, c = float(hyper.gamma.detach()), 3
    eye = torch.eye(c, dtype=torch.float64)
    energy = (hyper.A.square().sum() + hyper.B.square().sum() + (hyper.C - gamma * eye).square().sum()).detach()
    assert scores["1"] == pytest.approx(1 - c * gamma**2 / float(energy), abs=1e-10)
    assert hyperbolicity(SymmetricHyperbolic2d(3).double()) == {"": pytest.approx(1.0, abs=1e-12)}


def test_the_penalty_reaches_the_parameters_of_pdeconv_layers():
    from pdeconv.layers import DifferentialConv2d, SymmetricHyperbolic2d

    torch.manual_seed(12)
    model = nn.Sequential(DifferentialConv2d(3, 4), SymmetricHyperbolic2d(3, dissipation=0.3))
    hyperbolicity_penalty(model).backward()
    diff, hyper = model
    assert diff.weight.grad.abs().sum() > 0 and diff.pointwise.weight.grad.abs().sum() > 0
    assert hyper.log_gamma.grad > 0  # less damping, more hyperbolic
