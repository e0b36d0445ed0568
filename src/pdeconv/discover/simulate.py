"""Reference solvers: PDE data for discovery, computed pseudo-spectrally on a fine periodic grid.

Every PDE here is ``u_t = L u + N(u)`` on the torus ``[0, 2π]²`` with ``L`` diagonal in Fourier space
(diffusion, constant advection) and ``N`` the rest (variable coefficients, nonlinear terms), evaluated on the
grid with the 2/3 rule. Time stepping is the integrating-factor RK4 scheme (Cox & Matthews' IF-RK4: ``L`` exactly,
``N`` to fourth order) with sub-steps ``h ≤ 1 / (rate of N)``; a linear PDE with ``N = 0`` is solved exactly.
The fine grid is ``zoom`` times the requested one; frames keep every ``zoom``-th point (pointwise samples).

Initial data (PDE-Net's): ``w = Σ_{|k|,|l| ≤ freq} λ_kl cos(kx + ly) + γ_kl sin(kx + ly)`` with λ, γ ~ N(0, 1),
scaled to ``max |w| = 1``; each field starts as ``amplitude · w + shift · U(−1, 1)``. Presets follow PDE-Net
(ICML 2018) and PDE-Net 2.0 (JCP 2019); :data:`PDES` lists them, ``docs/discover.md`` says what each copies.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
from numpy.fft import irfft2, rfft2
from tqdm.auto import tqdm

from pdeconv.discover.data import Dataset

__all__ = ["PDES", "Spec", "simulate", "solve", "parse_grid", "true_equations", "fourier_initial"]

TWO_PI = 2 * math.pi
#: a coefficient: a number, or a field ``f(x, y)`` of the coordinates (x along the width, y along the height)
Coefficient = float | Callable[[np.ndarray, np.ndarray], np.ndarray]


class _Grid:
    """A periodic ``H × W`` grid on ``[0, 2π]²``: coordinates, wavenumbers (rfft layout) and the 2/3-rule mask."""

    def __init__(self, H: int, W: int):
        self.H, self.W = H, W
        self.x = np.arange(W) * TWO_PI / W
        self.y = np.arange(H) * TWO_PI / H
        self.kx = np.fft.rfftfreq(W, 1.0 / W)[None, :]
        self.ky = np.fft.fftfreq(H, 1.0 / H)[:, None]
        self.dealias = (np.abs(self.kx) < W / 3) & (np.abs(self.ky) < H / 3)

    def d(self, uh: np.ndarray, a: int, b: int) -> np.ndarray:
        """``∂_y^a ∂_x^b u`` on the grid, from ``uh = rfft2(u)`` (spectrally exact)."""
        return irfft2(uh * (1j * self.ky) ** a * (1j * self.kx) ** b, s=(self.H, self.W))

    @property
    def kmax(self) -> tuple[float, float]:
        """Largest |k_x|, |k_y| that the 2/3 rule keeps."""
        return self.W / 3, self.H / 3

    def mesh(self) -> tuple[np.ndarray, np.ndarray]:
        return np.meshgrid(self.x, self.y)  # (H, W) arrays X (columns), Y (rows)


@dataclass(frozen=True)
class Spec:
    """A PDE preset: equations, default parameters and the data setting (grid, steps, initial data)."""

    name: str
    summary: str
    components: tuple[str, ...]
    params: Mapping[str, float]
    linear: Callable[[Mapping[str, float], _Grid], np.ndarray]  # (C, H, W//2+1) symbol of L
    equations: Callable[[Mapping[str, float]], dict[str, dict[str, Coefficient]]]
    nonlinear: Callable[[np.ndarray, Mapping[str, float], _Grid], np.ndarray] | None = None  # û ↦ N̂(u)
    rate: Callable[[np.ndarray, Mapping[str, float], _Grid], float] | None = None  # u ↦ max rate of N
    grid: int = 32
    zoom: int = 4
    dt: float = 0.01
    steps: int = 20
    trajectories: int = 8
    freq: int = 4
    amplitude: float = 1.0
    shift: float = 0.0
    spin_up: float = 0.0  # odd-numbered trajectories start from the solution at this time (PDE-Net 2.0)


def _laplacian_symbol(p: Mapping[str, float], g: _Grid, nu: float, c: int) -> np.ndarray:
    return np.broadcast_to(-nu * (g.kx**2 + g.ky**2), (c, g.H, g.kx.shape[1])).astype(complex)


# -------------------------------------------------------------------------------------------------- presets


def _heat_eq(p):
    return {"u": {"u_xx": p["kappa"], "u_yy": p["kappa"]}}


def _cd_linear(p, g):
    s = 1j * p["a"] * g.kx + 1j * p["b"] * g.ky - p["c"] * g.kx**2 - p["d"] * g.ky**2
    return s[None].astype(complex)


def _cd_eq(p):
    terms = {"u_x": p["a"], "u_y": p["b"], "u_xx": p["c"], "u_yy": p["d"]}
    return {"u": {k: v for k, v in terms.items() if v != 0}}


def pdenet_a(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """PDE-Net's ``a(x, y) = 0.5 (cos y + x (2π − x) sin x) + 0.6``, the coefficient of ``u_x``."""
    return 0.5 * (np.cos(y) + x * (TWO_PI - x) * np.sin(x)) + 0.6


def pdenet_b(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """PDE-Net's ``b(x, y) = 2 (cos y + sin x) + 0.8``, the coefficient of ``u_y``."""
    return 2 * (np.cos(y) + np.sin(x)) + 0.8


def _vcd_linear(p, g):
    return (-p["c"] * g.kx**2 - p["d"] * g.ky**2)[None].astype(complex)


def _vcd_nonlinear(uh, p, g):
    X, Y = g.mesh()
    n = pdenet_a(X, Y) * g.d(uh, 0, 1) + pdenet_b(X, Y) * g.d(uh, 1, 0)
    return rfft2(n) * g.dealias


def _vcd_rate(u, p, g):
    X, Y = g.mesh()
    return float(np.abs(pdenet_a(X, Y)).max() * g.kmax[0] + np.abs(pdenet_b(X, Y)).max() * g.kmax[1])


def _vcd_eq(p):
    return {"u": {"u_x": pdenet_a, "u_y": pdenet_b, "u_xx": p["c"], "u_yy": p["d"]}}


def _burgers_nonlinear(uh, p, g):
    u, v = g.d(uh[..., 0:1, :, :], 0, 0), g.d(uh[..., 1:2, :, :], 0, 0)
    n = -(u * g.d(uh, 0, 1) + v * g.d(uh, 1, 0))  # both fields advected by (u, v)
    return rfft2(n) * g.dealias


def _velocity_rate(u, p, g):
    return float(np.abs(u[..., 0, :, :]).max() * g.kmax[0] + np.abs(u[..., 1, :, :]).max() * g.kmax[1])


def _burgers_eq(p):
    nu = p["nu"]
    return {
        "u": {"u*u_x": -1.0, "v*u_y": -1.0, "u_xx": nu, "u_yy": nu},
        "v": {"u*v_x": -1.0, "v*v_y": -1.0, "v_xx": nu, "v_yy": nu},
    }


def _rd_nonlinear(uh, p, g):
    u = irfft2(uh, s=(g.H, g.W))
    a, b = u[..., 0:1, :, :], u[..., 1:2, :, :]
    r2 = a**2 + b**2
    n = np.concatenate([(1 - r2) * a + p["beta"] * r2 * b, -p["beta"] * r2 * a + (1 - r2) * b], axis=-3)
    return rfft2(n) * g.dealias


def _rd_rate(u, p, g):
    return float(1 + (3 + abs(p["beta"])) * (u**2).sum(axis=-3).max())


def _rd_eq(p):
    nu, beta = p["nu"], p["beta"]
    return {
        "u": {"u": 1.0, "u^3": -1.0, "u*v^2": -1.0, "u^2*v": beta, "v^3": beta, "u_xx": nu, "u_yy": nu},
        "v": {"v": 1.0, "u^3": -beta, "u*v^2": -beta, "u^2*v": -1.0, "v^3": -1.0, "v_xx": nu, "v_yy": nu},
    }


PDES: dict[str, Spec] = {
    s.name: s
    for s in [
        Spec(
            "heat", "u_t = κ (u_xx + u_yy)", ("u",), {"kappa": 0.2},
            lambda p, g: _laplacian_symbol(p, g, p["kappa"], 1), _heat_eq,
            grid=32, zoom=1, dt=0.01, steps=20, trajectories=4,
        ),
        Spec(
            "convdiff", "u_t = a u_x + b u_y + c u_xx + d u_yy (constant coefficients)", ("u",),
            {"a": 0.6, "b": 0.8, "c": 0.3, "d": 0.2}, _cd_linear, _cd_eq,
            grid=50, zoom=1, dt=0.015, steps=20, trajectories=8,
        ),
        Spec(
            "convdiff-variable", "u_t = a(x,y) u_x + b(x,y) u_y + c u_xx + d u_yy (PDE-Net)", ("u",),
            {"c": 0.2, "d": 0.2}, _vcd_linear, _vcd_eq, _vcd_nonlinear, _vcd_rate,
            grid=50, zoom=4, dt=0.015, steps=20, trajectories=16,
        ),
        Spec(
            "burgers", "u_t = −u u_x − v u_y + ν Δu,  v_t = −u v_x − v v_y + ν Δv", ("u", "v"),
            {"nu": 0.05}, lambda p, g: _laplacian_symbol(p, g, p["nu"], 2), _burgers_eq,
            _burgers_nonlinear, _velocity_rate,
            grid=32, zoom=4, dt=0.01, steps=20, trajectories=8, amplitude=2.0, shift=2.0, spin_up=1.0,
        ),
        Spec(
            "reaction-diffusion",
            "λ–ω system: u_t = ν Δu + (1 − A²) u + β A² v,  v_t = ν Δv − β A² u + (1 − A²) v,  A² = u² + v²",
            ("u", "v"), {"nu": 0.1, "beta": 1.0}, lambda p, g: _laplacian_symbol(p, g, p["nu"], 2), _rd_eq,
            _rd_nonlinear, _rd_rate,
            grid=32, zoom=4, dt=0.01, steps=20, trajectories=8, amplitude=2.0, shift=1.0,
        ),
    ]
}


def _spec(name: str) -> Spec:
    try:
        return PDES[name]
    except KeyError:
        raise ValueError(f"unknown PDE {name!r}; choose one of: {', '.join(PDES)}") from None


def _params(spec: Spec, params: Mapping[str, float] | None) -> dict[str, float]:
    out = dict(spec.params)
    for k, v in (params or {}).items():
        if k not in out:
            valid = ", ".join(out) or "none"
            raise ValueError(f"{spec.name} has no parameter {k!r}; its parameters: {valid}")
        out[k] = float(v)
    return out


def true_equations(name: str, params: Mapping[str, float] | None = None) -> dict[str, dict[str, Coefficient]]:
    """The generating PDE in the ``pde.json`` sense: ``{field: {term: coefficient}}``, u_t = Σ c · term.

    A coefficient is a number or, for ``convdiff-variable``, a function ``f(x, y)`` of the coordinates.
    """
    spec = _spec(name)
    return spec.equations(_params(spec, params))


def parse_grid(grid: int | str | tuple[int, int]) -> tuple[int, int]:
    """``32`` or ``"32"`` → (32, 32); ``"24x40"`` → (H, W) = (24, 40)."""
    if isinstance(grid, tuple):
        h, w = grid
    elif isinstance(grid, int):
        h = w = grid
    else:
        parts = str(grid).lower().replace("×", "x").split("x")
        try:
            h, w = (int(parts[0]),) * 2 if len(parts) == 1 else (int(parts[0]), int(parts[1]))
        except (ValueError, IndexError):
            raise ValueError(f"grid must be N or HxW (e.g. 32 or 24x40); got {grid!r}") from None
        if len(parts) > 2:
            raise ValueError(f"grid must be N or HxW (e.g. 32 or 24x40); got {grid!r}")
    if h < 4 or w < 4:
        raise ValueError(f"grid must be at least 4x4; got {h}x{w}")
    return int(h), int(w)


def fourier_initial(
    rng: np.random.Generator, shape: tuple[int, ...], g: _Grid, *, freq: int, amplitude: float, shift: float
) -> np.ndarray:
    """PDE-Net's random initial data on grid ``g``, shape ``(*shape, H, W)``: ``amplitude · w + shift · U(−1, 1)``."""
    X, Y = g.mesh()
    k = np.arange(-freq, freq + 1)
    kk, ll = np.meshgrid(k, k, indexing="ij")
    phase = kk.reshape(-1, 1, 1) * X + ll.reshape(-1, 1, 1) * Y  # (modes, H, W)
    lam = rng.standard_normal((*shape, phase.shape[0]))
    gam = rng.standard_normal((*shape, phase.shape[0]))
    w = np.tensordot(lam, np.cos(phase), axes=1) + np.tensordot(gam, np.sin(phase), axes=1)
    w /= np.abs(w).max(axis=(-2, -1), keepdims=True)
    return amplitude * w + shift * rng.uniform(-1, 1, (*shape, 1, 1))


class _Stepper:
    """Integrating-factor RK4 for ``û' = L̂ û + N̂(û)`` with cached exponentials per sub-step size."""

    CFL = 1.0  # h · rate(N) ≤ 1: well inside RK4's stability region and accurate on the resolved modes

    def __init__(self, spec: Spec, params: Mapping[str, float], g: _Grid):
        self.spec, self.p, self.g = spec, params, g
        self.L = spec.linear(params, g)
        self._cache: dict[float, tuple[np.ndarray, np.ndarray]] = {}

    def _exp(self, h: float) -> tuple[np.ndarray, np.ndarray]:
        if h not in self._cache:
            self._cache = {h: (np.exp(self.L * h), np.exp(self.L * h / 2))}
        return self._cache[h]

    def advance(self, uh: np.ndarray, T: float) -> np.ndarray:
        N = self.spec.nonlinear
        if N is None:
            return uh * np.exp(self.L * T)
        rate = self.spec.rate(irfft2(uh, s=(self.g.H, self.g.W)), self.p, self.g)
        m = max(1, math.ceil(T * rate / self.CFL))
        h = T / m
        E, E2 = self._exp(h)
        for _ in range(m):
            k1 = N(uh, self.p, self.g)
            k2 = N(E2 * (uh + 0.5 * h * k1), self.p, self.g)
            k3 = N(E2 * uh + 0.5 * h * k2, self.p, self.g)
            k4 = N(E * uh + h * E2 * k3, self.p, self.g)
            uh = E * uh + (h / 6) * (E * k1 + 2 * E2 * (k2 + k3) + k4)
        return uh


def solve(
    pde: str,
    u0: np.ndarray,
    *,
    dt: float,
    steps: int,
    zoom: int = 1,
    params: Mapping[str, float] | None = None,
    progress: bool = True,
) -> np.ndarray:
    """Integrate preset ``pde`` from ``u0`` of shape ``(N, C, H·zoom, W·zoom)`` on ``[0, 2π]²``.

    Returns the frames ``(N, steps + 1, C, H, W)`` at times ``0, dt, ..., steps·dt``, keeping every ``zoom``-th
    grid point along both axes.
    """
    spec = _spec(pde)
    u0 = np.asarray(u0, dtype=np.float64)
    if u0.ndim != 4 or u0.shape[1] != len(spec.components):
        raise ValueError(f"u0 must have shape (N, {len(spec.components)}, H, W) for {pde}; got {u0.shape}")
    g = _Grid(*u0.shape[-2:])
    stepper = _Stepper(spec, _params(spec, params), g)
    uh = rfft2(u0)
    frames = [u0[..., ::zoom, ::zoom]]
    for _ in tqdm(range(steps), desc=f"simulate {pde}", unit="step", disable=None if progress else True):
        uh = stepper.advance(uh, dt)
        frames.append(irfft2(uh, s=(g.H, g.W))[..., ::zoom, ::zoom])
    u = np.stack(frames, axis=1)
    if not np.isfinite(u).all():
        raise ValueError(f"the {pde} simulation blew up; use a smaller dt or a finer zoom")
    return u


def simulate(
    pde: str,
    *,
    grid: int | str | tuple[int, int] | None = None,
    steps: int | None = None,
    dt: float | None = None,
    noise: float = 0.0,
    trajectories: int | None = None,
    seed: int = 0,
    zoom: int | None = None,
    params: Mapping[str, float] | None = None,
    progress: bool = True,
) -> Dataset:
    """Simulate preset ``pde`` (see :data:`PDES`) from random initial data; ``steps + 1`` frames per trajectory.

    ``grid`` is the observed ``H × W`` grid (``N`` or ``"HxW"``, spacing ``dx = 2π/W``, ``dy = 2π/H``), solved on a
    grid ``zoom`` times finer; ``noise`` adds Gaussian noise of standard deviation ``noise · std`` (std of each
    field over all frames); ``params`` overrides the preset's coefficients (e.g. ``{"nu": 0.1}``).
    """
    spec = _spec(pde)
    H, W = parse_grid(spec.grid if grid is None else grid)
    steps = spec.steps if steps is None else int(steps)
    dt = spec.dt if dt is None else float(dt)
    n = spec.trajectories if trajectories is None else int(trajectories)
    zoom = spec.zoom if zoom is None else int(zoom)
    if steps < 2:
        raise ValueError(f"steps must be ≥ 2 (a fit needs at least 3 frames); got {steps}")
    if not dt > 0:
        raise ValueError(f"dt must be positive; got {dt}")
    if n < 1 or zoom < 1:
        raise ValueError(f"trajectories and zoom must be ≥ 1; got {n} and {zoom}")
    if not noise >= 0:
        raise ValueError(f"noise must be ≥ 0 (a fraction of the data's std); got {noise}")
    rng = np.random.default_rng(seed)
    g = _Grid(H * zoom, W * zoom)
    u0 = fourier_initial(rng, (n, len(spec.components)), g, freq=spec.freq, amplitude=spec.amplitude, shift=spec.shift)
    if spec.spin_up > 0 and n > 1:
        k = max(1, round(spec.spin_up / dt))
        u0[1::2] = solve(pde, u0[1::2], dt=spec.spin_up / k, steps=k, params=params, progress=False)[:, -1]
    u = solve(pde, u0, dt=dt, steps=steps, zoom=zoom, params=params, progress=progress)
    if noise > 0:
        std = u.std(axis=(0, 1, 3, 4), keepdims=True)
        u = u + noise * std * rng.standard_normal(u.shape)
    return Dataset(np.ascontiguousarray(u), dt, TWO_PI / W, TWO_PI / H, "periodic", spec.components)
