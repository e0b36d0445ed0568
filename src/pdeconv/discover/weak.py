"""The weak form of the regression (``--form weak``): integrals against test functions instead of pointwise values.

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
at the border: the integration by parts has no boundary terms) and ``p = 4`` in time; their derivatives are exact
polynomials. Integrals are sums times the grid spacing (the trapezoidal rule, spectrally accurate for such φ).
All shifts of φ that fit inside the data are used, every ``stride`` points.

**Support** (:func:`choose_support`): along each axis the power spectrum of u (Hann-windowed, averaged over the
other axes) is compared with its noise floor (the median power over the upper half of the wavenumbers); the
signal ends at ``k_c``, the last wavenumber whose power exceeds ``10³`` × the floor. The half-width m is the
smallest, from ``2p`` up to ``n/4`` (n points on the axis; at least 3, else the data are too short for the weak
form), for which φ's own spectrum at ``k_c`` has fallen
below ``10⁻²`` of its peak: φ then passes the signal and filters the noise above it. Clean data get the smallest
support; noisy data wider ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from pdeconv.boundary import convolve_along
from pdeconv.discover.model import PolynomialPDE

__all__ = ["TestFunctions", "bump", "choose_support", "weak_system"]

#: spectrum above this multiple of the noise floor counts as signal
SIGNAL_OVER_FLOOR = 1e3
#: φ's spectrum must fall below this share of its peak at the signal's last wavenumber
PASS_LEVEL = 1e-2
#: the smallest automatic half-width: narrower bumps sample their derivatives too coarsely
MIN_SUPPORT = 3
#: time bumps have this power p
TIME_POWER = 4


def bump(m: int, p: int, order: int, h: float) -> np.ndarray:
    """``d^order/dx^order`` of ``φ(x) = (1 − (x / (m h))²)^p`` at ``x = i·h``, ``i = −m..m``, over ``∫φ dx``.

    φ and its first ``p − 1`` derivatives vanish at ``±m h``.
    """
    if m < 1 or p < 1 or order < 0:
        raise ValueError(f"need m ≥ 1, p ≥ 1 and order ≥ 0; got {m}, {p}, {order}")
    poly = np.polynomial.Polynomial([1.0, 0.0, -1.0]) ** p  # in s = x / (m h)
    s = np.arange(-m, m + 1) / m
    area = float(poly.integ()(1.0) - poly.integ()(-1.0)) * m * h  # ∫ φ dx, exactly
    return poly.deriv(order)(s) / (m * h) ** order / area if order else poly(s) / area


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


def choose_support(u: np.ndarray, axis: int, p: int) -> int:
    """The test functions' half-width m (grid points) along ``axis`` of ``u`` (see the module docstring)."""
    n = u.shape[axis]
    top = n // 4
    if top < MIN_SUPPORT:
        raise ValueError(
            f"{n} points along an axis are too few for test functions (half-width ≥ {MIN_SUPPORT} within a quarter "
            f"of the axis needs {4 * MIN_SUPPORT}); use --form strong"
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
        rows: int = 4096,
    ) -> TestFunctions:
        """Test functions for data ``u (N, T, C, *space)``: supports by :func:`choose_support` unless given
        (``support`` for every space axis, ``time_support`` for t); strides so that about ``rows`` integrals are
        taken per equation."""
        dims = u.ndim - 3
        power = (TIME_POWER, *(max_order + 3,) * dims)
        axes = (1, *range(3, 3 + dims))
        chosen = []
        for i, (axis, p) in enumerate(zip(axes, power, strict=True)):
            given = time_support if i == 0 else support
            m = given if given is not None else choose_support(u, axis, p)
            if 2 * m + 1 > u.shape[axis]:
                what = "time" if i == 0 else "space"
                raise ValueError(
                    f"a {what} support of half-width {m} needs {2 * m + 1} points along that axis; the data have "
                    f"{u.shape[axis]}: lower --{'time-' if i == 0 else ''}support"
                )
            if m < 2:
                raise ValueError(f"test-function half-widths must be ≥ 2 grid points; got {m}")
            chosen.append(int(m))
        valid = [u.shape[a] - 2 * m for a, m in zip(axes, chosen, strict=True)]
        per_axis = (rows / (u.shape[0] * math.prod(valid))) ** (1 / len(valid))
        stride = tuple(max(1, math.floor(1 / per_axis)) if per_axis < 1 else 1 for _ in valid)
        return cls(tuple(chosen), power, stride)


def _integrate(g: torch.Tensor, profiles: list[np.ndarray], spacing: list[float], stride: tuple[int, ...]):
    """``Σ`` over each axis of ``g (N, T, *space)`` against ``profiles[axis]`` (valid shifts, every ``stride``-th),
    times the spacing: the integrals of g against every shifted test function, ``(N, T', *space')``."""
    for axis, (prof, h, step) in enumerate(zip(profiles, spacing, stride, strict=True), start=1):
        g = convolve_along(g, torch.from_numpy(prof * h), axis, stride=step)
    return g


def weak_system(
    model: PolynomialPDE, u: torch.Tensor, dt: float, tests: TestFunctions
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weak features ``(R, J)`` (one row per test function, over all trajectories) and targets ``(R, C)``
    (``−∫ φ_t u``) for data ``u (N, T, C, *space)``; see the module docstring for how each term is integrated."""
    N, T, C, *space = u.shape
    dims = len(space)
    spacing = [dt, *model.spacing]
    mt, *ms = tests.support
    pt, *ps = tests.power

    def profiles(orders: tuple[int, ...], time_order: int = 0) -> list[np.ndarray]:
        return [bump(mt, pt, time_order, dt)] + [bump(m, p, k, h) for m, p, k, h in
                                                 zip(ms, ps, orders, model.spacing, strict=True)]

    zero = (0,) * dims
    target = torch.stack([-_integrate(u[:, :, c], profiles(zero, 1), spacing, tests.stride) for c in range(C)], -1)
    columns = []
    strong = None
    for j, term in enumerate(model.terms):
        derivs = [(c, ab) for c, ab in term.factors if any(ab)]
        plain = [c for c, ab in term.factors if not any(ab)]
        if not derivs:  # a monomial (or the constant 1)
            g = torch.ones_like(u[:, :, 0])
            for c in plain:
                g = g * u[:, :, c]
            columns.append(_integrate(g, profiles(zero), spacing, tests.stride))
            continue
        if len(derivs) == 1:
            c, ab = derivs[0]
            if not plain:  # ∂^α u_c: all of α onto φ
                sign = (-1) ** sum(ab)
                columns.append(sign * _integrate(u[:, :, c], profiles(ab), spacing, tests.stride))
                continue
            if sum(ab) == 1 and all(q == c for q in plain):  # u_c^k ∂_i u_c = ∂_i(u_c^{k+1}/(k+1))
                k = len(plain)
                g = u[:, :, c] ** (k + 1) / (k + 1)
                columns.append(-_integrate(g, profiles(ab), spacing, tests.stride))
                continue
        if strong is None:  # no divergence form: the filters' pointwise term, averaged against φ
            with torch.no_grad():
                strong = torch.stack([model.features(u[n]) for n in range(N)])  # (N, T, J, *space)
        columns.append(_integrate(strong[:, :, j], profiles(zero), spacing, tests.stride))
    features = torch.stack([c.reshape(-1) for c in columns], -1) if columns else u.new_zeros(target[..., 0].numel(), 0)
    return features, target.reshape(-1, C)
