"""Which axis of an array is time, which are space: named, matched with coordinates, or decided from the data.

Axis letters: ``n`` (trajectories), ``t`` (time), ``c`` (fields), ``z``, ``y``, ``x`` (space). A :class:`Dataset
<pdeconv.discover.dataset.Dataset>` holds ``u`` as ``(N, T, C, *space)`` with space ``(x,)``, ``(y, x)`` or
``(z, y, x)``; :func:`arrange` brings any stored order there. A coordinate is a uniform vector (its step is the
spacing; a decreasing one flips its axis) or a single number (the spacing itself). The order is, in turn:

1. ``axes`` when given (``"xt"``: rows are x, columns t, PDE-FIND's ``usol``; ``"ntyx"``), checked against the
   coordinates' lengths;
2. the only order the coordinates' lengths fit;
3. when several fit (a square array, a single-number coordinate): the one whose quick linear fit
   (:func:`quick_share`) explains ``u_t`` (at least :data:`DECIDE_SHARE`, with the runner-up at most
   :data:`DECIDE_OTHER`), reported in the returned note; else a ``ValueError`` that lists every candidate order
   with what it means and the flag that picks it.

NumPy only: reading and checking data never imports torch.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping

import numpy as np

from pdeconv.errors import PdeconvError

__all__ = [
    "DECIDE_OTHER", "DECIDE_SHARE", "LETTERS", "RTOL", "arrange", "check_letters", "describe", "quick_share", "spacing",
]

LETTERS = "ntczyx"  # u's axes, in the order of a Dataset
_WORDS = {"n": "trajectories", "t": "time", "c": "fields", "z": "z", "y": "y", "x": "x"}
#: every step of a coordinate must be within max(RTOL, 100·eps)·|step| + 2·eps·max|coordinate| of the mean step
#: (eps of the array's dtype; the second term is the rounding of the stored values)
RTOL = 1e-6
#: an ambiguous order is decided from the data when one candidate's quick fit explains at least this share of u_t
DECIDE_SHARE = 0.9
#: ... and every other candidate's at most this share
DECIDE_OTHER = 0.5


def check_letters(axes: str) -> None:
    """``ValueError`` unless ``axes`` names axes once each, among n, t, c, z, y, x, with t and x."""
    if not (isinstance(axes, str) and set(axes) <= set(LETTERS) and len(set(axes)) == len(axes)
            and {"t", "x"} <= set(axes) and ("z" not in axes or "y" in axes)):
        raise PdeconvError(f"axes {axes!r} must name each axis of u once, in its order, with letters of n "
                         "(trajectories), t (time), c (fields), z, y, x (space; t and x at least), e.g. 'xt' or 'ntyx'")


def describe(order: str, shape: tuple[int, ...]) -> str:
    """``"xt (axis 0: x, 128 points; axis 1: time, 200 points)"``."""
    parts = "; ".join(f"axis {i}: {_WORDS[a]}, {n}" for i, (a, n) in enumerate(zip(order, shape, strict=True)))
    return f"{order} ({parts})"


def spacing(where: str, role: str, a, label: str | None = None) -> tuple[float, int | None]:
    """(step, length) of a coordinate vector; (the number, None) for a single number. ``ValueError`` if it is
    not uniform (within :data:`RTOL`), not finite, empty or of rank > 1. ``label``: the array's name in messages."""
    a = np.asarray(a)
    name = label or role
    v = np.squeeze(a)
    if v.ndim > 1 or v.size == 0 or not np.issubdtype(v.dtype, np.number) or np.iscomplexobj(v):
        raise PdeconvError(f"{where}: {name} must be a real vector of coordinates or a single number (the "
                         f"spacing); got shape {a.shape}, dtype {a.dtype}")
    if not np.all(np.isfinite(v)):
        raise PdeconvError(f"{where}: {name} contains NaN or infinite values")
    if v.size == 1:
        return float(v.reshape(())), None
    v64 = v.astype(np.float64)
    step = (v64[-1] - v64[0]) / (v.size - 1)
    d = np.diff(v64)
    eps = np.finfo(v.dtype).eps if np.issubdtype(v.dtype, np.floating) else np.finfo(np.float64).eps
    if step == 0 or np.max(np.abs(d - step)) > max(RTOL, 100 * eps) * abs(step) + 2 * eps * np.max(np.abs(v64)):
        raise PdeconvError(f"{where}: {name} is not uniform: steps from {d.min():.6g} to {d.max():.6g}; "
                         f"pdeconv needs evenly spaced {role} (resample the data)")
    return float(step), v.size


def _candidates(
    where: str, shape: tuple[int, ...], space: str, lengths: Mapping[str, int | None], axes: str | None,
    fields: bool,
) -> list[str]:
    """The orders (letters of n, t, c, z, y, x) of u's axes that ``axes`` or the coordinates' lengths allow."""
    needed = "t" + space
    given = ", ".join(f"{k}: {n}" for k, n in lengths.items() if n is not None) or "none (all single numbers)"
    if axes is not None:
        if not (set(axes) <= set(LETTERS) and len(set(axes)) == len(axes) and set(needed) <= set(axes)
                and set(axes) & set("zyx") == set(space)):
            raise PdeconvError(f"axes {axes!r} must name each axis of u once, with t, {', '.join(space)} and "
                             "optionally n (trajectories) and c (fields), e.g. 'xt' or 'ntyx'")
        if len(axes) != len(shape):
            raise PdeconvError(f"{where}: axes {axes!r} names {len(axes)} axes but u has {len(shape)}: shape {shape}")
        bad = [f"{letter}: {lengths[letter]} vs {n}" for letter, n in zip(axes, shape)
               if lengths.get(letter) not in (None, n)]
        if bad:
            raise PdeconvError(f"{where}: u of shape {shape} read as {axes!r} does not match the coordinate lengths "
                             f"({'; '.join(bad)})")
        return [axes]
    extra = len(shape) - len(needed)
    if not 0 <= extra <= 2:
        raise PdeconvError(f"{where}: u has shape {shape}; with coordinates {', '.join(needed)} it needs "
                         f"{len(needed)} to {len(needed) + 2} axes: {', '.join(needed)}, and optionally n "
                         "(trajectories) and c (fields)")
    letters = needed + ("", "c" if fields else "n", "nc")[extra]
    fits = ["".join(p) for p in itertools.permutations(letters)
            if all(lengths.get(letter) in (None, n) for letter, n in zip(p, shape))]
    if not fits:
        raise PdeconvError(f"{where}: u of shape {shape} does not match the coordinate lengths ({given}); "
                         "each coordinate's length must be that of one axis of u")
    return fits


def _reorder(u: np.ndarray, order: str, steps: Mapping[str, float], lengths: Mapping[str, int | None]) -> np.ndarray:
    """``u`` stored in ``order`` as ``(N, T, C, *space)``, axes with a decreasing coordinate flipped."""
    u = np.transpose(u, [order.index(letter) for letter in LETTERS if letter in order])
    if "n" not in order:
        u = u[None]
    if "c" not in order:
        u = u[:, :, None]
    full = "ntc" + "".join(a for a in "zyx" if a in order)
    for role, step in steps.items():
        if lengths.get(role) is not None and step < 0:
            u = np.flip(u, full.index(role))
    return u


def quick_share(u: np.ndarray, dt: float, spacings: tuple[float, ...]) -> float:
    """The share of ``u_t`` (1 − ‖u_t − Θc‖² / ‖u_t‖², least squares) that a small library explains, for
    ``u (N, T, C, *space)``: per field 1, the fields, their squares, and along each space axis the derivatives of
    orders 1 to 4 and ``u·u_a``, ``u·u_aa``. Second-order differences away from every border (no boundary
    condition assumed). A probe of which axis is which, not a fit: NaN when the array is too small."""
    u = np.asarray(u, dtype=np.float64)[:8]  # a few trajectories suffice
    T, space = u.shape[1], u.shape[3:]
    if T < 5 or min(space) < 9:
        return float("nan")
    ut = np.gradient(u, dt, axis=1)
    base = [u[:, :, [c]] for c in range(u.shape[2])]
    cols = [np.ones_like(base[0])] + base + [b * b for b in base]
    for k, h in enumerate(spacings):
        axis = 3 + k
        d = u
        ders = []
        for _ in range(4):
            d = np.gradient(d, h, axis=axis)
            ders.append(d)
        cols += ders + [u * ders[0], u * ders[1]]
    inner = (slice(None), slice(2, T - 2), slice(None), *(slice(4, n - 4) for n in space))
    shares = []
    for c in range(u.shape[2]):
        theta = np.stack([np.broadcast_to(col, u.shape)[inner][:, :, c].ravel() for col in cols], axis=1)
        y = ut[inner][:, :, c].ravel()
        total = float(y @ y)
        if total == 0:
            continue
        norms = np.linalg.norm(theta, axis=0)
        norms[norms == 0] = 1
        coef, *_ = np.linalg.lstsq(theta / norms, y, rcond=None)
        r = y - (theta / norms) @ coef
        shares.append(1 - float(r @ r) / total)
    return min(shares) if shares else float("nan")


def arrange(
    u: np.ndarray,
    coordinates: Mapping[str, object],
    *,
    axes: str | None = None,
    fields: int | None = None,
    where: str = "u",
    how: str = "`axes` ORDER",
    labels: Mapping[str, str] | None = None,
) -> tuple[np.ndarray, dict[str, float], str, str]:
    """``u`` as ``(N, T, C, *space)`` with its spacings, from ``coordinates`` (role → vector or spacing, for ``t``
    and the space roles among ``z``, ``y``, ``x``; ``x`` and ``t`` required).

    Returns ``(u, {"dt": .., "dx": .., ...}, order, note)``: ``order`` the letters of u's stored axes, ``note``
    how it was found (empty when given or the only one that fits). ``fields``: the number of fields when they are
    named (one axis beyond t and space is then read as c, not n). ``how``: the way to name the order, and
    ``labels`` (role → array name) the arrays, for messages.
    """
    u = np.asarray(u)
    if axes is not None:
        check_letters(axes)
    space = "".join(role for role in "zyx" if role in coordinates)
    if "t" not in coordinates or "x" not in coordinates:
        raise PdeconvError(f"{where}: say where time and space are: t and x (coordinate vectors or spacings) are "
                         "both needed")
    if "z" in coordinates and "y" not in coordinates:
        raise PdeconvError(f"{where}: z needs y: 3-D data have coordinates z, y and x")
    steps, lengths = {}, {}
    for role in "t" + space:
        steps[role], lengths[role] = spacing(where, role, coordinates[role], (labels or {}).get(role))
    if fields is not None:
        lengths["c"] = fields
    fits = _candidates(where, tuple(u.shape), space, lengths, axes, fields is not None)
    note = ""
    if len(fits) > 1:
        order, note = _decide(where, u, fits, steps, lengths, how)
    else:
        order = fits[0]
    out = _reorder(u, order, steps, lengths)
    return out, {"d" + role: abs(step) if lengths[role] is not None else step for role, step in steps.items()}, \
        order, note


def _decide(
    where: str, u: np.ndarray, fits: list[str], steps: Mapping[str, float], lengths: Mapping[str, int | None],
    how: str,
) -> tuple[str, str]:
    """The one of several candidate orders whose quick fit explains the data, or a ``ValueError`` listing them."""
    shape = tuple(u.shape)
    shares = {}
    if len(fits) <= 6 and np.isrealobj(u) and np.all(np.isfinite(u)):
        for order in fits:
            v = _reorder(u, order, steps, lengths)
            space = [a for a in "zyx" if a in order]
            shares[order] = quick_share(v, abs(steps["t"]), tuple(abs(steps[a]) for a in space))
    ranked = sorted(fits, key=lambda o: -np.nan_to_num(shares.get(o, np.nan), nan=-np.inf))
    best = ranked[0]
    s = np.nan_to_num([shares.get(o, np.nan) for o in ranked], nan=-np.inf)
    if len(shares) == len(fits) and s[0] >= DECIDE_SHARE and s[1] <= DECIDE_OTHER:
        others = ", ".join(f"{o}: {shares[o]:.0%}" for o in ranked[1:])
        return best, (f"u of shape {shape} fits several axis orders; read as {describe(best, shape)}, the one a "
                      f"quick linear fit of u_t explains ({shares[best]:.0%}; {others}); if that is wrong, say "
                      f"the order with {how.split(' (')[0]}")
    listing = "; ".join(describe(o, shape) + (f", quick fit explains {shares[o]:.0%}" if o in shares
                                              and np.isfinite(shares[o]) else "") for o in ranked[:6])
    more = ", …" if len(fits) > 6 else ""
    raise PdeconvError(f"{where}: u of shape {shape} fits several axis orders ({', '.join(fits[:6])}{more}) and the "
                     f"data do not decide between them ({listing}{more}); say which is right with {how}")
