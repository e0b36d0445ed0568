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
from tqdm.auto import tqdm

from pdeconv.discover.dataset import Dataset
from pdeconv.errors import PdeconvError

__all__ = ["PDES", "Spec", "simulate", "solve", "parse_grid", "true_equations", "fourier_initial"]

TWO_PI = 2 * math.pi
#: a coefficient: a number, or a field ``f(x, y)`` of the coordinates (x along the width, y along the height)
Coefficient = float | Callable[[np.ndarray, np.ndarray], np.ndarray]


class _Grid:
    """A periodic grid of ``shape`` points (array order) on ``[0, L)`` per axis: coordinates, wavenumbers (rfftn
    layout, the last axis halved) and the 2/3-rule mask. ``L = length``."""

    def __init__(self, *shape: int, length: float = TWO_PI):
        self.shape, self.length, self.dims = tuple(shape), float(length), len(shape)
        self.axes = tuple(range(-self.dims, 0))
        unit = TWO_PI / self.length  # wavenumber of one period over the domain
        self.k = []
        for axis, n in enumerate(self.shape):
            freq = np.fft.rfftfreq(n, 1.0 / n) if axis == self.dims - 1 else np.fft.fftfreq(n, 1.0 / n)
            self.k.append((freq * unit).reshape([-1 if i == axis else 1 for i in range(self.dims)]))
        self.coords = [np.arange(n) * self.length / n for n in self.shape]
        self.dealias = np.ones((), dtype=bool)
        for k, n in zip(self.k, self.shape, strict=True):
            self.dealias = self.dealias & (np.abs(k) < n * unit / 3)

    @property
    def kx(self) -> np.ndarray:
        """Wavenumbers along x, the last axis."""
        return self.k[-1]

    @property
    def ky(self) -> np.ndarray:
        """Wavenumbers along y, the axis before x (2-D and 3-D grids)."""
        return self.k[-2]

    def fft(self, u: np.ndarray) -> np.ndarray:
        return np.fft.rfftn(u, axes=self.axes)

    def ifft(self, uh: np.ndarray) -> np.ndarray:
        return np.fft.irfftn(uh, s=self.shape, axes=self.axes)

    def d(self, uh: np.ndarray, *orders: int) -> np.ndarray:
        """The derivative ``orders`` (one per axis, array order: ``d(uh, a, b)`` = ``∂_y^a ∂_x^b u`` in 2-D) on the
        grid, from ``uh = fft(u)`` (spectrally exact)."""
        symbol = 1
        for k, n in zip(self.k, orders, strict=True):
            symbol = symbol * (1j * k) ** n
        return self.ifft(uh * symbol)

    def laplacian(self) -> np.ndarray:
        """The symbol of Δ, ``−|k|²``."""
        return -sum(k**2 for k in self.k)

    @property
    def kmax(self) -> tuple[float, ...]:
        """Largest |k| per axis that the 2/3 rule keeps, in name order (x, y, z)."""
        return tuple(n * TWO_PI / self.length / 3 for n in reversed(self.shape))

    def mesh(self) -> tuple[np.ndarray, ...]:
        """Coordinate arrays of the grid's shape, in name order: ``X`` (last axis), ``Y``, ``Z``."""
        return tuple(reversed(np.meshgrid(*self.coords, indexing="ij")))


@dataclass(frozen=True)
class Spec:
    """A PDE preset: equations, default parameters and the data setting (grid, steps, initial data)."""

    name: str
    summary: str
    components: tuple[str, ...]
    params: Mapping[str, float]
    linear: Callable[[Mapping[str, float], _Grid], np.ndarray]  # (C, *spectral shape) symbol of L
    equations: Callable[[Mapping[str, float], int], dict[str, dict[str, Coefficient]]]  # (params, space dims)
    nonlinear: Callable[[np.ndarray, Mapping[str, float], _Grid], np.ndarray] | None = None  # û ↦ N̂(u)
    rate: Callable[[np.ndarray, Mapping[str, float], _Grid], float] | None = None  # u ↦ max rate of N
    grid: int = 32
    dims: tuple[int, ...] = (2,)  # the space dimensions it runs in, the default first
    length: float = TWO_PI  # the period of the domain along every axis
    zoom: int = 4
    dt: float = 0.01
    steps: int = 20
    trajectories: int = 8
    freq: int = 4
    amplitude: float = 1.0
    shift: float = 0.0
    spin_up: float = 0.0  # odd-numbered trajectories start from the solution at this time (PDE-Net 2.0)
    spin_up_all: bool = False  # every trajectory is spun up (a chaotic PDE's attractor)
    cfl: float = 1.0  # sub-steps h ≤ cfl / rate(N); dispersive L (KdV's i k³) needs less than 1 on fine grids


def _laplacian_symbol(p: Mapping[str, float], g: _Grid, nu: float, c: int) -> np.ndarray:
    return np.broadcast_to(nu * g.laplacian(), (c, *g.dealias.shape)).astype(complex)


# -------------------------------------------------------------------------------------------------- presets


def _heat_eq(p, dims=2):
    return {"u": {name: p["kappa"] for name in ("u_xx", "u_yy", "u_zz")[:dims]}}


def _cd_linear(p, g):
    s = 1j * p["a"] * g.kx + 1j * p["b"] * g.ky - p["c"] * g.kx**2 - p["d"] * g.ky**2
    return s[None].astype(complex)


def _cd_eq(p, dims=2):
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
    return g.fft(n) * g.dealias


def _vcd_rate(u, p, g):
    X, Y = g.mesh()
    return float(np.abs(pdenet_a(X, Y)).max() * g.kmax[0] + np.abs(pdenet_b(X, Y)).max() * g.kmax[1])


def _vcd_eq(p, dims=2):
    return {"u": {"u_x": pdenet_a, "u_y": pdenet_b, "u_xx": p["c"], "u_yy": p["d"]}}


def _burgers_nonlinear(uh, p, g):
    u, v = g.d(uh[..., 0:1, :, :], 0, 0), g.d(uh[..., 1:2, :, :], 0, 0)
    n = -(u * g.d(uh, 0, 1) + v * g.d(uh, 1, 0))  # both fields advected by (u, v)
    return g.fft(n) * g.dealias


def _velocity_rate(u, p, g):
    return float(np.abs(u[..., 0, :, :]).max() * g.kmax[0] + np.abs(u[..., 1, :, :]).max() * g.kmax[1])


def _burgers_eq(p, dims=2):
    nu = p["nu"]
    return {
        "u": {"u*u_x": -1.0, "v*u_y": -1.0, "u_xx": nu, "u_yy": nu},
        "v": {"u*v_x": -1.0, "v*v_y": -1.0, "v_xx": nu, "v_yy": nu},
    }


def _rd_nonlinear(uh, p, g):
    u = g.ifft(uh)
    a, b = u[..., 0:1, :, :], u[..., 1:2, :, :]
    r2 = a**2 + b**2
    n = np.concatenate([(1 - r2) * a + p["beta"] * r2 * b, -p["beta"] * r2 * a + (1 - r2) * b], axis=-3)
    return g.fft(n) * g.dealias


def _rd_rate(u, p, g):
    return float(1 + (3 + abs(p["beta"])) * (u**2).sum(axis=-3).max())


def _rd_eq(p, dims=2):
    nu, beta = p["nu"], p["beta"]
    return {
        "u": {"u": 1.0, "u^3": -1.0, "u*v^2": -1.0, "u^2*v": beta, "v^3": beta, "u_xx": nu, "u_yy": nu},
        "v": {"v": 1.0, "u^3": -beta, "u*v^2": -beta, "u^2*v": -1.0, "v^3": -1.0, "v_xx": nu, "v_yy": nu},
    }


def _advection_1d(uh, p, g, a: float):
    """``−a u u_x`` (1-D), dealiased."""
    return g.fft(-a * g.ifft(uh) * g.d(uh, 1)) * g.dealias


def _advection_rate_1d(u, p, g, a: float) -> float:
    return float(abs(a) * np.abs(u).max() * g.kmax[0])


def _burgers1d_eq(p, dims=1):
    return {"u": {"u*u_x": -1.0, "u_xx": p["nu"]}}


def _kdv_eq(p, dims=1):
    return {"u": {"u*u_x": -p["a"], "u_xxx": -p["b"]}}


def _ks_eq(p, dims=1):
    return {"u": {"u*u_x": -1.0, "u_xx": -1.0, "u_xxxx": -1.0}}


PDES: dict[str, Spec] = {
    s.name: s
    for s in [
        Spec(
            "heat", "u_t = κ Δu (2-D; 1-D or 3-D by dims 1 or 3, or a DxHxW grid)", ("u",),
            {"kappa": 0.2}, lambda p, g: _laplacian_symbol(p, g, p["kappa"], 1), _heat_eq,
            grid=32, dims=(2, 1, 3), zoom=1, dt=0.01, steps=20, trajectories=4,
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
        Spec(
            "burgers-1d", "u_t = −u u_x + ν u_xx (1-D; PDE-FIND's Burgers, ν = 0.1, x in [0, 16))", ("u",),
            {"nu": 0.1}, lambda p, g: _laplacian_symbol(p, g, p["nu"], 1), _burgers1d_eq,
            lambda uh, p, g: _advection_1d(uh, p, g, 1.0), lambda u, p, g: _advection_rate_1d(u, p, g, 1.0),
            grid=256, dims=(1,), length=16.0, zoom=4, dt=0.05, steps=60, trajectories=4, freq=2,
        ),
        Spec(
            "kdv", "u_t = −a u u_x − b u_xxx (1-D Korteweg–de Vries, a = 6, b = 1, x in [0, 20))", ("u",),
            {"a": 6.0, "b": 1.0}, lambda p, g: (-p["b"] * (1j * g.kx) ** 3)[None], _kdv_eq,
            lambda uh, p, g: _advection_1d(uh, p, g, p["a"]), lambda u, p, g: _advection_rate_1d(u, p, g, p["a"]),
            grid=128, dims=(1,), length=20.0, zoom=4, dt=0.01, steps=60, trajectories=4, freq=3, amplitude=0.5,
            cfl=0.25,
        ),
        Spec(
            "kuramoto-sivashinsky",
            "u_t = −u u_x − u_xx − u_xxxx (1-D, x in [0, 32π), as PDE-FIND's; spun up onto the attractor)", ("u",),
            {}, lambda p, g: (g.kx**2 - g.kx**4)[None].astype(complex), _ks_eq,
            lambda uh, p, g: _advection_1d(uh, p, g, 1.0), lambda u, p, g: _advection_rate_1d(u, p, g, 1.0),
            grid=256, dims=(1,), length=32 * math.pi, zoom=2, dt=0.2, steps=100, trajectories=4, freq=8,
            spin_up=40.0, spin_up_all=True,
        ),
    ]
}


def _spec(name: str) -> Spec:
    try:
        return PDES[name]
    except KeyError:
        raise PdeconvError(f"unknown PDE {name!r}; choose one of: {', '.join(PDES)}") from None


def _params(spec: Spec, params: Mapping[str, float] | None) -> dict[str, float]:
    out = dict(spec.params)
    for k, v in (params or {}).items():
        if k not in out:
            valid = ", ".join(out) or "none"
            raise PdeconvError(f"{spec.name} has no parameter {k!r}; its parameters: {valid}")
        out[k] = float(v)
    return out


def true_equations(
    name: str, params: Mapping[str, float] | None = None, *, dims: int | None = None
) -> dict[str, dict[str, Coefficient]]:
    """The generating PDE in the ``pde.json`` sense: ``{field: {term: coefficient}}``, u_t = Σ c · term.

    A coefficient is a number or, for ``convdiff-variable``, a function ``f(x, y)`` of the coordinates. ``dims``:
    the space dimensions of the data (for ``heat``, which runs in 1-D, 2-D and 3-D; default: the preset's).
    """
    spec = _spec(name)
    return spec.equations(_params(spec, params), _dims(spec, dims))


def _dims(spec: Spec, dims: int | None) -> int:
    if dims is None:
        return spec.dims[0]
    if dims not in spec.dims:
        runs = " or ".join(f"{d}-D" for d in sorted(spec.dims))
        raise PdeconvError(f"{spec.name} runs in {runs}; got a {dims}-D grid")
    return dims


def parse_grid(grid: int | str | tuple[int, ...], dims: int = 2) -> tuple[int, ...]:
    """The observed grid in array order: k numbers joined by ``x`` make a k-D grid (``"24x40"`` → (H, W),
    ``"8x24x40"`` → (D, H, W)); a single number n is ``(n,) * dims``."""
    if isinstance(grid, tuple):
        shape = tuple(int(n) for n in grid)
    elif isinstance(grid, int):
        shape = (grid,) * dims
    else:
        parts = str(grid).lower().replace("×", "x").split("x")
        try:
            shape = tuple(int(p) for p in parts)
        except ValueError:
            raise PdeconvError(f"grid must be N, HxW or DxHxW (e.g. 32, 24x40 or 8x24x40); got {grid!r}") from None
        if len(shape) == 1:
            shape = shape * dims
    if not 1 <= len(shape) <= 3:
        raise PdeconvError(f"grid must be N, HxW or DxHxW (1 to 3 axes); got {grid!r}")
    if min(shape) < 4:
        raise PdeconvError(f"grid must have at least 4 points per axis; got {'x'.join(map(str, shape))}")
    return shape


def fourier_initial(
    rng: np.random.Generator, shape: tuple[int, ...], g: _Grid, *, freq: int, amplitude: float, shift: float
) -> np.ndarray:
    """PDE-Net's random initial data on grid ``g``, shape ``(*shape, *g.shape)``: ``amplitude · w + shift ·
    U(−1, 1)``, ``w = Σ λ cos(k·x') + γ sin(k·x')`` over integer ``|k_i| ≤ freq`` per axis, ``x' = 2π x / L``."""
    coords = [c * (TWO_PI / g.length) for c in g.mesh()]  # X', Y', Z' in name order
    k = np.arange(-freq, freq + 1)
    modes = np.stack(np.meshgrid(*([k] * g.dims), indexing="ij"), -1).reshape(-1, g.dims)  # x wavenumber slowest
    phase = sum(modes[:, i].reshape(-1, *(1,) * g.dims) * coords[i] for i in range(g.dims))  # (modes, *grid)
    lam = rng.standard_normal((*shape, phase.shape[0]))
    gam = rng.standard_normal((*shape, phase.shape[0]))
    w = np.tensordot(lam, np.cos(phase), axes=1) + np.tensordot(gam, np.sin(phase), axes=1)
    w /= np.abs(w).max(axis=g.axes, keepdims=True)
    return amplitude * w + shift * rng.uniform(-1, 1, (*shape, *(1,) * g.dims))


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
        from pdeconv.layers.steppers import integrating_factor_rk4_step  # torch only when a solver steps

        N = self.spec.nonlinear
        if N is None:
            return uh * np.exp(self.L * T)
        rate = self.spec.rate(self.g.ifft(uh), self.p, self.g)
        m = max(1, math.ceil(T * rate / (self.CFL * self.spec.cfl)))
        h = T / m
        E, E2 = self._exp(h)
        for _ in range(m):
            uh = integrating_factor_rk4_step(uh, lambda w: N(w, self.p, self.g), E, E2, h)
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
    """Integrate preset ``pde`` from ``u0`` of shape ``(N, C, *space)`` (space = ``(H·zoom, W·zoom)`` in 2-D, one
    to three axes as the preset allows) on the periodic domain ``[0, L)`` per axis (``L``: the preset's length).

    Returns the frames ``(N, steps + 1, C, *space / zoom)`` at times ``0, dt, ..., steps·dt``, keeping every
    ``zoom``-th grid point along every axis.
    """
    spec = _spec(pde)
    u0 = np.asarray(u0, dtype=np.float64)
    if not 3 <= u0.ndim <= 5 or u0.shape[1] != len(spec.components):
        raise PdeconvError(f"u0 must have shape (N, {len(spec.components)}, *space) for {pde}; got {u0.shape}")
    _dims(spec, u0.ndim - 2)
    g = _Grid(*u0.shape[2:], length=spec.length)
    stepper = _Stepper(spec, _params(spec, params), g)
    keep = (Ellipsis, *(slice(None, None, zoom),) * g.dims)
    uh = g.fft(u0)
    frames = [u0[keep]]
    for _ in tqdm(range(steps), desc=f"simulate {pde}", unit="step", disable=None if progress else True):
        uh = stepper.advance(uh, dt)
        frames.append(g.ifft(uh)[keep])
    u = np.stack(frames, axis=1)
    if not np.isfinite(u).all():
        raise PdeconvError(f"the {pde} simulation blew up; use a smaller dt or a finer zoom")
    return u


def simulate(
    pde: str,
    *,
    grid: int | str | tuple[int, ...] | None = None,
    steps: int | None = None,
    dt: float | None = None,
    noise: float = 0.0,
    trajectories: int | None = None,
    seed: int = 0,
    zoom: int | None = None,
    params: Mapping[str, float] | None = None,
    dims: int | None = None,
    progress: bool = True,
) -> Dataset:
    """Simulate preset ``pde`` (see :data:`PDES`) from random initial data; ``steps + 1`` frames per trajectory.

    ``grid`` is the observed grid (``N``, ``"HxW"`` or ``"DxHxW"``; spacing ``L / points`` per axis, ``L`` the
    preset's domain length, 2π unless said), solved on a grid ``zoom`` times finer; ``dims`` the space dimensions
    (presets that run in several, like ``heat``: ``grid=64, dims=1``; default: the grid's, else the preset's);
    ``noise`` adds Gaussian noise of standard deviation ``noise · std`` (std of each field over all frames);
    ``params`` overrides the preset's coefficients (e.g. ``{"nu": 0.1}``).
    """
    spec = _spec(pde)
    grid = spec.grid if grid is None else grid
    if dims is None and isinstance(grid, str) and "x" in grid.lower().replace("×", "x"):
        dims = len(parse_grid(grid))
    dims = _dims(spec, dims)
    shape = parse_grid(grid, dims)
    if len(shape) != dims:
        raise PdeconvError(f"grid {grid!r} has {len(shape)} axes but dims is {dims}")
    steps = spec.steps if steps is None else int(steps)
    dt = spec.dt if dt is None else float(dt)
    n = spec.trajectories if trajectories is None else int(trajectories)
    zoom = spec.zoom if zoom is None else int(zoom)
    if steps < 2:
        raise PdeconvError(f"steps must be ≥ 2 (a fit needs at least 3 frames); got {steps}")
    if not dt > 0:
        raise PdeconvError(f"dt must be positive; got {dt}")
    if n < 1 or zoom < 1:
        raise PdeconvError(f"trajectories and zoom must be ≥ 1; got {n} and {zoom}")
    if not noise >= 0:
        raise PdeconvError(f"noise must be ≥ 0 (a fraction of the data's std); got {noise}")
    rng = np.random.default_rng(seed)
    g = _Grid(*(m * zoom for m in shape), length=spec.length)
    u0 = fourier_initial(rng, (n, len(spec.components)), g, freq=spec.freq, amplitude=spec.amplitude, shift=spec.shift)
    if spec.spin_up > 0 and n > 1 or spec.spin_up_all:
        k = max(1, round(spec.spin_up / dt))
        which = slice(None) if spec.spin_up_all else slice(1, None, 2)
        u0[which] = solve(pde, u0[which], dt=spec.spin_up / k, steps=k, params=params, progress=False)[:, -1]
    u = solve(pde, u0, dt=dt, steps=steps, zoom=zoom, params=params, progress=progress)
    if noise > 0:
        std = u.std(axis=(0, 1, *range(3, u.ndim)), keepdims=True)
        u = u + noise * std * rng.standard_normal(u.shape)
    spacing = [spec.length / m for m in reversed(shape)]  # dx, dy, dz
    return Dataset(np.ascontiguousarray(u), dt, spacing[0], spacing[1] if dims > 1 else None, "periodic",
                   spec.components, spacing[2] if dims > 2 else None)
