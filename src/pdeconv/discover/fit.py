"""Fit ``u_t = Σ_j c_j θ_j`` to solution data: weighted sparse regression, then a multi-step rollout refit.

1. **Library** ``θ_j`` evaluated with moment-constrained filters (free moments 0: central differences of order
   ``kernel_size − order``); ``u_t`` by central differences in time of order up to 6 (``stencil.finite_difference``).
2. **Trust weights** (:func:`resolution_weights`): samples where the grid does not resolve the data (fronts,
   shocks), found by comparing the filters with lower-order ones, count less; truncation error there would
   otherwise bias the coefficients (it costs a 32² Burgers fit ~15% on ν).
3. **Sparse regression** (SINDy-style): weighted least squares on the normalised terms with an L1 penalty,
   ``½ · residual share of u_t + l1 · Σ_j ‖ĉ_j‖`` (proximal gradient), then sequential pruning of
   ``|ĉ_j| < threshold`` and least-squares refits until the set of terms is stable. ``|ĉ_j|`` is the share of
   ``u_t`` that term j explains (see ``model.py``).
4. **Rollout refit** (PDE-Net's δt-blocks): L-BFGS on the error of ``rollout`` RK4 steps (sub-stepped for
   stability) from observed frames, relative to how far the data move, weighted by trust and compared after a
   binomial blur (so noise in the start frames does not reward extra diffusion); the surviving coefficients
   and the filters' free moments are learnt. Kept only if it lowers that loss (after a weak-form regression: at
   least halves it; not run when half of it lies below the noise floor, :func:`noise_variance`).

Everything runs in float64 on the CPU. Held-out trajectories, unseen by 1–4, give the long-horizon prediction
error ``‖û(t) − u(t)‖ / ‖u(t)‖`` from their first frame (with a single trajectory: the training one).
"""

from __future__ import annotations

import copy
import functools
import math
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch
from tqdm.auto import tqdm

from pdeconv.boundary import convolve_along
from pdeconv.discover.dataset import Dataset
from pdeconv.discover.library import build_library
from pdeconv.discover.model import Derivatives, PolynomialPDE
from pdeconv.discover.weak import TestFunctions, noise_variance, weak_system
from pdeconv.errors import PdeconvError
from pdeconv.stencil import binomial, finite_difference

__all__ = [
    "COEFFICIENTS",
    "EXPLAINED_FAIL",
    "EXPLAINED_WARNING",
    "Fit",
    "FitSettings",
    "explained_share",
    "fit",
    "noise_variance",
    "time_derivative",
    "resolution_weights",
    "sparse_regression",
    "prediction_error",
]

COEFFICIENTS = ("constant", "variable")
FORMS = ("auto", "strong", "weak")
#: the weak form keeps the rollout refit only if it at least halves the rollout loss: a refit that gains less
#: is fitting noise (on 5% noise it moved ν of 1-D Burgers by 15% for a 0.8% lower loss), one that gains more
#: removes truncation error (on clean data it gains orders of magnitude)
WEAK_REFIT_GAIN = 0.5
#: below this share of u_t explained (on the training data), a fit comes with a warning
EXPLAINED_WARNING = 0.5
#: below this share (or NaN) the fit has failed, as it has when its rollout blows up: ``Fit.failed``, and
#: ``pdeconv discover fit`` exits with status 3
EXPLAINED_FAIL = 0.1


@dataclass(frozen=True)
class FitSettings:
    """Every setting of :func:`fit`, checked on construction.

    library:       candidate terms, comma-separated kinds of :mod:`~pdeconv.discover.library` ("linear", ...).
    coefficients:  "constant" (a number per term) or "variable" (a smooth field per term).
    degree:        degree of variable coefficient fields (``None``: 6, less on periodic grids under 13 points).
    max_order:     highest derivative order of the library.
    kernel_size:   size of the moment-constrained filters (odd).
    rollout:       δt steps per window of the rollout refit (capped at the frames available).
    substeps:      RK4 steps per δt (``None``: enough for stability).
    smooth:        binomial blur (odd size, 0: off) applied before the rollout loss compares frames.
    iterations:    L-BFGS iterations of the rollout refit (0: keep the regression).
    l1, threshold: L1 penalty and pruning threshold on the normalised coefficients.
    learn_moments: learn the filters' free moments in the refit (else they stay 0).
    weighting:     quantile of the trust weights (``None``: all samples weigh the same).
    holdout:       trajectories kept out of the fit for the prediction error (``None``: a fifth, ≥ 1 when ≥ 2).
    max_windows:   rollout windows per refit.
    seed:          random seed of the window draw.
    form:          "strong" (pointwise regression on filtered derivatives), "weak" (integrals against test
                   functions, :mod:`~pdeconv.discover.weak`; constant coefficients) or "auto": both regressions,
                   each refit (only the better start when both kept the same terms or one starts 4× worse), and
                   the one whose PDE predicts the data's own frames better is kept (the rollout loss; within 5%:
                   fewer terms, then the weak form). Strong for variable coefficients, or data too short for weak.
    support:       weak form: test-function half-width in grid points along every space axis (``None``: chosen per
                   axis from the data's spectrum; a fit records the chosen ones, a tuple in array order).
    time_support:  weak form: the same along time.
    test_functions: weak form: about this many test functions per equation (shifts of φ on a regular grid).
    """

    library: str = "linear"
    coefficients: str = "constant"
    degree: int | None = None
    max_order: int = 2
    kernel_size: int = 11
    rollout: int = 10
    substeps: int | None = None
    smooth: int = 5
    iterations: int = 50
    l1: float = 1e-3
    threshold: float = 1e-2
    learn_moments: bool = True
    weighting: float | None = 0.05
    holdout: int | None = None
    max_windows: int = 16
    seed: int = 0
    form: str = "auto"
    support: int | tuple[int, ...] | None = None
    time_support: int | None = None
    test_functions: int = 4096

    def __post_init__(self) -> None:
        if self.coefficients not in COEFFICIENTS:
            raise PdeconvError(f"coefficients must be one of {', '.join(COEFFICIENTS)}; got {self.coefficients!r}")
        if self.coefficients == "constant" and self.degree is not None:
            raise PdeconvError("degree applies to variable coefficients only (--coefficients variable)")
        if self.smooth < 0 or self.smooth % 2 == 0 and self.smooth != 0:
            raise PdeconvError(f"smooth must be 0 (off) or an odd filter size; got {self.smooth}")
        if self.rollout < 1 or self.iterations < 0 or (self.substeps is not None and self.substeps < 1):
            raise PdeconvError(
                f"need rollout ≥ 1, substeps ≥ 1 and iterations ≥ 0; got {self.rollout}, {self.substeps}, "
                f"{self.iterations}"
            )
        if self.l1 < 0 or self.threshold < 0:
            raise PdeconvError(f"l1 and threshold must be ≥ 0; got {self.l1} and {self.threshold}")
        if self.form not in FORMS:
            raise PdeconvError(f"form must be one of {', '.join(FORMS)}; got {self.form!r}")
        if self.form == "weak" and self.coefficients == "variable":
            raise PdeconvError("the weak form fits constant coefficients; use --form strong for variable ones")
        if self.test_functions < 1:
            raise PdeconvError(f"test_functions must be ≥ 1; got {self.test_functions}")
        if self.form == "strong" and (self.support is not None or self.time_support is not None):
            raise PdeconvError("support and time_support set the weak form's test functions: use --form weak or auto")


@dataclass
class Fit:
    """What :func:`fit` found: the model, its equations, the held-out prediction error and bookkeeping.

    ``settings`` are the ones in effect (defaults resolved for the data: ``degree``, ``rollout``, ``holdout``).
    ``error`` and ``predicted`` (a rollout of the learnt PDE over the whole record, which costs more than the fit
    on long records: 5 000 integrating-factor RK4 steps on PDE-FIND's Kuramoto–Sivashinsky file) are computed
    when first read, and kept; ``seconds`` is the fit's time without them.
    """

    model: PolynomialPDE
    data: Dataset
    train: list[int]
    heldout: list[int]
    equations: dict[str, dict[str, float]]
    error_source: str  # "held-out", or "training" when every trajectory was used to fit
    error_trajectory: int  # the trajectory of ``predicted``
    substeps: int
    settings: FitSettings
    seconds: float
    history: list[tuple[str, float]] = field(default_factory=list)
    explained: float = float("nan")  # 1 − ‖u_t − F(u)‖² / ‖u_t‖² on the training data (:func:`explained_share`;
    # in the weak sense for a weak-form fit)
    _prediction: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False, compare=False)

    def _predict(self) -> tuple[np.ndarray, np.ndarray]:
        if self._prediction is None:
            judged = self.heldout or self.train[:1]
            self._prediction = prediction_error(self.model, torch.from_numpy(self.data.u[judged]), self.data.dt,
                                                self.substeps)
        return self._prediction

    @property
    def error(self) -> np.ndarray:
        """Relative L2 error per frame of rollouts from the first frame, averaged over the judged trajectories."""
        return self._predict()[0]

    @property
    def predicted(self) -> np.ndarray:
        """The rollout of trajectory :attr:`error_trajectory`, ``(T, C, *space)``."""
        return self._predict()[1]

    @property
    def failed(self) -> bool:
        """Whether the PDE explains less than :data:`EXPLAINED_FAIL` of ``u_t`` (or NaN), or its rollout from the
        data's first frame blows up (a non-finite prediction error): not a PDE of these data."""
        return not self.explained >= EXPLAINED_FAIL or self._blew_up

    @property
    def _blew_up(self) -> bool:
        return self.error is not None and not bool(np.all(np.isfinite(self.error)))

    @property
    def warning(self) -> str | None:
        """A sentence when the PDE explains less than :data:`EXPLAINED_WARNING` of ``u_t``, else ``None``; below
        :data:`EXPLAINED_FAIL` it lists the likely causes, misread axes first."""
        if self._blew_up:
            return (f"the recovered PDE (explaining {self.explained:.1%} of {self.explained_of} on the training "
                    f"data) blows up when integrated from the data's first frame: it is not a PDE of these data; "
                    f"likely causes: {causes(self)}")
        if self.explained >= EXPLAINED_WARNING:
            return None
        share = f"the recovered PDE explains only {self.explained:.1%} of {self.explained_of} on the training data"
        if self.failed:
            return f"{share} (below {EXPLAINED_FAIL:.0%}: it is not a PDE of these data); likely causes: {causes(self)}"
        return (f"{share} (u_t = 0 "
                f"explains 0%): these data may not follow a PDE of this library, or may be too noisy or too coarse "
                f"in time; check the data, or try another --library or --max-order")

    @property
    def explained_of(self) -> str:
        """What :attr:`explained` is a share of: ``u_t``, or its integrals against the weak form's test functions."""
        return "u_t" if self.settings.form != "weak" else "∫φ·u_t (weak form)"

    @property
    def options(self) -> dict:
        """The settings in effect as a dict (what ``pde.json`` records)."""
        return asdict(self.settings)

    @property
    def fields(self) -> np.ndarray:
        """Coefficient fields ``(C, J, *space)`` in physical units (constant fields for constant coefficients)."""
        with torch.no_grad():
            return self.model.fields().numpy()


def causes(result: Fit) -> str:
    """Why a fit may explain almost nothing, most likely first: misread axes (with what the swap would explain, for
    1-D data), wrong spacings, a library without the terms, noise."""
    from pdeconv.discover.axes import quick_share

    d = result.data
    n, t, c, *space = d.u.shape
    layout = ", ".join(f"{a} {k}" for a, k in zip(("time", *("z", "y", "x")[3 - d.space_dims:]), (t, *space)))
    swap = ""
    if d.space_dims == 1 and t >= 9 and space[0] >= 9:  # read the other way round, what would a quick fit explain?
        share = quick_share(np.swapaxes(d.u, 1, 3), d.dx, (d.dt,))
        if share == share:
            swap = f"; with time and x swapped a quick linear fit explains {share:.0%}"
    return (f"(1) misread axes: u was read as {layout} points (trajectories {n}, fields {c}){swap}; if time is "
            "another axis of the stored array, name the axes: --axes xt for an array stored (x, t) as PDE-FIND's "
            "usol (in an .npz also axes='xt' or coordinate vectors t, x; in Python Dataset.from_array(u, t=..., "
            "x=..., axes='xt')); (2) wrong dt or dx (u_t and the derivatives are divided by them); (3) a library "
            "without the right terms: --library nonlinear, products or polynomial, --max-order 4; (4) noise: "
            "--form weak")


# -------------------------------------------------------------------------------------------------- regression


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


def _normal_equations(
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
    solve_sparse(model, *_normal_equations(model, u, dt, weights), l1=l1, threshold=threshold)


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


def _windows(
    u: torch.Tensor, weights: torch.Tensor, steps: int, max_windows: int, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Start frames ``(B, C, *space)``, targets ``(B, steps, C, *space)``, their weights ``(B, steps, 1, *space)``."""
    N, T = u.shape[:2]
    starts = [(n, t) for n in range(N) for t in range(0, T - steps)]
    if len(starts) > max_windows:
        pick = np.sort(rng.choice(len(starts), size=max_windows, replace=False))
        starts = [starts[i] for i in pick]
    u0 = torch.stack([u[n, t] for n, t in starts])
    target = torch.stack([u[n, t + 1:t + 1 + steps] for n, t in starts])
    w = torch.stack([weights[n, t + 1:t + 1 + steps] for n, t in starts]).unsqueeze(2)
    return u0, target, w


def _rollout_loss(model: PolynomialPDE, u0, target, w, dt: float, substeps: int, smooth: int = 0) -> torch.Tensor:
    """Weighted squared rollout error over weighted squared motion ``‖u(t0 + k) − u(t0)‖²``, per field, averaged.

    With ``smooth`` > 1 the error is first blurred by the ``smooth``-point binomial filter along every space axis:
    noise in the start frames lives at grid scale, and matching it there would reward extra diffusion (biasing ν
    upwards).
    """
    pred = model.rollout(u0, target.shape[1], dt, substeps)[:, 1:]
    diff = pred - target
    if smooth > 1:  # the binomial filter along each space axis (in 2-D: stencil.gaussian, separably)
        taps = binomial(smooth, diff.dtype)
        for axis in range(3, diff.dim()):
            diff = convolve_along(diff, taps, axis, model.bc)
    err = (diff.pow(2) * w).sum(dim=_all_but_fields(diff))
    return (err / _motion(u0, target, w)).mean()


def _all_but_fields(t: torch.Tensor) -> tuple[int, ...]:  # (window, step, field, *space)
    return (0, 1, *range(3, t.dim()))


def _motion(u0: torch.Tensor, target: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Per field, the weighted squared motion ``Σ w·(u(t0 + k) − u(t0))²`` the rollout loss is relative to."""
    return ((target - u0.unsqueeze(1)).pow(2) * w).sum(dim=_all_but_fields(target)).clamp_min(1e-300)


def _noise_floor(u: torch.Tensor, u0, target, w, smooth: int) -> float:
    """The rollout loss (:func:`_rollout_loss`) that the noise of the targets alone sets, whatever the coefficients:
    the loss compares a prediction with noisy target frames whose noise it cannot predict, which adds
    ``σ² · (Σ taps²)^d`` per weighted sample after the ``smooth`` blur along the d space axes (σ² from
    :func:`noise_variance` of the training data ``u``), over the same weighted motion, averaged over fields. A
    lower bound (in expectation, up to the few coefficients a refit fits): noise carried from the start frames
    adds to it."""
    gain = float(binomial(smooth, u.dtype).pow(2).sum()) ** (target.dim() - 3) if smooth > 1 else 1.0
    weight = w.expand_as(target).sum(dim=_all_but_fields(target))
    return float((noise_variance(u) * gain * weight / _motion(u0, target, w)).mean())


#: the rollout refit stops once its last REFIT_PATIENCE L-BFGS iterations together lowered the loss by less than
#: REFIT_STALL of it, with the loss below REFIT_STALL_BELOW (the rollouts reproduce the motion to about 30%). On
#: noisy data the weak form's regression already sits at the noise's floor and the refit creeps (0.1% per
#: iteration on 1% noisy Kuramoto–Sivashinsky); a strong-form refit from a poor start crosses plateaus on its
#: way down — of an iteration or two below 0.1 (5% noisy PDE-FIND Burgers: 0.059, then 0.013), of many above it
#: (5% noisy Kuramoto–Sivashinsky: 0.46 for some twenty evaluations, then 0.013 with every coefficient within
#: 0.6%); on clean data an iteration removes a fifth or more of the truncation error
REFIT_STALL = 1e-2
REFIT_PATIENCE = 3
REFIT_STALL_BELOW = 0.1
#: ... or once the loss is below this: rollouts then match the data to a millionth of how far they move
#: (relative RMS 1e-6), past any accuracy a discovered PDE is read at; further digits cost time, not meaning
REFIT_FLOOR = 1e-12


def _lbfgs(model: PolynomialPDE, loss_fn, iterations: int, progress: bool, keep_below: float = 1.0) -> float:
    """Minimise ``loss_fn`` over the model's trainable parameters with L-BFGS-B (``scipy.optimize``).

    It minimises ``loss / loss₀`` (a sum of squares: L-BFGS's quadratic model fits it), so steps and stopping are
    relative to where the refit starts, the same at a loss of 1e-2 (noisy data) and 1e-12 (clean data); and it
    measures parameters from the start in units of ``σ = √loss₀`` (the relative size of the rollout error, so of
    the coefficient error it can remove), so L-BFGS-B's unit-length first step is a step of the size the fit is
    off. Stops after ``iterations`` iterations or ``2 · iterations`` evaluations, once the last
    :data:`REFIT_PATIENCE` iterations together lowered the loss by less than :data:`REFIT_STALL` of it (with the
    loss below :data:`REFIT_STALL_BELOW`, or at any loss when ``keep_below < 1``), or below :data:`REFIT_FLOOR`.
    Restores the start unless the end is finite and below ``keep_below`` times the starting loss; returns the loss
    kept.
    """
    from scipy.optimize import minimize  # here: half a second of import that only a refit needs

    params = [p for p in model.parameters() if p.requires_grad]
    start = copy.deepcopy(model.state_dict())
    x0 = torch.nn.utils.parameters_to_vector(params).detach().to(torch.float64)
    bar = tqdm(total=iterations * 2, desc="fit (rollout)", unit="eval", disable=None if progress else True, leave=False)
    failed = 1e30  # the objective at a trial step whose rollout blew up: the search steps back
    sigma, loss0 = 1.0, 1.0
    last_call: dict[bytes, tuple[float, np.ndarray]] = {}  # L-BFGS-B asks again only for the point just evaluated
    # a refit that must gain a factor (keep_below < 1: the weak form's, from a start that already averaged the
    # noise) stalls at any level: at that pace it cannot make its factor
    stall_level = REFIT_STALL_BELOW if keep_below >= 1 else float("inf")

    def at(z: np.ndarray) -> None:
        with torch.no_grad():
            x = x0 + sigma * torch.from_numpy(z)
            torch.nn.utils.vector_to_parameters(x.to(params[0].dtype), params)

    def objective(z: np.ndarray) -> tuple[float, np.ndarray]:
        key = z.tobytes()
        if key in last_call:
            return last_call[key]
        at(z)
        loss = loss_fn()
        bar.update(1)
        if not torch.isfinite(loss):
            value = failed, np.zeros_like(z)
        else:
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            flat = torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params)])
            bar.set_postfix(loss=f"{loss.item():.3e}")
            value = float(loss.detach()) / loss0, (sigma / loss0) * flat.detach().to(torch.float64).numpy()
        last_call.clear()
        last_call[key] = value
        return value

    history = [1.0]  # f after each iteration so far

    def stop(intermediate_result) -> None:  # after each iteration
        f = float(intermediate_result.fun)
        history.append(f)
        past = history[-1 - REFIT_PATIENCE] if len(history) > REFIT_PATIENCE else None
        stalled = past is not None and past - f < REFIT_STALL * past and f * loss0 < stall_level
        if f * loss0 <= REFIT_FLOOR or stalled:
            raise StopIteration

    z0 = np.zeros(x0.numel())
    first, gradient = objective(z0)
    if first >= failed or first == 0.0:  # nothing to start from, or nothing left to gain
        bar.close()
        model.load_state_dict(start)
        return float("inf") if first >= failed else 0.0
    loss0, sigma = first, math.sqrt(first)
    last_call[z0.tobytes()] = 1.0, gradient * sigma / loss0  # the same point in the scaled units
    last, z = 1.0, z0
    if loss0 > REFIT_FLOOR:
        # scipy's own tests off (its ftol is relative to max(|f|, 1), absolute below 1): stop() decides
        result = minimize(objective, z0, jac=True, method="L-BFGS-B", callback=stop, options=dict(
            maxiter=iterations, maxfun=iterations * 2, ftol=0.0, gtol=0.0, maxcor=20))
        last, z = float(result.fun), result.x
    bar.close()
    if not math.isfinite(last) or last > keep_below:  # (a failed trial's 1e30 is above any keep_below)
        model.load_state_dict(start)
        return loss0
    at(z)
    return last * loss0


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


def prediction_error(
    model: PolynomialPDE, u: torch.Tensor, dt: float, substeps: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Relative L2 error per frame of rollouts from each trajectory's first frame (averaged), and the first rollout
    ``(T, C, *space)``."""
    with torch.no_grad():
        pred = model.rollout(u[:, 0], u.shape[1] - 1, dt, substeps)
    err = (pred - u).flatten(2).norm(dim=-1) / u.flatten(2).norm(dim=-1).clamp_min(1e-300)
    return err.mean(0).numpy(), pred[0].numpy()


# -------------------------------------------------------------------------------------------------- fit


def _split(n: int, holdout: int | None) -> tuple[list[int], list[int]]:
    if holdout is None:
        holdout = max(1, n // 5) if n >= 2 else 0
    if not 0 <= holdout < n:
        raise PdeconvError(f"holdout must be between 0 and {n - 1} (the data hold {n} trajectories); got {holdout}")
    return list(range(n - holdout)), list(range(n - holdout, n))


def _still(u: torch.Tensor, dt: float) -> torch.Tensor:
    """Which fields do not move (RMS of ``u_t`` below 1e-12 of ``RMS(u) / dt``): their equation is ``u_t = 0``."""
    ut, _ = time_derivative(u, dt)
    s_u = ut.transpose(0, 2).flatten(1).pow(2).mean(dim=1).sqrt()
    return s_u <= 1e-12 * u.transpose(0, 2).flatten(1).pow(2).mean(dim=1).sqrt() / dt


def _scales(model: PolynomialPDE, u: torch.Tensor, dt: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``s_u / s_j`` (RMS of each field's ``u_t`` over the RMS of each term: ĉ is then a share of ``u_t``), and
    which fields do not move (``s_u`` below 1e-12 of ``RMS(u) / dt``): their equation is ``u_t = 0``."""
    ut, frames = time_derivative(u, dt)
    with torch.no_grad():
        ms = sum(model.features(u[n, frames]).transpose(0, 1).flatten(1).pow(2).mean(dim=1)
                 for n in range(u.shape[0])) / u.shape[0]
    s_u = ut.transpose(0, 2).flatten(1).pow(2).mean(dim=1).sqrt()
    still = s_u <= 1e-12 * u.transpose(0, 2).flatten(1).pow(2).mean(dim=1).sqrt() / dt
    return s_u.clamp_min(1e-300)[:, None] / ms.sqrt().clamp_min(1e-300)[None, :], still


def fit(
    data: Dataset,
    settings: FitSettings | None = None,
    *,
    threads: int | None = 1,
    progress: bool = True,
    **options,
) -> Fit:
    """Discover ``u_t = Σ c · term`` from ``data``; see the module docstring for the four stages.

    ``settings`` (:class:`FitSettings`), or its fields as keywords (``fit(data, library="nonlinear")``; keywords
    replace fields of ``settings`` when both are given). ``coefficients="variable"`` makes every coefficient a
    field of ``degree`` in a Fourier basis (periodic data) or a polynomial basis (other boundaries).

    ``threads``: torch intra-op threads while fitting (restored afterwards; ``None`` leaves them alone). The
    arrays are small (a few thousand points per field), where extra threads cost more in synchronisation than
    they gain, and on a busy machine far more: one thread is the default.
    """
    try:
        settings = replace(settings or FitSettings(), **options)
    except TypeError as e:  # an unknown keyword
        raise PdeconvError(f"fit(): {e}; the settings are the fields of FitSettings") from None
    with _threads(threads):
        return _fit_body(data, settings, progress)


@contextmanager
def _threads(n: int | None):
    previous = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


#: a weak regression whose sparse solution leaves at most this share of ‖∫φ_t u‖² unexplained is exact to its
#: quadrature (clean, resolved data: 1e-11 on PDE-FIND's Kuramoto–Sivashinsky file; 1% noise leaves ~1e-4): it is
#: the answer, with neither the strong form nor a rollout refit (which could only fit the time stepping's error)
WEAK_EXACT = 1e-8
#: auto: forms whose final rollout loss is within this factor of the best count as equally good
FORM_TIE = 1.05
#: auto: a form whose regression's rollout loss is this many times the other's is not refit
FORM_SKIP = 4.0


def _choose_form(fitted: dict) -> str:
    """Auto's choice: among the forms whose rollout loss is within :data:`FORM_TIE` of the lowest, the one with the
    fewest terms, then the weak form, then the lower loss. On noisy data the loss bottoms out at the noise for both
    forms: the strong form's refit reaches it with extra terms fitted to the noise, and of two equally good fits
    the weak one has averaged the noise where the strong one differentiated it. On clean data the losses differ by
    far more than 5%, or the two forms found the same terms and only the better start was refit."""
    losses = {f: loss if loss == loss else math.inf for f, (loss, *_) in fitted.items()}  # NaN: a rollout blew up
    best = min(losses.values())
    near = [f for f, loss in losses.items() if loss <= FORM_TIE * best]

    def terms(f: str) -> int:
        return int((fitted[f][1].mask > 0).any(-1).sum())

    return min(near, key=lambda f: (terms(f), f != "weak", losses[f]))


def _same_terms(a: PolynomialPDE, b: PolynomialPDE) -> bool:
    """Whether two fits kept the same terms in every equation."""
    return a.equations().keys() == b.equations().keys() and all(
        set(x) == set(y) for x, y in zip(a.equations().values(), b.equations().values(), strict=True))


def _weak_regression(model: PolynomialPDE, data: Dataset, train: list[int], u_train: torch.Tensor,
                     s: FitSettings) -> tuple[TestFunctions, float]:
    """The weak form's regression (:mod:`~pdeconv.discover.weak`) into ``model``; returns the test functions and
    the residual share ``‖target − F c‖² / ‖target‖²`` of the sparse solution."""
    space_support = s.support[0] if isinstance(s.support, tuple) and len(set(s.support)) == 1 else s.support
    if isinstance(space_support, tuple):
        raise PdeconvError(f"support must be one half-width for every space axis; got {s.support}")
    tests = TestFunctions.for_data(data.u[train], s.max_order, space_support, s.time_support, rows=s.test_functions,
                                   periodic=data.bc == "periodic")
    features, target = weak_system(model, u_train, data.dt, tests)
    rms = lambda a: a.pow(2).mean(0).sqrt().clamp_min(1e-300)  # noqa: E731
    with torch.no_grad():
        model.scale.copy_(rms(target)[:, None] / rms(features)[None, :])
    solve_sparse(model, (features.T @ features)[None], (features.T @ target).T[:, None], target.pow(2).sum(0),
                 l1=s.l1, threshold=s.threshold)
    with torch.no_grad():
        c = model.prepare()[0].to(features.dtype)  # (C, J)
        residual = float((target - features @ c.T).square().sum()) / max(float(target.square().sum()), 1e-300)
    return tests, residual


def _fit_body(data: Dataset, settings: FitSettings, progress: bool) -> Fit:
    t_start = time.perf_counter()
    N, T, C, *space = data.u.shape
    degree = settings.degree
    if settings.coefficients == "variable" and degree is None:
        degree = min(6, (min(space) - 1) // 2) if data.bc == "periodic" else 6
    if min(space) < settings.kernel_size:
        raise PdeconvError(
            f"the {'×'.join(map(str, space))} grid is smaller than the {settings.kernel_size}-point filters; "
            "lower --kernel-size"
        )
    need = settings.max_order + 1 + settings.max_order % 2  # the smallest odd filter holding that order
    if settings.kernel_size < need:
        raise PdeconvError(
            f"order-{settings.max_order} derivatives need filters of at least {need} points "
            f"(--kernel-size {need} or more); got {settings.kernel_size}"
        )
    train, heldout = _split(N, settings.holdout)
    # the settings in effect, recorded in the result: defaults resolved for this data
    s = settings = replace(settings, degree=degree, rollout=min(settings.rollout, T - 1), holdout=len(heldout))
    u = torch.from_numpy(data.u)
    u_train = u[train]
    model = PolynomialPDE(
        build_library(data.components, s.library, max_order=s.max_order, dims=data.space_dims), data.components,
        shape=tuple(space), spacing=data.spacing, bc=data.bc, kernel_size=s.kernel_size, degree=s.degree,
        learn_moments=s.learn_moments,
    )
    base = model
    still = _still(u_train, data.dt)

    @functools.cache  # what only the strong form and the rollouts need: not computed when the weak form is exact
    def trust() -> torch.Tensor:
        return resolution_weights(base, u_train, s.weighting)

    @functools.cache
    def windows() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return _windows(u_train, trust(), s.rollout, s.max_windows, np.random.default_rng(s.seed))

    forms = [s.form] if s.form != "auto" else ["strong"] if s.coefficients == "variable" else ["weak", "strong"]
    history: list[tuple[str, float]] = []
    fitted = {}
    exact = False
    for form in forms:
        if exact:  # the weak regression is exact to its quadrature: nothing left for the strong form to add
            history.append((f"sparse regression (strong form): not run, the weak form's residual share is below "
                            f"{WEAK_EXACT:g}", math.nan))
            continue
        candidate = copy.deepcopy(model)
        if form == "weak":
            try:
                tests, residual = _weak_regression(candidate, data, train, u_train, s)
            except ValueError:
                if s.form == "weak":
                    raise
                continue  # auto: data too short for test functions
            exact = residual <= WEAK_EXACT
        else:
            tests = None
            candidate.scale.copy_(_scales(candidate, u_train, data.dt)[0])
            sparse_regression(candidate, u_train, data.dt, trust(), l1=s.l1, threshold=s.threshold)
        with torch.no_grad():
            candidate.mask[still] = 0.0
        candidate = candidate.restricted()
        substeps = candidate.stable_substeps(u_train[:, 0], data.dt, minimum=s.substeps or 1)
        if exact:  # no rollout loss to compare: it is the answer
            history.append((f"sparse regression ({form} form): residual share {residual:.1e}, exact to its "
                            "quadrature", residual))
            fitted[form] = (residual, candidate, substeps, tests)
            continue
        with torch.no_grad():
            loss = float(_rollout_loss(candidate, *windows(), data.dt, substeps, s.smooth))
        history.append((f"sparse regression ({form} form)", loss))
        fitted[form] = (loss, candidate, substeps, tests)
    if len(fitted) == 2:
        finite = lambda f: fitted[f][0] if fitted[f][0] == fitted[f][0] else math.inf  # noqa: E731 (NaN: blew up)
        worse = max(fitted, key=finite)
        better = min(fitted, key=finite)
        if _same_terms(fitted[worse][1], fitted[better][1]) or finite(worse) >= FORM_SKIP * finite(better):
            # the same PDE up to its coefficients (one refit finds what both would), or a start so much worse
            # that its refit could only catch up by fitting noise: refit the better start only
            del fitted[worse]
    # only a weak refit (which must halve the loss) is measured against the floor
    floor = _noise_floor(u_train, *windows(), s.smooth) if s.iterations and "weak" in fitted and not exact else 0.0
    for form, (loss, candidate, substeps, tests) in list(fitted.items()):
        keep_below = WEAK_REFIT_GAIN if form == "weak" else 1.0
        if exact and s.iterations:
            history.append((f"rollout refit ({form} form): not run, the regression is exact to its quadrature "
                            f"(residual share ≤ {WEAK_EXACT:g})", loss))
        elif s.iterations and candidate.terms and keep_below < 1 and keep_below * loss < floor:
            # a refit that must gain a factor (the weak form's) from within that factor of the noise floor could
            # not make it: on noisy data the weak regression has already averaged the noise down to the floor
            history.append((f"rollout refit ({form} form): not run, {keep_below:g}× this loss is below the noise "
                            f"floor {floor:.3e}", loss))
        elif s.iterations and candidate.terms:
            objective = lambda m=candidate, k=substeps: _rollout_loss(m, *windows(), data.dt, k, s.smooth)  # noqa: E731
            loss = _lbfgs(candidate, objective, s.iterations, progress, keep_below)
            history.append((f"rollout refit ({form} form)", loss))
        fitted[form] = (loss, candidate, substeps, tests)
    form = _choose_form(fitted)
    _, model, steps_per_dt, tests = fitted[form]
    settings = s = replace(s, form=form)
    if tests is not None:
        settings = s = replace(s, support=tests.support[1:], time_support=tests.support[0])
    explained = explained_share(model, u_train, data.dt, tests)
    return Fit(
        model=model, data=data, train=train, heldout=heldout, equations=model.equations(),
        error_source="held-out" if heldout else "training", error_trajectory=(heldout or train[:1])[0],
        substeps=steps_per_dt, settings=settings, seconds=time.perf_counter() - t_start,
        history=history, explained=explained,
    )
