"""The regression of a fit (stages 1–3 of :mod:`pdeconv.discover.fit`): ``u_t`` by central differences, trust
weights where the grid does not resolve the data, and weighted sparse regression (a group lasso, then sequential
pruning and least-squares refits), with the share of ``u_t`` a model explains."""

from __future__ import annotations

import math

import torch

from pdeconv.discover.model import Derivatives, PolynomialPDE
from pdeconv.discover.weak import TestFunctions, weak_system
from pdeconv.errors import PdeconvError
from pdeconv.stencil import finite_difference


def time_derivative(u: torch.Tensor, dt: float) -> tuple[torch.Tensor, slice]:
    """``u_t`` of ``u (N, T, ...)`` by central differences along T: 7, 5 or 3 points, the most that T allows.

    Returns the derivative at frames ``r .. T − 1 − r`` and that slice (r = 3, 2 or 1).
    """
    T = u.shape[1]
    size = 7 if T >= 7 else 5 if T >= 5 else 3
    r = size // 2
    weights = finite_difference((0, 1), size=size, accuracy=size - 1, dtype=torch.float64)[r]
    ut = sum(float(weights[i]) * u[:, i:T - 2 * r + i] for i in range(size) if weights[i] != 0) / dt
    return ut, slice(r, T - r)


def normal_equations(
    model: PolynomialPDE, u: torch.Tensor, dt: float, weights: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-point weighted sums ``G = Σ w θθᵀ (P, J, J)``, ``b = Σ w θ u_t (C, P, J)`` and ``Σ w u_t² (C,)``, over
    time and trajectories at each of the P grid points."""
    ut, frames = time_derivative(u, dt)
    N, J, C = u.shape[0], len(model.terms), u.shape[2]
    points = math.prod(u.shape[3:])
    G = u.new_zeros(points, J, J)
    b = u.new_zeros(C, points, J)
    yy = u.new_zeros(C)
    with torch.no_grad():
        for n in range(N):
            theta = model.features(u[n, frames]).flatten(2).permute(2, 0, 1)  # (P, T', J)
            w = weights[n, frames].flatten(1).T  # (P, T')
            G += (theta * w.unsqueeze(-1)).transpose(1, 2) @ theta
            y = ut[n].flatten(2)  # (T', C, HW)
            b += torch.einsum("ptj,pt,tcp->cpj", theta, w, y)
            yy += torch.einsum("pt,tcp->c", w, y * y)
    return G, b, yy


def resolution_weights(model: PolynomialPDE, u: torch.Tensor, quantile: float | None) -> torch.Tensor:
    """Trust in each sample ``(N, T, *space)``: ``w = 1 / (1 + (d / q)²)``, small where the data are under-resolved.

    ``d`` is the disagreement of the model's filters with lower-order ones (size − 4, at least 3), summed over
    derivatives and fields, each relative to its RMS: a local estimate of truncation error (and noise), large at
    fronts the grid cannot resolve. ``q`` is the ``quantile`` of ``d``; ``None`` gives uniform weights. Within a
    filter radius of a non-periodic boundary, where padding stands in for the unknown outside, ``w = 0``.
    """
    N, T, C, *space = u.shape
    w = u.new_ones(N, T, *space)
    hi = model.derivatives
    spatial = tuple(range(4, 4 + len(space)))  # the space axes of (N, T, C, P, *space)
    if quantile is not None and hi.orders:
        if not 0 < quantile <= 1:
            raise PdeconvError(f"weighting must be a quantile in (0, 1] or none (uniform weights); got {quantile}")
        lo_size = max(3, hi.size - 4)
        orders = [ab for ab in hi.orders if sum(ab) < lo_size]
        lo = Derivatives(orders, size=lo_size, spacing=model.spacing, bc=model.bc, learn_moments=False)
        pick = [hi.orders.index(ab) for ab in orders]
        with torch.no_grad():
            a = torch.stack([hi(u[n])[:, :, pick] for n in range(N)])  # (N, T, C, P, *space)
            d = (a - torch.stack([lo(u[n]) for n in range(N)])).abs()
            d = (d / a.pow(2).mean(dim=(0, 1, *spatial), keepdim=True).sqrt().clamp_min(1e-300)).sum(dim=(2, 3))
            flat = d.flatten()
            q = torch.quantile(flat[:: max(1, flat.numel() // 500_000)], quantile).clamp_min(1e-300)
            w = 1 / (1 + (d / q) ** 2)
    if model.bc != "periodic":
        r = hi.size // 2
        for axis, n in enumerate(space, start=2):
            w.narrow(axis, 0, r).zero_()
            w.narrow(axis, n - r, r).zero_()
    return w


def _design(model: PolynomialPDE, G: torch.Tensor, b: torch.Tensor, yy: torch.Tensor, e: int):
    """Normal equations ``A x = r`` of equation ``e`` in the normalised unknowns ``x = ĉ (J, M)`` (flattened).

    Divided by ``Σ w u_t²``, so ``xᵀAx − 2rᵀx + 1`` is the weighted residual share of ``u_t``. ``G`` holds one
    Gram matrix per grid point (P of them), or a single one (the weak form: constant coefficients).
    """
    Phi = model.basis.flatten(1) if G.shape[0] > 1 else G.new_ones(1, 1)  # (M, P)
    M, J = Phi.shape[0], G.shape[-1]
    s = model.scale[e]
    Gs = (G * (s[None, :, None] * s[None, None, :])).permute(1, 2, 0)  # (J, J, P)
    A = torch.stack([torch.stack([(Phi * Gs[j, k]) @ Phi.T for k in range(J)], 1) for j in range(J)])
    A = A.reshape(J * M, J * M)  # (j, m, k, n): rows (j, m), columns (k, n)
    r = ((b[e] * s).T @ Phi.T).reshape(-1)
    norm = yy[e].clamp_min(1e-300)
    return A / norm, r / norm


def _solve(A: torch.Tensor, r: torch.Tensor, ridge: float = 1e-12) -> torch.Tensor:
    return torch.linalg.solve(A + ridge * torch.diagonal(A).mean() * torch.eye(len(r), dtype=A.dtype), r)


def _group_norms(x: torch.Tensor, groups: torch.Tensor, n: int) -> torch.Tensor:
    return torch.zeros(n, dtype=x.dtype).index_add_(0, groups, x * x).sqrt()


def _group_lasso(
    A: torch.Tensor, r: torch.Tensor, groups: torch.Tensor, lam: float, x: torch.Tensor, iters: int = 5000
) -> torch.Tensor:
    """``argmin ½ xᵀAx − rᵀx + lam Σ_g ‖x_g‖₂`` (``groups[i]``: group of unknown i), accelerated proximal gradient."""
    n = int(groups.max()) + 1
    v = torch.ones_like(r)
    for _ in range(50):  # power iteration: the largest eigenvalue of A sets the step
        v = A @ v
        v = v / v.norm().clamp_min(1e-300)
    step = 1.0 / (1.05 * float(v @ (A @ v)) + 1e-300)
    y, t = x.clone(), 1.0
    for i in range(iters):
        z = y - step * (A @ y - r)
        shrink = (1 - step * lam / _group_norms(z, groups, n).clamp_min(1e-300)).clamp_min(0)
        x_new = z * shrink[groups]
        t_new = (1 + (1 + 4 * t * t) ** 0.5) / 2
        y = x_new + ((t - 1) / t_new) * (x_new - x)
        if i % 20 == 0 and float((x_new - x).abs().max()) <= 1e-10 * float(x_new.abs().max()):
            return x_new
        x, t = x_new, t_new
    return x


def sparse_regression(
    model: PolynomialPDE, u: torch.Tensor, dt: float, weights: torch.Tensor, *, l1: float, threshold: float
) -> None:
    """Set ``model.normalised`` and ``model.mask`` by L1-penalised least squares and sequential pruning.

    The groups are the constant part of each coefficient and, for variable coefficients, the rest of its field:
    a field whose variation explains less than ``threshold`` of ``u_t`` becomes a constant; a term whose whole
    coefficient does, goes.
    """
    solve_sparse(model, *normal_equations(model, u, dt, weights), l1=l1, threshold=threshold)


def solve_sparse(
    model: PolynomialPDE, G: torch.Tensor, b: torch.Tensor, yy: torch.Tensor, *, l1: float, threshold: float
) -> None:
    """:func:`sparse_regression` on given normal equations: ``G (P, J, J)``, ``b (C, P, J)``, ``yy (C,)`` (P = 1
    with constant coefficients and a single system, as the weak form has)."""
    J, M = len(model.terms), model.basis.shape[0]
    groups = (2 * torch.arange(J)[:, None] + (torch.arange(M) > 0)[None, :]).flatten()  # constant / variable part
    term = torch.arange(J).repeat_interleave(M)
    with torch.no_grad():
        for e in range(len(model.components)):
            A_all, r_all = _design(model, G, b, yy, e)
            keep = torch.arange(J * M)
            x = _solve(A_all, r_all)
            if l1 > 0:
                x = _group_lasso(A_all, r_all, groups, l1, x)
            refit = l1 == 0  # a penalised solution is always refit (debiased) on its support
            while True:  # prune the groups below threshold and refit, until every survivor is above it
                survive = (_group_norms(x, groups[keep], 2 * J)[groups[keep]] >= threshold) & (
                    _group_norms(x, term[keep], J)[term[keep]] >= threshold
                )
                if not bool(survive.any()):
                    keep = keep[survive]
                    break
                if bool(survive.all()) and refit:
                    break
                keep = keep[survive]
                x = _solve(A_all[keep][:, keep], r_all[keep])
                refit = True
            model.mask[e].zero_()
            model.normalised[e].zero_()
            if len(keep):
                model.mask[e].view(-1)[keep] = 1.0
                model.normalised[e].view(-1)[keep] = x


# -------------------------------------------------------------------------------------------------- rollout


def explained_share(model: PolynomialPDE, u: torch.Tensor, dt: float, tests: TestFunctions | None = None) -> float:
    """``1 − ‖u_t − F(u)‖² / ‖u_t‖²`` over the frames where :func:`time_derivative` gives ``u_t``: 1 for a perfect
    fit, 0 for the trivial PDE ``u_t = 0``, negative when F predicts worse than that.

    With ``tests`` (a weak-form fit), the same share in the weak sense: of the integrals ``−∫ φ_t u`` against the
    test functions, explained by ``Σ_j c_j ∫ φ θ_j`` (pointwise ``u_t`` of noisy data is mostly noise)."""
    with torch.no_grad():
        if tests is not None:
            features, target = weak_system(model, u, dt, tests)
            c = model.prepare()[0].to(features.dtype)  # (C, J)
            residual, total = float((target - features @ c.T).square().sum()), float(target.square().sum())
        else:
            ut, frames = time_derivative(u, dt)
            residual = sum(float((ut[n] - model(u[n, frames])).square().sum()) for n in range(u.shape[0]))
            total = float(ut.square().sum())
    return 1.0 - residual / total if total > 0 else (1.0 if residual == 0 else float("-inf"))
