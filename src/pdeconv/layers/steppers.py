"""The residual connection as a time stepper: a ResNet stage integrates an ODE/PDE in depth.

Each stepper maps ``u`` (N, C, H, W) to ``u`` of the same shape, so it can replace a ResNet stage. It takes
``f`` as one module, applied ``steps`` times with shared weights, or as a sequence of modules (a list or
``nn.ModuleList``), one per step, applied in order. ``h`` is the step size (a parameter with ``learn_h``).
Shared weights are shared state too: a BatchNorm inside one shared ``f`` keeps one set of running statistics
for all steps, although each step's activations have their own, so eval mode normalises every step wrongly
(a warning says so); give each step its own module, or use a normalisation without running statistics.

After Ruthotto & Haber, "Deep neural networks motivated by partial differential equations" (2018). Their
stability arguments need the true adjoint Kᵀ of a padded convolution K, which :func:`conv_adjoint` gives
for ``dirichlet`` and ``periodic`` boundaries; :class:`SymmetricConv` is their layer f(u) = −Kᵀσ(Ku + b).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pdeconv.boundary import boundary_condition, boundary_of, pad, padding_mode
from pdeconv.errors import PdeconvError

__all__ = [
    "ButcherTableau",
    "EulerStep",
    "Leapfrog",
    "RK4",
    "RungeKutta",
    "SymmetricConv",
    "TABLEAUS",
    "Verlet",
    "conv_adjoint",
    "integrating_factor_rk4_step",
    "runge_kutta_step",
]

StepFunctions = nn.Module | Sequence[nn.Module]

# Only these paddings make the adjoint of a convolution a convolution with the flipped kernel.
_ADJOINT_BCS = ("dirichlet", "periodic")


def _as_steps(f: StepFunctions, steps: int | None, what: str = "f") -> tuple[nn.ModuleList, int]:
    """``(modules, steps)``: step ``n`` uses ``modules[n % len(modules)]``."""
    if isinstance(f, nn.Module) and not isinstance(f, nn.ModuleList):
        n = 1 if steps is None else steps
        fs = nn.ModuleList([f])
        if n > 1 and any(isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
                         for m in f.modules()):
            warnings.warn(
                f"{what}: one module with BatchNorm shared over {n} steps: its running statistics average over "
                "steps whose activations differ, so in eval mode every step is normalised wrongly. Give each step "
                "its own module (a list), or use GroupNorm / BatchNorm2d(track_running_stats=False)",
                stacklevel=3,
            )
    else:
        fs = nn.ModuleList(f)
        n = len(fs) if steps is None else steps
        if len(fs) == 0 or n != len(fs):
            raise PdeconvError(f"{what}: give one module per step; got {len(fs)} modules for steps={steps}")
    if n < 1:
        raise PdeconvError(f"steps must be ≥ 1; got {n}")
    return fs, n


def _step_size(h: float, learn_h: bool) -> float | nn.Parameter:
    return nn.Parameter(torch.tensor(float(h))) if learn_h else float(h)


class _Stepper(nn.Module):
    """The step functions are ``fs`` (an ``nn.ModuleList``: one shared module, or one per step); ``f`` is the
    module given (the shared one, or the list), :meth:`function` the one of step ``n``."""

    __jit_unused_properties__ = ["f"]

    @property
    def f(self) -> nn.Module:
        """The step function as given: the shared module, or the ``nn.ModuleList`` of one module per step."""
        return self.fs[0] if len(self.fs) == 1 else self.fs

    def function(self, n: int) -> nn.Module:
        """The function of step ``n`` (0-based)."""
        return self.fs[n % len(self.fs)]

    def extra_repr(self) -> str:
        h = float(self.h)
        return f"steps={self.steps}, h={h:g}, learn_h={isinstance(self.h, nn.Parameter)}"


@dataclass(frozen=True)
class ButcherTableau:
    """An explicit Runge–Kutta method of order ``order``: with ``a`` strictly lower triangular (row i holds
    a[i][0..i−1]), the stages are ``k_i = f(u + h·Σ_j a[i][j]·k_j)`` and the step is ``u + h·Σ_i b[i]·k_i``."""

    name: str
    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    order: int

    def __post_init__(self) -> None:
        if len(self.a) != len(self.b) or any(len(row) != i for i, row in enumerate(self.a)):
            raise PdeconvError(f"{self.name}: a must be strictly lower triangular with one row per weight in b")


RK4 = ButcherTableau("rk4", ((), (0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)), (1 / 6, 1 / 3, 1 / 3, 1 / 6), 4)
#: explicit Runge–Kutta methods by name: forward Euler (the ResNet block), Heun, Kutta's third order, classical RK4
TABLEAUS: dict[str, ButcherTableau] = {
    "euler": ButcherTableau("euler", ((),), (1.0,), 1),
    "heun": ButcherTableau("heun", ((), (1.0,)), (0.5, 0.5), 2),
    "rk3": ButcherTableau("rk3", ((), (0.5,), (-1.0, 2.0)), (1 / 6, 2 / 3, 1 / 6), 3),
    "rk4": RK4,
}


def runge_kutta_step(
    f: Callable[[Tensor], Tensor], u: Tensor, h: float | Tensor, tableau: ButcherTableau | str = RK4
) -> Tensor:
    """One step ``u(t) → u(t + h)`` of ``u_t = f(u)`` with an explicit Runge–Kutta method (default RK4).

    Each stage is a residual block ``u + h·Σ a·k``; forward Euler (``"euler"``) is the plain ResNet block.
    """
    if isinstance(tableau, str):
        if tableau not in TABLEAUS:
            raise PdeconvError(f"unknown Runge–Kutta method {tableau!r}; valid ones: {', '.join(TABLEAUS)}")
        tableau = TABLEAUS[tableau]
    stages: list[Tensor] = []
    for row in tableau.a:
        v = u
        for a_ij, k in zip(row, stages):
            if a_ij:
                v = v + (h * a_ij) * k
        stages.append(f(v))
    increment = sum(b_i * k for b_i, k in zip(tableau.b, stages) if b_i)
    return u + h * increment


def integrating_factor_rk4_step(v, nonlinear: Callable, E, E_half, h: float):
    """One step ``v(t) → v(t + h)`` of ``v' = L v + N(v)`` with L diagonal (a Fourier symbol), by Cox &
    Matthews' integrating-factor RK4: ``L`` exactly through ``E = exp(hL)`` and ``E_half = exp(hL/2)``, ``N``
    (``nonlinear``) to fourth order. With ``N = 0`` the step is exact.

    Only arithmetic: ``v``, ``E`` and ``E_half`` may be NumPy arrays or tensors (complex spectra, autograd flows).
    """
    k1 = nonlinear(v)
    k2 = nonlinear(E_half * (v + 0.5 * h * k1))
    k3 = nonlinear(E_half * v + 0.5 * h * k2)
    k4 = nonlinear(E * v + h * E_half * k3)
    return E * v + (h / 6) * (E * k1 + 2 * E_half * (k2 + k3) + k4)


class EulerStep(_Stepper):
    """Forward Euler for ``u_t = f(u)``: ``u ← u + h·f(u)``, ``steps`` times; one step is the ResNet block.

    On the test equation ``u_t = λu`` one step multiplies ``u`` by ``1 + hλ``.
    """

    def __init__(self, f: StepFunctions, h: float = 1.0, *, steps: int | None = None, learn_h: bool = False):
        super().__init__()
        self.fs, self.steps = _as_steps(f, steps)
        self.h = _step_size(h, learn_h)

    def forward(self, u: Tensor) -> Tensor:
        if len(self.fs) == 1:  # written so that torch.jit.script compiles it
            f = self.fs[0]
            for _ in range(self.steps):
                u = u + self.h * f(u)
        else:
            for f in self.fs:
                u = u + self.h * f(u)
        return u


class RungeKutta(_Stepper):
    """``steps`` explicit Runge–Kutta steps of ``u_t = f(u)`` (:func:`runge_kutta_step`), ``method`` by name or
    tableau; ``RungeKutta(f, h, method="euler")`` is :class:`EulerStep`. Each step is one layer made of as many
    residual stages as the method has (4 for ``rk4``), all with the step's ``f``."""

    def __init__(
        self,
        f: StepFunctions,
        h: float = 1.0,
        *,
        method: ButcherTableau | str = "rk4",
        steps: int | None = None,
        learn_h: bool = False,
    ):
        super().__init__()
        self.fs, self.steps = _as_steps(f, steps)
        self.h = _step_size(h, learn_h)
        self.tableau = TABLEAUS.get(method) if isinstance(method, str) else method
        if self.tableau is None:
            raise PdeconvError(f"unknown Runge–Kutta method {method!r}; valid ones: {', '.join(TABLEAUS)}")

    def forward(self, u: Tensor) -> Tensor:
        for n in range(self.steps):
            u = runge_kutta_step(self.function(n), u, self.h, self.tableau)
        return u

    def extra_repr(self) -> str:
        return f"method={self.tableau.name}, {super().extra_repr()}"


class Leapfrog(_Stepper):
    """Leapfrog for the second-order (hyperbolic) ``u_tt = f(u)``: ``u_{n+1} = 2u_n − u_{n−1} + h²·f(u_n)``.

    ``forward(u, u_prev)`` starts from ``u_0 = u`` and ``u_{−1} = u_prev``; by default ``u_{−1} = u_0``
    (Ruthotto & Haber: zero initial velocity, first-order accurate; ``u_prev = u + h²/2·f(u)`` is the
    second-order start at rest). Returns ``u_steps``. On ``u_tt = λu`` the growth factors are the roots of
    ``r² − (2 + h²λ)·r + 1 = 0``; their product is 1, so for ``−4 < h²λ < 0`` both lie on the unit circle:
    no growth and no decay. With ``f(u) = −KᵀKu`` and the exact adjoint (:class:`SymmetricConv`), the discrete
    energy ``‖u_{n+1} − u_n‖²/h² + ⟨u_{n+1}, KᵀK u_n⟩`` is conserved exactly.
    """

    def __init__(self, f: StepFunctions, h: float = 1.0, *, steps: int | None = None, learn_h: bool = False):
        super().__init__()
        self.fs, self.steps = _as_steps(f, steps)
        self.h = _step_size(h, learn_h)

    def forward(self, u: Tensor, u_prev: Optional[Tensor] = None) -> Tensor:  # noqa: UP045 (TorchScript)
        prev = u if u_prev is None else u_prev
        if len(self.fs) == 1:  # written so that torch.jit.script compiles it
            f = self.fs[0]
            for _ in range(self.steps):
                u, prev = 2 * u - prev + self.h**2 * f(u), u
        else:
            for f in self.fs:
                u, prev = 2 * u - prev + self.h**2 * f(u), u
        return u


class Verlet(_Stepper):
    """Störmer–Verlet for the Hamiltonian pair ``y_t = f_y(z)``, ``z_t = −f_z(y)``, with ``u = (y, z)``.

    ``y`` is the first ``split`` channels of ``u`` (default half), ``z`` the rest. Each step updates
    ``z ← z − h·f_z(y)``, then ``y ← y + h·f_y(z)`` with the new ``z`` (z lives at half steps: the staggered,
    second-order Verlet scheme). The step is symplectic whenever f_y and f_z have symmetric Jacobians
    (gradients of potentials, e.g. :class:`SymmetricConv` or the identity): its Jacobian J satisfies
    ``JᵀΩJ = Ω`` and det J = 1. Harmonic oscillator (``f_y = f_z = id``): ``(y, z) ← [[1 − h², h], [−h, 1]]·(y, z)``.
    With ``f_y = id``, y follows :class:`Leapfrog` with ``f = −f_z`` and ``y_{−1} = y_0 − h·z_0``.
    """

    def __init__(
        self,
        f_y: StepFunctions,
        f_z: StepFunctions,
        h: float = 1.0,
        *,
        steps: int | None = None,
        split: int | None = None,
        learn_h: bool = False,
    ):
        super().__init__()
        self.fs_y, n_y = _as_steps(f_y, steps, "f_y")
        self.fs_z, n_z = _as_steps(f_z, steps, "f_z")
        if n_y != n_z:
            raise PdeconvError(f"f_y gives {n_y} steps and f_z {n_z}; pass steps= or sequences of equal length")
        self.steps, self.split = n_y, split
        self.h = _step_size(h, learn_h)

    def forward(self, u: Tensor) -> Tensor:
        c = u.shape[1]
        k = c // 2 if self.split is None else self.split
        if (self.split is None and c % 2) or not 0 < k < c:
            raise PdeconvError(f"Verlet splits the {c} channels into (y, z); pass split= (1..{c - 1}) for odd counts")
        y, z = u[:, :k], u[:, k:]
        for n in range(self.steps):
            z = z - self.h * self.fs_z[n % len(self.fs_z)](y)
            y = y + self.h * self.fs_y[n % len(self.fs_y)](z)
        return torch.cat([y, z], dim=1)


def conv_adjoint(v: Tensor, weight: Tensor, bc: str = "dirichlet", *, groups: int = 1) -> Tensor:
    """``Kᵀv``, the exact adjoint of ``K: u ↦ boundary.convolve(u, weight, bc, groups=groups)`` (stride 1).

    ``⟨K u, v⟩ = ⟨u, Kᵀ v⟩`` for all u (N, C_in, H, W) and v (N, C_out, H, W). ``dirichlet`` (zero padding):
    ``conv_transpose2d`` with the same weight. ``periodic``: circular cross-correlation with the kernel flipped
    in both spatial axes and the in/out channels swapped (a transpose without the flip is *not* the adjoint).
    ``neumann`` and ``replicate`` raise ``ValueError``: reflect/replicate padding have no such adjoint.
    ``weight`` is (C_out, C_in/groups, kh, kw) with odd kh, kw, or a (k, k) kernel applied to every channel.
    """
    bc = boundary_condition(bc)
    if bc not in _ADJOINT_BCS:
        raise PdeconvError(
            f"conv_adjoint: bc={bc!r} (reflect/replicate padding) has no flipped-kernel adjoint; "
            "use 'dirichlet' or 'periodic'"
        )
    if weight.dim() == 2:
        groups = v.shape[1]
        weight = weight.expand(groups, 1, *weight.shape)
    weight = weight.to(dtype=v.dtype, device=v.device)
    c_out, c_in_g, kh, kw = weight.shape
    if kh % 2 == 0 or kw % 2 == 0:
        raise PdeconvError(f"conv_adjoint needs odd kernel sizes (centred stencils); got {kh}×{kw}")
    if bc == "dirichlet":
        return F.conv_transpose2d(v, weight, padding=(kh // 2, kw // 2), groups=groups)
    flipped = (
        weight.reshape(groups, c_out // groups, c_in_g, kh, kw)
        .transpose(1, 2)
        .reshape(groups * c_in_g, c_out // groups, kh, kw)
        .flip(-2, -1)
    )
    return F.conv2d(pad(v, (kw // 2, kw // 2, kh // 2, kh // 2), "periodic"), flipped, groups=groups)


class SymmetricConv(nn.Module):
    """Ruthotto & Haber's symmetric layer ``f(u) = −Kᵀσ(K u + b)`` with the exact adjoint Kᵀ.

    ``K = self.conv`` maps ``channels → hidden_channels`` (default ``channels``) with a centred ``kernel_size``
    stencil and boundary ``bc`` (``dirichlet`` or ``periodic``). For non-decreasing σ (default ReLU) f is the
    negative gradient of the convex energy ``Σ Φ(K u + b)`` (Φ' = σ): its Jacobian ``−Kᵀ diag(σ') K`` is
    symmetric negative semi-definite, which makes :class:`EulerStep` stable for small h, :class:`Leapfrog`
    energy-conserving and :class:`Verlet` symplectic. The adjoint follows ``set_boundary`` on ``self.conv``.
    """

    def __init__(
        self,
        channels: int,
        hidden_channels: int | None = None,
        kernel_size: int = 3,
        *,
        bc: str = "dirichlet",
        activation: nn.Module | None = None,
        bias: bool = True,
    ):
        super().__init__()
        bc = boundary_condition(bc)
        if bc not in _ADJOINT_BCS:
            raise PdeconvError(f"SymmetricConv needs an exact adjoint: bc must be 'dirichlet' or 'periodic', "
                               f"got {bc!r}")
        if kernel_size % 2 == 0:
            raise PdeconvError(f"kernel_size must be odd (a centred stencil); got {kernel_size}")
        self.conv = nn.Conv2d(
            channels,
            hidden_channels or channels,
            kernel_size,
            padding=kernel_size // 2,
            padding_mode=padding_mode(bc),
            bias=bias,
        )
        self.activation = nn.ReLU() if activation is None else activation

    def forward(self, u: Tensor) -> Tensor:
        return -conv_adjoint(self.activation(self.conv(u)), self.conv.weight, boundary_of(self.conv))
