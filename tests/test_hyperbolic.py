"""pdeconv.layers.hyperbolic: symmetric hyperbolic systems (learned, Maxwell TE, Dirac) by implicit midpoint."""

import warnings

import numpy as np
import pytest
import torch

from pdeconv import stencil
from pdeconv.layers import SymmetricHyperbolic2d, dirac, maxwell_te

F64 = torch.float64


def _random_system(c: int, seed: int, **kwargs) -> SymmetricHyperbolic2d:
    g = torch.Generator().manual_seed(seed)
    P, Q, R = torch.randn(3, c, c, dtype=F64, generator=g)
    return SymmetricHyperbolic2d.from_matrices(P + P.T, Q + Q.T, R - R.T, **kwargs)


@pytest.mark.parametrize("bc", ["periodic", "dirichlet"])
def test_energy_is_conserved_over_500_steps(bc):
    layer = _random_system(3, 0, h=0.5, bc=bc)
    u0 = torch.randn(2, 3, 16, 12, dtype=F64, generator=torch.Generator().manual_seed(1))
    u = u0
    with torch.no_grad():
        for _ in range(500):
            u = layer(u)
    drift = (layer.energy(u) - layer.energy(u0)).abs() / layer.energy(u0)
    assert float(drift.max()) < 1e-10
    assert float((u - u0).norm()) > 0.5 * float(u0.norm())  # it did evolve


@pytest.mark.parametrize("bc", ["periodic", "dirichlet"])
def test_forward_solves_the_implicit_midpoint_equation_of_the_convolution(bc):
    """(u₁ − u₀)/h = (L − γ)(u₀ + u₁)/2 with L applied as one 3×3 conv with padding bc (non-square grid)."""
    layer = _random_system(3, 2, h=0.7, bc=bc, dissipation=0.3)
    u0 = torch.randn(2, 3, 5, 8, dtype=F64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        u1 = layer(u0)
        torch.testing.assert_close((u1 - u0) / 0.7, layer.time_derivative((u0 + u1) / 2), rtol=0, atol=1e-12)


@pytest.mark.parametrize("bc", ["periodic", "dirichlet"])
def test_the_spatial_operator_is_skew_adjoint(bc):
    layer = _random_system(4, 4, bc=bc)
    g = torch.Generator().manual_seed(5)
    u, v = torch.randn(2, 1, 4, 7, 5, dtype=F64, generator=g)
    with torch.no_grad():
        torch.testing.assert_close((layer.time_derivative(u) * v).sum(), -(u * layer.time_derivative(v)).sum())


def test_kernel_is_the_operator_matrix_of_the_system():
    layer = _random_system(3, 6, spacing=0.5)
    mats = stencil.operator_matrices(layer.kernel(), h=0.5)
    expected = {(0, 1): layer.A, (1, 0): layer.B, (0, 0): layer.C}  # (y-order, x-order): A·∂x + B·∂y + C
    for ab, M in mats.items():
        torch.testing.assert_close(M, expected.get(ab, torch.zeros_like(M)), rtol=0, atol=1e-12)


def test_steps_compose():
    u0 = torch.randn(1, 2, 6, 9, dtype=F64, generator=torch.Generator().manual_seed(7))
    one, five = _random_system(2, 8, h=0.3), _random_system(2, 8, h=0.3, steps=5)
    u = u0
    for _ in range(5):
        u = one(u)
    torch.testing.assert_close(five(u0), u)


def test_dissipation_decays_the_energy_monotonically_at_the_midpoint_rate():
    layer = _random_system(3, 9, h=0.5, dissipation=0.2)
    u = torch.randn(1, 3, 16, 12, dtype=F64, generator=torch.Generator().manual_seed(10))
    energies = [float(layer.energy(u))]
    with torch.no_grad():
        for _ in range(50):
            u = layer(u)
            energies.append(float(layer.energy(u)))
    assert np.all(np.diff(energies) < 0)
    # γ alone (A = B = C = 0): each step multiplies u by (1 − hγ/2)/(1 + hγ/2) exactly
    zero = torch.zeros(3, 3, dtype=F64)
    damping = SymmetricHyperbolic2d.from_matrices(zero, zero, h=0.5, dissipation=0.2)
    torch.testing.assert_close(damping(u), u * (1 - 0.05) / (1 + 0.05))


def _centre(u: torch.Tensor, axis: int) -> float:
    density = u.square().sum(dim=(0, 1)).sum(dim=1 - axis)  # axis 0 = y (rows), 1 = x (columns)
    coords = torch.arange(density.numel(), dtype=F64)
    return float((coords * density).sum() / density.sum())


def _packet(n: int, centre: float, width: float) -> torch.Tensor:
    return torch.exp(-((torch.arange(n, dtype=F64) - centre) ** 2) / (2 * width**2))


@pytest.mark.parametrize("spacing, h, T", [(1.0, 0.5, 40.0), (0.5, 0.25, 20.0)])
@pytest.mark.parametrize(
    "direction, fields",  # a pulse travels along the Poynting vector E × H
    [("+x", {1: 1, 2: 1}), ("-x", {1: 1, 2: -1}), ("+y", {0: -1, 2: 1}), ("-y", {0: 1, 2: 1})],
)
def test_maxwell_pulse_moves_at_speed_one_along_the_poynting_vector(spacing, h, T, direction, fields):
    axis = 1 if direction[1] == "x" else 0
    expected = 1.0 if direction[0] == "+" else -1.0
    long, short = 96, 6  # plane-wave packet: Gaussian along `axis`, constant across it; it moves 40 px
    g = _packet(long, 48.0 - 20.0 * expected, 5.0)
    profile = g[None, :] if axis == 1 else g[:, None]
    u0 = torch.zeros(1, 3, *((short, long) if axis == 1 else (long, short)), dtype=F64)
    for c, sign in fields.items():
        u0[0, c] = sign * profile
    layer = maxwell_te(h=h, steps=round(T / h), spacing=spacing, dtype=F64)
    with torch.no_grad():
        u = layer(u0)
    speed = (_centre(u, axis) - _centre(u0, axis)) * spacing / T  # physical units
    assert abs(speed - expected) < 0.03, speed


def test_maxwell_coefficients():
    layer = maxwell_te()
    assert not list(layer.parameters())
    # rows: ∂t E_x = ∂y H_z, ∂t E_y = −∂x H_z, ∂t H_z = ∂y E_x − ∂x E_y
    torch.testing.assert_close(layer.A, torch.tensor([[0.0, 0, 0], [0, 0, -1], [0, -1, 0]]))
    torch.testing.assert_close(layer.B, torch.tensor([[0.0, 0, 1], [0, 0, 0], [1, 0, 0]]))
    torch.testing.assert_close(layer.C, torch.zeros(3, 3))


@pytest.mark.parametrize("mass", [0.0, 0.7])
def test_dirac_is_a_clifford_system(mass):
    """A² = B² = I, C² = −m²I, pairwise anticommuting: each component solves Klein–Gordon."""
    layer = dirac(mass=mass, dtype=F64)
    A, B, C, eye = layer.A, layer.B, layer.C, torch.eye(4, dtype=F64)
    torch.testing.assert_close(A @ A, eye)
    torch.testing.assert_close(B @ B, eye)
    torch.testing.assert_close(C @ C, -(mass**2) * eye)
    for X, Y in ((A, B), (A, C), (B, C)):
        torch.testing.assert_close(X @ Y + Y @ X, torch.zeros(4, 4, dtype=F64))
    torch.testing.assert_close(C, -C.T)
    assert float(C.abs().max()) == mass


@pytest.mark.parametrize("axis, spinor", [(1, (1, 1, 0, 0)), (0, (1, 0, 0, 1))])
def test_massless_dirac_packet_moves_at_speed_one(axis, spinor):
    """ψ = (1, 1)·g(x) moves right; ψ = (1, i)·g(y), i.e. u = (1, 0, 0, 1)·g, moves down the rows."""
    g = _packet(96, 33.0, 5.0)  # it moves 30 px: away from the periodic seam
    profile = g[None, :] if axis == 1 else g[:, None]
    u0 = torch.tensor(spinor, dtype=F64)[None, :, None, None] * profile
    with torch.no_grad():
        u = dirac(h=0.5, steps=60, dtype=F64)(u0)
    speed = (_centre(u, axis) - _centre(u0, axis)) / 30.0
    assert abs(speed - 1.0) < 0.03, speed


def test_learned_coefficients_stay_symmetric_skew_and_nonnegative_after_a_step():
    torch.manual_seed(11)
    layer = SymmetricHyperbolic2d(3, h=0.5, steps=2, dissipation=0.1)
    assert {n for n, _ in layer.named_parameters()} == {"P", "Q", "R", "log_gamma"}
    opt = torch.optim.SGD(layer.parameters(), lr=10.0)
    u = torch.randn(2, 3, 5, 8)
    out = layer(u)
    assert out.dtype == torch.float32 and out.shape == u.shape
    (-(out.square().sum())).backward()  # pushes towards growth: γ down, A, B, C anywhere
    opt.step()
    assert (layer.P - layer.P.T).abs().max().item() > 1e-2  # the raw P is not symmetric ...
    torch.testing.assert_close(layer.A, layer.A.T, rtol=0, atol=0)  # ... but A is, by construction
    torch.testing.assert_close(layer.B, layer.B.T, rtol=0, atol=0)
    torch.testing.assert_close(layer.C, -layer.C.T, rtol=0, atol=0)
    assert 0 <= layer.gamma.item() < 0.05, layer.gamma.item()  # a raw γ would have gone negative
    conservative = SymmetricHyperbolic2d(3)
    assert "log_gamma" not in dict(conservative.named_parameters()) and float(conservative.gamma) == 0


def test_invalid_arguments():
    with pytest.raises(ValueError, match="skew-adjointness"):
        SymmetricHyperbolic2d(2, bc="neumann")
    with pytest.raises(ValueError, match="unknown boundary condition"):
        SymmetricHyperbolic2d(2, bc="open")
    with pytest.raises(ValueError, match="A must be a symmetric"):
        SymmetricHyperbolic2d.from_matrices(torch.tensor([[0.0, 1], [0, 0]]), torch.eye(2))
    with pytest.raises(ValueError, match="C must be a skew-symmetric"):
        SymmetricHyperbolic2d.from_matrices(torch.eye(2), torch.eye(2), torch.eye(2))
    with pytest.raises(ValueError, match=r"expected 3 channels"):
        maxwell_te()(torch.zeros(1, 2, 4, 4))


def test_export_and_trace_leave_the_eager_layer_as_it_was():
    # the layer's eigenvectors are cached by grid size; an export must not leave fake tensors in that cache
    torch.manual_seed(0)
    layer, u = SymmetricHyperbolic2d(3).eval(), torch.randn(2, 3, 6, 7)
    expected = layer(u)
    torch.export.export(layer, (u,)).module()(u)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # trace's deprecation and constant warnings
        traced = torch.jit.trace(layer, (u,))
    torch.testing.assert_close(layer(u), expected, rtol=0, atol=0)  # the same eager computation, run again
    torch.testing.assert_close(traced(u), expected, rtol=1e-6, atol=1e-6)


def test_torch_compile_traces_no_cached_python_function():
    """The grid's eigenbasis is computed eagerly (torch.compiler.disable) and cached: Dynamo once warned that it
    traced through an lru_cache-wrapped function ("silent incorrectness is a potential risk")."""
    torch.manual_seed(0)
    layer = SymmetricHyperbolic2d(3)
    u = torch.randn(2, 3, 7, 5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = torch.compile(layer, backend="eager", fullgraph=False)(u)
    assert not [w for w in caught if "lru_cache" in str(w.message)]
    torch.testing.assert_close(out, layer(u), rtol=0, atol=0)  # the same operations, eagerly
