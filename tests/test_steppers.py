"""pdeconv.layers.steppers: residual connections as Euler, leapfrog and Verlet integrators; exact adjoints."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from pdeconv.boundary import convolve, pad, set_boundary
from pdeconv.layers import TABLEAUS, EulerStep, Leapfrog, RungeKutta, Verlet, runge_kutta_step
from pdeconv.layers.steppers import SymmetricConv, conv_adjoint

F64 = torch.float64


class Scale(nn.Module):
    """f(u) = λu, the linear test equation."""

    def __init__(self, lam: float):
        super().__init__()
        self.lam = lam

    def forward(self, u):
        return self.lam * u


class Constant(nn.Module):
    def forward(self, u):
        return torch.ones_like(u)


# ---------------------------------------------------------------------------------------- Runge–Kutta


class Logistic(nn.Module):
    """f(u) = u(1 − u): nonlinear, so every order condition of a method shows (not only the linear ones)."""

    def forward(self, u):
        return u * (1 - u)


def _logistic(u0, t):
    return 1 / (1 + (1 / u0 - 1) * np.exp(-t))


@pytest.mark.parametrize("method", list(TABLEAUS))
def test_runge_kutta_observed_order_of_accuracy(method):
    u0 = torch.tensor([0.1, 0.3, 0.8], dtype=F64)
    t_end, errors = 2.0, []
    for steps in (10, 20, 40):
        out = RungeKutta(Logistic(), t_end / steps, method=method, steps=steps)(u0)
        errors.append(float((out - torch.from_numpy(_logistic(u0.numpy(), t_end))).abs().max()))
    orders = [np.log2(errors[i] / errors[i + 1]) for i in range(2)]
    assert all(abs(p - TABLEAUS[method].order) < 0.2 for p in orders), orders


def test_euler_tableau_is_the_resnet_block_and_rk4_is_classical():
    torch.manual_seed(0)
    f, u, h = nn.Conv2d(2, 2, 3, padding=1).double(), torch.randn(1, 2, 5, 8, dtype=F64), 0.3
    with torch.no_grad():
        torch.testing.assert_close(runge_kutta_step(f, u, h, "euler"), EulerStep(f, h)(u), rtol=0, atol=0)
        k1 = f(u)
        k2 = f(u + h / 2 * k1)
        k3 = f(u + h / 2 * k2)
        k4 = f(u + h * k3)
        torch.testing.assert_close(runge_kutta_step(f, u, h), u + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4))
    with pytest.raises(ValueError, match="valid ones: euler, heun, rk3, rk4"):
        runge_kutta_step(f, u, h, "rk5")


# ---------------------------------------------------------------------------------------------- Euler


@pytest.mark.parametrize("lam, h, steps", [(-0.7, 0.3, 5), (2.0, 0.1, 3), (-3.0, 1.0, 4)])
def test_euler_amplification_factor_is_one_plus_h_lambda(lam, h, steps):
    u0 = torch.randn(2, 3, 4, 5, dtype=F64, generator=torch.Generator().manual_seed(0))
    out = EulerStep(Scale(lam), h, steps=steps)(u0)
    torch.testing.assert_close(out, (1 + h * lam) ** steps * u0, rtol=1e-14, atol=0)


def test_euler_one_module_per_step_in_order_and_shared_weights_by_default():
    u0 = torch.full((1, 1, 2, 3), 0.5, dtype=F64)
    # f_0 = 1 then f_1 = id: (u + 1)·2; the other order would give 2u + 1
    torch.testing.assert_close(EulerStep([Constant(), nn.Identity()])(u0), (u0 + 1) * 2)
    shared = EulerStep(nn.Conv2d(2, 2, 3, padding=1), steps=4)
    assert shared.steps == 4 and len(shared.fs) == 1 and sum(p.numel() for p in shared.parameters()) == 2 * 2 * 9 + 2
    with pytest.raises(ValueError, match="one module per step"):
        EulerStep([Constant(), Constant()], steps=3)


def test_f_is_the_module_given_and_function_n_the_one_of_step_n():
    conv = nn.Conv2d(2, 2, 3, padding=1)
    shared = EulerStep(conv, steps=3)
    assert shared.f is conv and all(shared.function(n) is conv for n in range(3))
    a, b = Constant(), nn.Identity()
    per_step = RungeKutta([a, b], 0.1)
    assert isinstance(per_step.f, nn.ModuleList) and list(per_step.f) == [a, b]
    assert per_step.function(0) is a and per_step.function(1) is b


def test_one_batchnorm_shared_over_steps_warns_and_per_step_modules_do_not():
    import warnings

    with pytest.warns(UserWarning, match="running statistics"):
        EulerStep(nn.Sequential(nn.Conv2d(2, 2, 3, padding=1), nn.BatchNorm2d(2)), steps=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        EulerStep(nn.Sequential(nn.Conv2d(2, 2, 3, padding=1), nn.BatchNorm2d(2)), steps=1)
        EulerStep([nn.Sequential(nn.Conv2d(2, 2, 3, padding=1), nn.BatchNorm2d(2)) for _ in range(2)])
        EulerStep(nn.Sequential(nn.Conv2d(2, 2, 3, padding=1), nn.BatchNorm2d(2, track_running_stats=False)),
                  steps=2)


def test_scripted_steppers_equal_eager():
    torch.manual_seed(0)
    u = torch.randn(2, 2, 5, 6, dtype=F64)
    for layer in (EulerStep(nn.Conv2d(2, 2, 3, padding=1), 0.1, steps=3),
                  EulerStep([nn.Conv2d(2, 2, 3, padding=1), nn.Conv2d(2, 2, 1)], 0.1),
                  Leapfrog(nn.Conv2d(2, 2, 3, padding=1), 0.1, steps=3)):
        layer = layer.to(F64)
        # the same ops in the same order on one CPU: only rounding can differ, and it does not accumulate here
        torch.testing.assert_close(torch.jit.script(layer)(u), layer(u), rtol=1e-12, atol=1e-12)


def test_learned_step_size_is_a_parameter_with_a_gradient():
    layer = EulerStep(Scale(-1.0), 0.5, steps=2, learn_h=True)
    assert [n for n, _ in layer.named_parameters()] == ["h"]
    layer(torch.ones(1, 1, 2, 2)).sum().backward()
    # d/dh Σ 4·(1 − h)² = −8(1 − h) = −4 at h = 0.5
    torch.testing.assert_close(layer.h.grad, torch.tensor(-4.0))


# ---------------------------------------------------------------------------------------------- Leapfrog


@pytest.mark.parametrize("lam, h", [(-1.0, 0.5), (-3.0, 1.0), (0.5, 0.4)])
def test_leapfrog_follows_its_characteristic_roots(lam, h):
    """u_n = c₁r₁ⁿ + c₂r₂ⁿ with r² − (2 + h²λ)r + 1 = 0; |r| = 1 for −4 < h²λ < 0."""
    g = torch.Generator().manual_seed(1)
    u0, u_prev = torch.randn(2, 3, 4, dtype=F64, generator=g), torch.randn(2, 3, 4, dtype=F64, generator=g)
    r1, r2 = np.roots([1.0, -(2 + h * h * lam), 1.0]).astype(complex)
    # u_{-1} = c₁/r₁ + c₂/r₂ and u_0 = c₁ + c₂
    c1 = (u_prev.numpy() - u0.numpy() / r2) / (1 / r1 - 1 / r2)
    c2 = u0.numpy() - c1
    for n in (1, 2, 7, 20):
        expected = (c1 * r1**n + c2 * r2**n).real
        np.testing.assert_allclose(Leapfrog(Scale(lam), h, steps=n)(u0, u_prev).numpy(), expected, rtol=1e-9, atol=1e-9)
    assert (abs(abs(r1) - 1) < 1e-12) == (-4 < h * h * lam < 0)


def test_leapfrog_default_start_is_at_rest():
    u0 = torch.randn(1, 1, 3, 3, dtype=F64, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(Leapfrog(Scale(-2.0), 0.3)(u0), u0 + 0.09 * (-2.0) * u0)  # u_{-1} = u_0


def _wrong_adjoint_f(K: nn.Conv2d, bc: str):
    """f(u) = −K̃K u with K̃ = the channel-transposed kernel WITHOUT the spatial flip (the known bug)."""

    def f(u):
        return -F.conv2d(pad(K(u), 1, bc), K.weight.transpose(0, 1))

    return f


class Lambda(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, u):
        return self.fn(u)


def _leapfrog_run(f: nn.Module, u0, h, steps):
    """States and the leapfrog energy ‖u_{n+1} − u_n‖²/h² − ⟨u_{n+1}, f(u_n)⟩ (conserved when f = −S, S = Sᵀ)."""
    stepper = Leapfrog(f, h)
    prev, u, energies, norms = u0, u0, [], []
    with torch.no_grad():
        for _ in range(steps):
            fu = f(u)
            nxt = stepper(u, prev)
            energies.append(float((nxt - u).square().sum() / h**2 - (nxt * fu).sum()))
            norms.append(float(nxt.norm()))
            prev, u = u, nxt
    return np.array(energies), np.array(norms)


@pytest.mark.parametrize("bc", ["periodic", "dirichlet"])
def test_leapfrog_with_exact_adjoint_conserves_energy_and_without_the_flip_it_blows_up(bc):
    torch.manual_seed(3)
    f = SymmetricConv(1, 2, bc=bc, activation=nn.Identity(), bias=False).double()
    with torch.no_grad():  # ‖K‖ ≤ Σ_c ‖K_c‖₁ ≤ 1, so h²‖KᵀK‖ ≤ 1 < 4: the exact scheme is stable
        f.conv.weight.div_(f.conv.weight.abs().sum(dim=(1, 2, 3), keepdim=True) * 2)
    u0 = torch.randn(1, 1, 16, 12, dtype=F64)
    energies, norms = _leapfrog_run(f, u0, 1.0, 1000)
    assert energies.min() > 0
    assert np.ptp(energies) < 1e-10 * energies[0]
    assert norms.max() < 10 * float(u0.norm())

    wrong = Lambda(_wrong_adjoint_f(f.conv, bc))
    energies, norms = _leapfrog_run(wrong, u0, 1.0, 1000)
    assert np.ptp(energies) > abs(energies[0]) and norms[-1] > 1e3 * float(u0.norm())


# ---------------------------------------------------------------------------------------------- Verlet


@pytest.mark.parametrize("h, steps", [(0.3, 1), (0.3, 25), (1.5, 6)])
def test_verlet_harmonic_oscillator_is_the_exact_symplectic_matrix(h, steps):
    g = torch.Generator().manual_seed(4)
    y0, z0 = torch.randn(2, 2, 3, 4, 5, dtype=F64, generator=g)
    out = Verlet(nn.Identity(), nn.Identity(), h, steps=steps)(torch.cat([y0, z0], 1))
    M = np.array([[1 - h * h, h], [-h, 1.0]])
    Mn = np.linalg.matrix_power(M, steps)
    torch.testing.assert_close(out[:, :3], Mn[0, 0] * y0 + Mn[0, 1] * z0)
    torch.testing.assert_close(out[:, 3:], Mn[1, 0] * y0 + Mn[1, 1] * z0)
    # the library's own Jacobian on one (y, z) pixel is that matrix, symplectic: det 1 and JᵀΩJ = Ω
    # (float64, ≤ 25 products of 2×2 matrices with entries ≤ ~1.3: rounding far below 1e-10)
    stepper = Verlet(nn.Identity(), nn.Identity(), h, steps=steps)
    J = torch.autograd.functional.jacobian(
        lambda v: stepper(v.reshape(1, 2, 1, 1)).flatten(), torch.zeros(2, dtype=F64)
    )
    torch.testing.assert_close(J, torch.from_numpy(Mn), rtol=0, atol=1e-10)
    Omega = torch.tensor([[0.0, 1.0], [-1.0, 0.0]], dtype=F64)
    torch.testing.assert_close(J.T @ Omega @ J, Omega, rtol=0, atol=1e-10)
    assert float(torch.linalg.det(J)) == pytest.approx(1.0, abs=1e-10)


def test_verlet_with_identity_kinetic_part_is_leapfrog():
    torch.manual_seed(5)
    f_z = SymmetricConv(2, 3, bc="periodic", activation=nn.Tanh()).double()
    u0 = torch.randn(1, 4, 6, 5, dtype=F64)
    y0, z0 = u0[:, :2], u0[:, 2:]
    h = 0.4
    y = Verlet(nn.Identity(), f_z, h, steps=7)(u0)[:, :2]
    torch.testing.assert_close(y, Leapfrog(Lambda(lambda v: -f_z(v)), h, steps=7)(y0, y0 - h * z0))


@pytest.mark.parametrize("exact", [True, False])
def test_verlet_with_symmetric_layers_is_symplectic_only_with_the_exact_adjoint(exact):
    torch.manual_seed(6)
    f_y = SymmetricConv(1, 2, bc="periodic", activation=nn.Tanh()).double()
    f_z = SymmetricConv(1, 2, bc="periodic", activation=nn.Tanh()).double()
    if not exact:
        f_y = Lambda(lambda u, K=f_y.conv: -F.conv2d(pad(torch.tanh(K(u)), 1, "periodic"), K.weight.transpose(0, 1)))
    stepper = Verlet(f_y, f_z, 0.5, steps=3)
    u0 = torch.randn(1, 2, 4, 3, dtype=F64)
    J = torch.autograd.functional.jacobian(lambda v: stepper(v.reshape(u0.shape)).flatten(), u0.flatten())
    n = J.shape[0] // 2  # flattened (N=1, C=2, H, W): the y channel first, then z
    Omega = torch.zeros_like(J)
    Omega[:n, n:], Omega[n:, :n] = torch.eye(n), -torch.eye(n)
    error = float((J.T @ Omega @ J - Omega).abs().max())
    assert (error < 1e-12) == exact, error


def test_verlet_channel_split():
    with pytest.raises(ValueError, match="split"):
        Verlet(nn.Identity(), nn.Identity())(torch.zeros(1, 3, 2, 2))
    out = Verlet(nn.Identity(), Lambda(lambda y: y[:, :1]), 1.0, split=2)(torch.ones(1, 3, 2, 2))
    # y = channels 0, 1 and z = channel 2: z ← 1 − 1·y[:, :1] = 0, then y ← y + 1·z = 1 (exact)
    expected = torch.tensor([1.0, 1.0, 0.0])[None, :, None, None].expand(1, 3, 2, 2)
    assert torch.equal(out, expected)
    pair = Verlet(SymmetricConv(1), [SymmetricConv(1), SymmetricConv(1)], steps=2)
    assert len(pair.state_dict()) == 6  # each weight and bias once
    with pytest.raises(ValueError, match="f_y gives 1 steps and f_z 2"):
        Verlet(nn.Identity(), [nn.Identity(), nn.Identity()])


# ---------------------------------------------------------------------------------------------- adjoints


@settings(max_examples=30, deadline=None, derandomize=True)
@given(
    bc=st.sampled_from(["dirichlet", "periodic"]),
    groups=st.sampled_from([1, 2]),
    c_in=st.integers(1, 3),
    c_out=st.integers(1, 3),
    kh=st.sampled_from([1, 3, 5]),
    kw=st.sampled_from([1, 3, 5]),
    H=st.integers(3, 9),
    W=st.integers(3, 9),
    seed=st.integers(0, 2**16),
)
def test_adjoint_identity(bc, groups, c_in, c_out, kh, kw, H, W, seed):
    """⟨K u, v⟩ = ⟨u, Kᵀ v⟩ for random weights, C_out ≠ C_in, non-square images and kernels, groups."""
    g = torch.Generator().manual_seed(seed)
    c_in, c_out = c_in * groups, c_out * groups
    w = torch.randn(c_out, c_in // groups, kh, kw, dtype=F64, generator=g)
    u = torch.randn(2, c_in, H, W, dtype=F64, generator=g)
    v = torch.randn(2, c_out, H, W, dtype=F64, generator=g)
    lhs = (convolve(u, w, bc, groups=groups) * v).sum()
    rhs = (u * conv_adjoint(v, w, bc, groups=groups)).sum()
    torch.testing.assert_close(lhs, rhs, rtol=1e-12, atol=1e-10)


@pytest.mark.parametrize("bc", ["dirichlet", "periodic"])
def test_adjoint_of_a_single_kernel_and_of_central_differences(bc):
    from pdeconv import stencil

    u = torch.randn(1, 2, 5, 8, dtype=F64, generator=torch.Generator().manual_seed(7))
    for k in (stencil.dx(), stencil.dy()):  # Dᵀ = −D for zero and circular padding
        torch.testing.assert_close(conv_adjoint(u, k, bc), -convolve(u, k, bc))


def test_adjoint_fails_for_reflect_padding_and_is_refused():
    g = torch.Generator().manual_seed(8)
    w = torch.randn(3, 2, 3, 3, dtype=F64, generator=g)
    u, v = torch.randn(1, 2, 6, 7, dtype=F64, generator=g), torch.randn(1, 3, 6, 7, dtype=F64, generator=g)
    lhs = (convolve(u, w, "neumann") * v).sum()
    flipped = (u * conv_adjoint(v, w, "dirichlet")).sum()
    assert abs(float(lhs - flipped)) > 1e-3  # the flipped-kernel "adjoint" is wrong under reflect padding
    for bc in ("neumann", "replicate"):
        with pytest.raises(ValueError, match="no flipped-kernel adjoint"):
            conv_adjoint(v, w, bc)
    with pytest.raises(ValueError, match="unknown boundary condition"):
        conv_adjoint(v, w, "mirror")


def test_symmetric_conv_is_negative_semidefinite_and_follows_set_boundary():
    torch.manual_seed(9)
    f = SymmetricConv(2, 3, bc="periodic", activation=nn.Tanh()).double()
    u = torch.randn(1, 2, 5, 6, dtype=F64)
    J = torch.autograd.functional.jacobian(lambda v: f(v.reshape(u.shape)).flatten(), u.flatten())
    torch.testing.assert_close(J, J.T)
    assert float(torch.linalg.eigvalsh(J).max()) < 1e-12
    set_boundary(f, "neumann")
    with pytest.raises(ValueError, match="no flipped-kernel adjoint"):
        f(u)
    with pytest.raises(ValueError, match="exact adjoint"):
        SymmetricConv(2, bc="replicate")


def test_integrating_factor_rk4_is_exact_for_the_linear_part_and_fourth_order_otherwise():
    import numpy as np

    from pdeconv.layers.steppers import integrating_factor_rk4_step

    lam = np.array([-50.0 + 3j, -0.5 + 0j])  # a stiff and a gentle mode, as Fourier symbols are
    v0 = np.array([1.0 + 0.5j, 0.3 - 0.2j])

    def run(nonlinear, T, n):
        h = T / n
        E, E2 = np.exp(lam * h), np.exp(lam * h / 2)
        v = v0
        for _ in range(n):
            v = integrating_factor_rk4_step(v, nonlinear, E, E2, h)
        return v

    # N = 0: exact but for round-off (three products of exp(hλ) against one exp(λ))
    np.testing.assert_allclose(run(lambda v: 0 * v, 1.0, 3), v0 * np.exp(lam), rtol=1e-12)

    def N(v):  # a smooth coupling of both modes
        return 0.8 * np.sin(v[::-1]) - 0.3 * v**2

    reference = run(N, 1.0, 8192)
    errors = [np.abs(run(N, 1.0, n) - reference).max() for n in (64, 128)]  # h·|λ| < 1: the asymptotic regime
    assert math.log2(errors[0] / errors[1]) == pytest.approx(4.0, abs=0.3)
