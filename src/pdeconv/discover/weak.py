"""The weak form of the regression (``form="weak"``): integrals against test functions instead of pointwise values.

Multiply ``u_t = Σ_j c_j θ_j(u)`` by a smooth test function ``φ(t, x)`` that vanishes with its derivatives on the
border of its support and integrate: ``−∫ φ_t u = Σ_j c_j ∫ φ θ_j``. Integration by parts moves every derivative
it can onto φ, which is known exactly, so noise in u is averaged instead of differentiated (WSINDy: Messenger &
Bortz, J. Comput. Phys. 2021; PySINDy's ``WeakPDELibrary``). Per term:

* ``∂^α u`` (a derivative of one field): ``(−1)^|α| ∫ ∂^α φ · u``, exact;
* ``u^k ∂u/∂x_i`` (a field's power times its own first derivative, ``u*u_x``) ``= ∂_i(u^{k+1}/(k+1))``:
  ``−∫ ∂_i φ · u^{k+1}/(k+1)``, exact;
* plain monomials (``u``, ``u^2*v``, ``1``): ``∫ φ · θ``;
* anything else (``v*u_x``, ``u*u_xx``): ``∫ φ · θ`` with θ from the moment-constrained filters, still averaged.

Test functions are tensor products of ``(1 − s²)^p`` bumps, ``s ∈ [−1, 1]`` over ``2m + 1`` grid points per axis
(time included), with ``p = max derivative order + 3`` in space (so φ and its first ``p − 1`` derivatives vanish
at the border: the integration by parts has no boundary terms) and in time ``p = 8`` on clean data, ``p = 4`` on
noisy or short records (:func:`_time_power`); their derivatives are exact polynomials.

**Quadrature.** Along time the integrals are sums times dt (the trapezoidal rule), over the shifts that fit,
every ``stride`` frames. Along a periodic space axis they are exact for the data's trigonometric interpolant: the
FFT of the integrand times the *continuous* Fourier transform of ``∂^k φ`` (:func:`bump_spectrum`), every shift
(wrapping around), every ``stride`` points. A trapezoid sum of ``∂^k φ · u`` is off by about
``2^p p! (2π m)^{k−p−1}``, which for ``u_xxxx`` against a ``p = 7`` bump of half-width 19 left 5e-3 of the
integrals and 8e-4 of the coefficients on PDE-FIND's clean Kuramoto–Sivashinsky file; by FFT 1e-7 remains (the
time sums). Non-periodic space axes keep the trapezoid sums over the shifts that fit. Each axis is one batched
contraction or FFT over every integrand at once (:func:`weak_system`).

**Support** (:func:`choose_support`): along each axis the power spectrum of u (Hann-windowed, averaged over the
other axes) is compared with its noise floor (the median power over the upper half of the wavenumbers); the
signal ends at ``k_c``, the last wavenumber whose power exceeds ``10³`` × the floor. The half-width m is the
smallest, from ``2p`` up to ``n/4`` (n points on the axis; at least 3, else the data are too short for the weak
form), for which φ's own spectrum at ``k_c`` has fallen
below ``10⁻²`` of its peak: φ then passes the signal and filters the noise above it. Clean data get the smallest
support; noisy data wider ones.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch

from pdeconv.discover.model import PolynomialPDE
from pdeconv.errors import PdeconvError
from pdeconv.stencil import binomial

__all__ = ["TestFunctions", "bump", "bump_spectrum", "choose_support", "noise_variance", "weak_system"]

#: spectrum above this multiple of the noise floor counts as signal
SIGNAL_OVER_FLOOR = 1e3
#: φ's spectrum must fall below this share of its peak at the signal's last wavenumber
PASS_LEVEL = 1e-2
#: the smallest automatic half-width: narrower bumps sample their derivatives too coarsely
MIN_SUPPORT = 3
#: noise_variance: the order of the differences that measure it (9 points; Σ taps² = C(16, 8) for white noise)
NOISE_DIFFERENCE = 8
#: data whose noise variance (:func:`noise_variance`) is at most this share of their variance count as clean
CLEAN = 1e-8
#: time bumps have power p = 4 on noisy records (a wider φ averages more frames) ...
NOISY_TIME_POWER = 4
#: ... and this one on clean records long enough for a half-width of 2p frames (:func:`_time_power`). Both powers
#: are conventions; the errors :func:`_time_power` quotes for them are single observations that no command in
#: benchmarks/ measures again
TIME_POWER = 8


def bump(m: int, p: int, order: int, h: float) -> np.ndarray:
    """``d^order/dx^order`` of ``φ(x) = (1 − (x / (m h))²)^p`` at ``x = i·h``, ``i = −m..m``, over ``∫φ dx``.

    φ and its first ``p − 1`` derivatives vanish at ``±m h``.
    """
    if m < 1 or p < 1 or order < 0:
        raise PdeconvError(f"need m ≥ 1, p ≥ 1 and order ≥ 0; got {m}, {p}, {order}")
    poly = np.polynomial.Polynomial([1.0, 0.0, -1.0]) ** p  # in s = x / (m h)
    s = np.arange(-m, m + 1) / m
    area = float(poly.integ()(1.0) - poly.integ()(-1.0)) * m * h  # ∫ φ dx, exactly
    return poly.deriv(order)(s) / (m * h) ** order / area if order else poly(s) / area


def noise_variance(u: torch.Tensor) -> torch.Tensor:
    """Per field, the variance of white noise in ``u (N, T, C, *space)``, estimated as the mean square of the
    :data:`NOISE_DIFFERENCE`-th difference along the time axis and along each space axis, divided by the sum of the
    squared taps (what white noise of variance σ² gives: 12 870 σ² for the eighth difference), the smallest over the
    axes. A field the grid resolves contributes ``(h⁸ ∂⁸u)²``, far below any noise: at most 1e-12 of the field's
    variance on the clean data of ``benchmarks/discover_vs_pysindy.py``, where 1% noise reads 1.0e-4 and 5% noise
    2.5e-3, as drawn. Axes shorter than the difference's 9 points are left out; with none left it is 0."""
    k = NOISE_DIFFERENCE
    signs = torch.tensor([(-1.0) ** j for j in range(k + 1)], dtype=u.dtype)
    taps = binomial(k + 1, u.dtype) * signs  # the k-th difference, up to a scale the division below cancels
    best = None
    for axis in (1, *range(3, u.dim())):
        if u.shape[axis] <= k:
            continue
        d = u.movedim(axis, -1).unfold(-1, k + 1, 1) @ taps  # the field axis stays at 2 (axis 1 moved: at 1)
        per_field = d.pow(2).movedim(1 if axis == 1 else 2, 0).reshape(u.shape[2], -1).mean(1) / taps.pow(2).sum()
        best = per_field if best is None else torch.minimum(best, per_field)
    return best if best is not None else u.new_zeros(u.shape[2])


def _spectrum_cutoff(u: np.ndarray, axis: int) -> float:
    """The last wavenumber (radians per grid step) whose power stands ``SIGNAL_OVER_FLOOR`` above the noise floor."""
    a = np.moveaxis(u, axis, -1)
    n = a.shape[-1]
    a = (a - a.mean(axis=-1, keepdims=True)) * np.hanning(n)
    power = (np.abs(np.fft.rfft(a, axis=-1)) ** 2).reshape(-1, n // 2 + 1).mean(0)
    floor = float(np.median(power[len(power) // 2:]))
    signal = np.nonzero(power > SIGNAL_OVER_FLOOR * max(floor, 1e-300))[0]
    k = int(signal.max()) if len(signal) else len(power) - 1
    return 2 * math.pi * k / n


def _time_power(u: np.ndarray, axis: int, given: int | None) -> int:
    """The time bumps' power: :data:`TIME_POWER` when the data are clean, else :data:`NOISY_TIME_POWER`.

    Time is summed by the trapezoidal rule (no periodicity to exploit), whose error for ``∫ φ_t u`` falls like
    ``2^p p! (2π m)^{−p}``: at p = 4, m = 8 it left 2e-4 of the coefficients on PDE-FIND's clean
    Kuramoto–Sivashinsky and Burgers files, at p = 8, m = 16 1e-7 and 5e-9. On noisy data a wider, flatter bump
    averages more frames (p = 8 cost 5%-noisy Burgers 50% more error at the same m) and the quadrature error
    (below 1e-5 at the supports noise asks for) is buried in the noise. Clean: :func:`noise_variance` at most
    :data:`CLEAN` of the variance for every field, and a quarter of the axis at least :data:`TIME_POWER` frames (a
    given ``time_support`` at least that). On 61 clean frames of ``simulate("burgers-1d")`` and ``("kdv")``,
    p = 8 at m = 15 gave 1e-8 where p = 4 at m = 9 gave 2e-4."""
    if u.shape[axis] // 4 < TIME_POWER or given is not None and given < TIME_POWER:
        return NOISY_TIME_POWER
    v = torch.from_numpy(np.ascontiguousarray(u))
    variance = v.transpose(0, 2).flatten(1).var(dim=1)
    clean = bool((noise_variance(v) <= CLEAN * variance).all())
    return TIME_POWER if clean else NOISY_TIME_POWER


def choose_support(u: np.ndarray, axis: int, p: int) -> int:
    """The test functions' half-width m (grid points) along ``axis`` of ``u`` (see the module docstring)."""
    n = u.shape[axis]
    top = n // 4
    if top < MIN_SUPPORT:
        raise PdeconvError(
            f"{n} points along an axis are too few for test functions (half-width ≥ {MIN_SUPPORT} within a quarter "
            f"of the axis needs {4 * MIN_SUPPORT}); use `form` strong"
        )
    kc = _spectrum_cutoff(u, axis)
    m = min(2 * p, top)
    while m < top:
        phi = bump(m, p, 0, 1.0)
        w = np.arange(-m, m + 1)
        response = abs(float(np.sum(phi * np.cos(kc * w)))) / float(np.sum(phi))
        if response <= PASS_LEVEL:
            break
        m += 1
    return m


@dataclass(frozen=True)
class TestFunctions:
    """Half-widths (grid points) and powers per axis of u's ``(T, *space)`` axes, and the stride between centres."""

    support: tuple[int, ...]
    power: tuple[int, ...]
    stride: tuple[int, ...]

    @classmethod
    def for_data(
        cls, u: np.ndarray, max_order: int, support: int | None = None, time_support: int | None = None,
        rows: int = 4096, periodic: bool = False,
    ) -> TestFunctions:
        """Test functions for data ``u (N, T, C, *space)``: supports by :func:`choose_support` unless given
        (``support`` for every space axis, ``time_support`` for t); strides so that about ``rows`` integrals are
        taken per equation."""
        dims = u.ndim - 3
        power = [TIME_POWER, *(max_order + 3,) * dims]
        axes = (1, *range(3, 3 + dims))
        chosen = []
        for i, (axis, p) in enumerate(zip(axes, power, strict=True)):
            given = time_support if i == 0 else support
            if i == 0:
                p = power[0] = _time_power(u, axis, given)
            m = given if given is not None else choose_support(u, axis, p)
            if 2 * m + 1 > u.shape[axis]:
                what = "time" if i == 0 else "space"
                raise PdeconvError(
                    f"a {what} support of half-width {m} needs {2 * m + 1} points along that axis; the data have "
                    f"{u.shape[axis]}: lower --{'time-' if i == 0 else ''}support"
                )
            if m < 2:
                raise PdeconvError(f"test-function half-widths must be ≥ 2 grid points; got {m}")
            chosen.append(int(m))
        # shifts per axis: those that fit, or every one on a periodic space axis (integrated by FFT)
        valid = [u.shape[a] - (0 if periodic and i else 2 * m)
                 for i, (a, m) in enumerate(zip(axes, chosen, strict=True))]
        per_axis = (rows / (u.shape[0] * math.prod(valid))) ** (1 / len(valid))
        stride = tuple(max(1, math.floor(1 / per_axis)) if per_axis < 1 else 1 for _ in valid)
        return cls(tuple(chosen), tuple(power), stride)


def bump_spectrum(m: int, p: int, order: int, h: float, n: int) -> np.ndarray:
    """What correlating with ``d^order φ`` (φ as in :func:`bump`, of unit integral) does to the Fourier mode
    ``e^{iκx}`` of an ``n``-point periodic axis of spacing ``h``: ``(−iκ)^order · φ̂(κ)`` at ``κ = 2π j / (n h)``,
    ``j = 0 .. n//2``, with ``φ̂(κ) = ∫ φ(x) e^{−iκx} dx`` the continuous transform (real: φ is even).

    ``∫ ∂^k φ(x − x₀) g(x) dx`` of the trigonometric interpolant of g is then exact, whatever φ's smoothness: no
    quadrature error. ``φ̂`` comes from the trapezoidal rule on ``2M + 1`` points of ``[−1, 1]``, where
    ``(1 − s²)^p cos(κ m h s)`` vanishes with ``p − 1`` derivatives at the ends: off by ``~2^p p! (π M)^{−p−1}``,
    with M chosen to make that 1e-16 (and at least 8m, to resolve the cosines).
    """
    kappa = 2 * np.pi * np.arange(n // 2 + 1) / (n * h)
    return (-1j * kappa) ** order * _bump_hat(m, p, h, n)


@functools.lru_cache(maxsize=64)
def _bump_hat(m: int, p: int, h: float, n: int) -> np.ndarray:
    M = min(1 << 17, max(8 * m, 256, math.ceil((2**p * math.factorial(p) * 1e16) ** (1 / (p + 1)) / math.pi)))
    s = np.arange(-M, M + 1) / M
    kappa = 2 * np.pi * np.arange(n // 2 + 1) / (n * h)
    weights = (1 - s * s) ** p
    hat = np.cos(np.outer(kappa * m * h, s)) @ weights / weights.sum()  # the same sum for φ's area: φ̂(0) = 1
    hat.setflags(write=False)
    return hat


def _correlate(z: torch.Tensor, axis: int, m: int, p: int, h: float, orders: int, stride: int,
               periodic: bool) -> torch.Tensor:
    """``∫ ∂^k φ(x − x₀) z(x) dx`` along ``axis`` for every ``k < orders`` at every ``stride``-th shift ``x₀``,
    appended as a new last axis: on a periodic axis through the FFT (every shift, exact for the trigonometric
    interpolant, :func:`bump_spectrum`), else as trapezoid sums over the shifts that fit."""
    if periodic:
        n = z.shape[axis]
        symbols = np.stack([bump_spectrum(m, p, k, h, n) for k in range(orders)], -1)  # (n//2 + 1, orders)
        shape = [1] * (z.dim() + 1)
        shape[axis], shape[-1] = n // 2 + 1, orders
        spectrum = torch.fft.rfft(z, dim=axis).unsqueeze(-1) * torch.from_numpy(symbols).view(shape)
        out = torch.fft.irfft(spectrum, n=n, dim=axis)
        return out[(slice(None),) * axis + (slice(None, None, stride),)]
    taps = torch.from_numpy(np.stack([bump(m, p, k, h) * h for k in range(orders)])).to(z.dtype)  # (orders, 2m+1)
    windows = z.unfold(axis, 2 * m + 1, stride)  # (..., shifts, ..., 2m + 1)
    return windows @ taps.T


def weak_system(
    model: PolynomialPDE, u: torch.Tensor, dt: float, tests: TestFunctions
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weak features ``(R, J)`` (one row per test function, over all trajectories) and targets ``(R, C)``
    (``−∫ φ_t u``) for data ``u (N, T, C, *space)``; see the module docstring for how each term is integrated.

    Every distinct integrand (a field, ``u^{k+1}/(k+1)``, a monomial, a filtered term) is integrated once against
    every derivative order of φ it needs, axis by axis (a tensor product: time by sums over windows, periodic
    space axes by FFT), and the columns are picked from that table: no loop over test functions or terms."""
    N, T, C, *space = u.shape
    dims = len(space)
    sources: dict[tuple, torch.Tensor] = {}

    def source(key: tuple, make) -> int:
        if key not in sources:
            sources[key] = make()
        return list(sources).index(key)

    # a column: (integrand, time order, space orders, sign)
    targets = [(source(("field", c), lambda c=c: u[:, :, c]), 1, (0,) * dims, -1.0) for c in range(C)]
    columns = []
    strong = None
    for j, term in enumerate(model.terms):
        derivs = [(c, ab) for c, ab in term.factors if any(ab)]
        plain = [c for c, ab in term.factors if not any(ab)]
        if not derivs:  # a monomial (or the constant 1)
            key = ("monomial", tuple(sorted(plain)))
            columns.append((source(key, lambda plain=plain: math.prod((u[:, :, c] for c in plain),
                                                                       start=torch.ones_like(u[:, :, 0]))),
                            0, (0,) * dims, 1.0))
            continue
        if len(derivs) == 1:
            c, ab = derivs[0]
            if not plain:  # ∂^α u_c: all of α onto φ
                columns.append((source(("field", c), lambda c=c: u[:, :, c]), 0, ab, (-1.0) ** sum(ab)))
                continue
            if sum(ab) == 1 and all(q == c for q in plain):  # u_c^k ∂_i u_c = ∂_i(u_c^{k+1}/(k+1))
                k = len(plain)
                key = ("power", c, k + 1)
                columns.append((source(key, lambda c=c, k=k: u[:, :, c] ** (k + 1) / (k + 1)), 0, ab, -1.0))
                continue
        if strong is None:  # no divergence form: the filters' pointwise term, averaged against φ
            with torch.no_grad():
                strong = torch.stack([model.features(u[n]) for n in range(N)])  # (N, T, J, *space)
        columns.append((source(("filtered", j), lambda j=j, f=strong: f[:, :, j]), 0, (0,) * dims, 1.0))
    z = torch.stack(list(sources.values()))  # (S, N, T, *space)
    wanted = targets + columns
    orders = [1 + max(col[2][i] for col in wanted) for i in range(dims)]
    mt, *ms = tests.support
    pt, *ps = tests.power
    z = _correlate(z, 2, mt, pt, dt, 2, tests.stride[0], periodic=False)  # (S, N, T', *space, 2)
    periodic = model.bc == "periodic"
    for i in range(dims):
        z = _correlate(z, 3 + i, ms[i], ps[i], model.spacing[i], orders[i], tests.stride[1 + i], periodic)
    z = z.permute(0, *range(z.dim() - dims - 1, z.dim()), *range(1, z.dim() - dims - 1))  # (S, 2, *orders, N, ...)

    def pick(cols):
        if not cols:
            return z.new_zeros(math.prod(z.shape[2 + dims:]), 0)
        index = [torch.tensor(v) for v in zip(*((s, k, *ab) for s, k, ab, _ in cols), strict=True)]
        signs = torch.tensor([sign for *_, sign in cols], dtype=z.dtype)
        picked = z[tuple(index)] * signs.view(-1, *(1,) * (z.dim() - 2 - dims))
        return picked.reshape(len(cols), -1).T

    return pick(columns), pick(targets)
