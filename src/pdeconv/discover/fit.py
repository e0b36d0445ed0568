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

from pdeconv.discover.dataset import Dataset
from pdeconv.discover.library import build_library
from pdeconv.discover.model import PolynomialPDE
from pdeconv.discover.refit import (
    _lbfgs,
    _noise_floor,
    _rollout_loss,
    _windows,
    prediction_error,
)
from pdeconv.discover.regression import (
    explained_share,
    normal_equations,
    resolution_weights,
    solve_sparse,
    sparse_regression,
    time_derivative,
)
from pdeconv.discover.weak import TestFunctions, noise_variance, weak_system
from pdeconv.errors import PdeconvError
from pdeconv.runtime import StageTimes

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
#: is taken to fit noise, one that gains more to remove truncation error (on clean data it gains orders of
#: magnitude). The factor 2 is a convention between those two; each fit's ``history`` shows the regression's and
#: the refit's losses (``python benchmarks/discover_vs_pysindy.py`` records them per case; ``--no-refit`` adds each
#: case fitted without the refit)
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
            raise PdeconvError("degree applies to variable coefficients only (`coefficients` variable)")
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
            raise PdeconvError("the weak form fits constant coefficients; use `form` strong for variable ones")
        if self.test_functions < 1:
            raise PdeconvError(f"test_functions must be ≥ 1; got {self.test_functions}")
        if self.form == "strong" and (self.support is not None or self.time_support is not None):
            raise PdeconvError("support and time_support set the weak form's test functions: use `form` weak or auto")


@dataclass
class Fit:
    """What :func:`fit` found: the model, its equations, the held-out prediction error and bookkeeping.

    ``settings`` are the ones in effect (defaults resolved for the data: ``degree``, ``rollout``, ``holdout``).
    ``error`` and ``predicted`` (a rollout of the learnt PDE over the whole record, which can cost more than the
    fit on long records: 5 000 integrating-factor RK4 steps on PDE-FIND's Kuramoto–Sivashinsky file) are computed
    when first read, and kept; ``seconds`` is the fit's time without them. ``stages``: seconds per stage of the
    fit (weak integrals, regressions, trust weights, rollout losses, noise floor, refit, ...), then
    ``prediction`` once the prediction is computed (and, from :func:`~pdeconv.discover.fit_file`, ``load`` and
    ``report``).
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
    stages: StageTimes = field(default_factory=StageTimes)
    _prediction: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False, compare=False)

    def _predict(self) -> tuple[np.ndarray, np.ndarray]:
        if self._prediction is None:
            judged = self.heldout or self.train[:1]
            with self.stages.stage("prediction"):
                self._prediction = prediction_error(self.model, torch.from_numpy(self.data.u[judged]),
                                                    self.data.dt, self.substeps)
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
                f"in time; check the data, or try another `library` or `max_order`")

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
            "another axis of the stored array, name the axes: `axes` xt for an array stored (x, t) as PDE-FIND's "
            "usol (in an .npz also an 'axes' string or coordinate vectors t, x; Dataset.from_array(u, t=..., "
            "x=..., axes='xt')); (2) wrong dt or dx (u_t and the derivatives are divided by them); (3) a library "
            "without the right terms: `library` nonlinear, products or polynomial, `max_order` 4; (4) noise: "
            "`form` weak")


# -------------------------------------------------------------------------------------------------- regression


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


def _scales(model: PolynomialPDE, u: torch.Tensor, dt: float) -> torch.Tensor:
    """``s_u / s_j``: the RMS of each field's ``u_t`` over the RMS of each term (ĉ is then a share of ``u_t``)."""
    ut, frames = time_derivative(u, dt)
    with torch.no_grad():
        ms = sum(model.features(u[n, frames]).transpose(0, 1).flatten(1).pow(2).mean(dim=1)
                 for n in range(u.shape[0])) / u.shape[0]
    s_u = ut.transpose(0, 2).flatten(1).pow(2).mean(dim=1).sqrt()
    return s_u.clamp_min(1e-300)[:, None] / ms.sqrt().clamp_min(1e-300)[None, :]


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
#: quadrature: it is the answer, with neither the strong form nor a rollout refit (which could only fit the time
#: stepping's error). A convention placed far below what noise leaves and above what quadrature leaves on clean,
#: resolved data (tests/test_discover_nd.py checks clean ``simulate("burgers-1d")`` falls below it)
WEAK_EXACT = 1e-8
#: ... and only if its coefficients move by at most this much (relative to the largest) when the test functions'
#: time half-width shrinks to three quarters: time is summed by the trapezoidal rule, whose error the residual
#: does not show (it biases target and features alike). A convention, an order of magnitude above what resolved
#: records give and far below what a 5-frame half-width gives; every fit's history records the change
#: (benchmarks/discover_vs_pysindy.py keeps the histories; tests/test_discover_nd.py checks a 21-frame record)
WEAK_CONVERGED = 1e-6
#: auto: forms whose final rollout loss is within this factor of the best count as equally good
FORM_TIE = 1.05
#: auto: a form whose regression's rollout loss is this many times the other's is not refit
FORM_SKIP = 4.0


@dataclass
class Candidate:
    """One form's fitted PDE: its rollout loss (a residual share when its regression is exact), the model, the
    sub-steps per frame its rollouts take, and its test functions (``None``: the strong form)."""

    loss: float
    model: PolynomialPDE
    substeps: int
    tests: TestFunctions | None

    def finite_loss(self) -> float:
        """The loss, with a NaN (a rollout that blew up) counted as infinitely bad."""
        return self.loss if self.loss == self.loss else math.inf


def _choose_form(fitted: dict[str, Candidate]) -> str:
    """Auto's choice: among the forms whose rollout loss is within :data:`FORM_TIE` of the lowest, the one with the
    fewest terms, then the weak form, then the lower loss. On noisy data the loss bottoms out at the noise for both
    forms: the strong form's refit reaches it with extra terms fitted to the noise, and of two equally good fits
    the weak one has averaged the noise where the strong one differentiated it. On clean data the losses differ by
    far more than 5%, or the two forms found the same terms and only the better start was refit."""
    losses = {f: c.finite_loss() for f, c in fitted.items()}
    best = min(losses.values())
    near = [f for f, loss in losses.items() if loss <= FORM_TIE * best]

    def terms(f: str) -> int:
        return int((fitted[f].model.mask > 0).any(-1).sum())

    return min(near, key=lambda f: (terms(f), f != "weak", losses[f]))


def _same_terms(a: PolynomialPDE, b: PolynomialPDE) -> bool:
    """Whether two fits kept the same terms in every equation."""
    return a.equations().keys() == b.equations().keys() and all(
        set(x) == set(y) for x, y in zip(a.equations().values(), b.equations().values(), strict=True))


def _time_quadrature_change(model: PolynomialPDE, fitted: PolynomialPDE, tests: TestFunctions, data: Dataset,
                            train: list[int], u_train: torch.Tensor, s: FitSettings, stages: StageTimes) -> float:
    """How far ``fitted``'s coefficients (a weak regression into a copy of ``model`` with ``tests``) move when the
    time half-width shrinks to three quarters, relative to the largest; ``inf`` when other terms survive or the
    half-width cannot shrink."""
    m = tests.support[0]
    smaller = (3 * m) // 4
    if smaller < 2:
        return math.inf
    check = copy.deepcopy(model)
    _weak_regression(check, data, train, u_train, replace(s, time_support=smaller), stages)
    a, b = fitted.equations(), check.equations()
    if not _same_terms(fitted, check):
        return math.inf
    largest = max((abs(c) for terms in a.values() for c in terms.values()), default=0.0)
    change = max((abs(c - b[e][t]) for e, terms in a.items() for t, c in terms.items()), default=0.0)
    return change / largest if largest > 0 else 0.0


def _weak_regression(model: PolynomialPDE, data: Dataset, train: list[int], u_train: torch.Tensor,
                     s: FitSettings, stages: StageTimes) -> tuple[TestFunctions, float]:
    """The weak form's regression (:mod:`~pdeconv.discover.weak`) into ``model``; returns the test functions and
    the residual share ``‖target − F c‖² / ‖target‖²`` of the sparse solution."""
    space_support = s.support[0] if isinstance(s.support, tuple) and len(set(s.support)) == 1 else s.support
    if isinstance(space_support, tuple):
        raise PdeconvError(f"support must be one half-width for every space axis; got {s.support}")
    with stages.stage("weak integrals"):
        tests = TestFunctions.for_data(data.u[train], s.max_order, space_support, s.time_support,
                                       rows=s.test_functions, periodic=data.bc == "periodic")
        features, target = weak_system(model, u_train, data.dt, tests)
    rms = lambda a: a.pow(2).mean(0).sqrt().clamp_min(1e-300)  # noqa: E731
    with stages.stage("weak regression"), torch.no_grad():
        model.scale.copy_(rms(target)[:, None] / rms(features)[None, :])
        solve_sparse(model, (features.T @ features)[None], (features.T @ target).T[:, None], target.pow(2).sum(0),
                     l1=s.l1, threshold=s.threshold)
    with torch.no_grad():
        c = model.prepare()[0].to(features.dtype)  # (C, J)
        residual = float((target - features @ c.T).square().sum()) / max(float(target.square().sum()), 1e-300)
    return tests, residual


def _fit_body(data: Dataset, settings: FitSettings, progress: bool) -> Fit:
    t_start = time.perf_counter()
    stages = StageTimes()
    N, T, C, *space = data.u.shape
    degree = settings.degree
    if settings.coefficients == "variable" and degree is None:
        degree = min(6, (min(space) - 1) // 2) if data.bc == "periodic" else 6
    if min(space) < settings.kernel_size:
        raise PdeconvError(
            f"the {'×'.join(map(str, space))} grid is smaller than the {settings.kernel_size}-point filters; "
            "lower `kernel_size`"
        )
    need = settings.max_order + 1 + settings.max_order % 2  # the smallest odd filter holding that order
    if settings.kernel_size < need:
        raise PdeconvError(
            f"order-{settings.max_order} derivatives need filters of at least {need} points "
            f"(`kernel_size` {need} or more); got {settings.kernel_size}"
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
        with stages.stage("trust weights"):
            return resolution_weights(base, u_train, s.weighting)

    @functools.cache
    def windows() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        weights = trust()
        with stages.stage("rollout windows"):
            return _windows(u_train, weights, s.rollout, s.max_windows, np.random.default_rng(s.seed))

    forms = [s.form] if s.form != "auto" else ["strong"] if s.coefficients == "variable" else ["weak", "strong"]
    history: list[tuple[str, float]] = []
    fitted: dict[str, Candidate] = {}
    exact = False
    for form in forms:
        if exact:  # the weak regression is exact to its quadrature: nothing left for the strong form to add
            history.append((f"sparse regression (strong form): not run, the weak form's residual share is below "
                            f"{WEAK_EXACT:g}", math.nan))
            continue
        candidate = copy.deepcopy(model)
        if form == "weak":
            try:
                tests, residual = _weak_regression(candidate, data, train, u_train, s, stages)
            except ValueError:
                if s.form == "weak":
                    raise
                continue  # auto: data too short for test functions
            exact = residual <= WEAK_EXACT
            if exact:  # the residual cannot show the time quadrature's error: shrink the time support and compare
                change = _time_quadrature_change(model, candidate, tests, data, train, u_train, s, stages)
                exact = change <= WEAK_CONVERGED
                if not exact:
                    history.append((f"sparse regression (weak form): residual share {residual:.1e}, but the "
                                    f"coefficients move by {change:.1e} when the time support shrinks from "
                                    f"{tests.support[0]} to {(3 * tests.support[0]) // 4} frames: not exact",
                                    math.nan))
        else:
            tests, weights = None, trust()
            with stages.stage("strong filters and library"):
                candidate.scale.copy_(_scales(candidate, u_train, data.dt))
                system = normal_equations(candidate, u_train, data.dt, weights)
            with stages.stage("strong regression"):
                solve_sparse(candidate, *system, l1=s.l1, threshold=s.threshold)
        with torch.no_grad():
            candidate.mask[still] = 0.0
        candidate = candidate.restricted()
        substeps = candidate.stable_substeps(u_train[:, 0], data.dt, minimum=s.substeps or 1)
        if exact:  # no rollout loss to compare: it is the answer
            history.append((f"sparse regression ({form} form): residual share {residual:.1e}, exact to its "
                            f"quadrature (the coefficients move by {change:.1e} when the time support shrinks to "
                            f"{(3 * tests.support[0]) // 4} frames)", residual))
            fitted[form] = Candidate(residual, candidate, substeps, tests)
            continue
        chosen = windows()
        with stages.stage("rollout losses"), torch.no_grad():
            loss = float(_rollout_loss(candidate, *chosen, data.dt, substeps, s.smooth))
        history.append((f"sparse regression ({form} form)", loss))
        fitted[form] = Candidate(loss, candidate, substeps, tests)
    if len(fitted) == 2:
        worse = max(fitted, key=lambda f: fitted[f].finite_loss())
        better = min(fitted, key=lambda f: fitted[f].finite_loss())
        if (_same_terms(fitted[worse].model, fitted[better].model)
                or fitted[worse].finite_loss() >= FORM_SKIP * fitted[better].finite_loss()):
            # the same PDE up to its coefficients (one refit finds what both would), or a start so much worse
            # that its refit could only catch up by fitting noise: refit the better start only
            del fitted[worse]
    # only a weak refit (which must halve the loss) is measured against the floor
    floor = 0.0
    if s.iterations and "weak" in fitted and not exact:
        chosen = windows()
        with stages.stage("noise floor"):
            floor = _noise_floor(u_train, *chosen, s.smooth)
    for form, fitted_form in list(fitted.items()):
        loss, candidate, substeps = fitted_form.loss, fitted_form.model, fitted_form.substeps
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
            with stages.stage("rollout refit"):
                loss = _lbfgs(candidate, objective, s.iterations, progress, keep_below)
            history.append((f"rollout refit ({form} form)", loss))
        fitted_form.loss = loss
    form = _choose_form(fitted)
    model, steps_per_dt, tests = fitted[form].model, fitted[form].substeps, fitted[form].tests
    settings = s = replace(s, form=form)
    if tests is not None:
        settings = s = replace(s, support=tests.support[1:], time_support=tests.support[0])
    with stages.stage("explained share"):
        explained = explained_share(model, u_train, data.dt, tests)
    return Fit(
        model=model, data=data, train=train, heldout=heldout, equations=model.equations(),
        error_source="held-out" if heldout else "training", error_trajectory=(heldout or train[:1])[0],
        substeps=steps_per_dt, settings=settings, seconds=time.perf_counter() - t_start,
        history=history, explained=explained, stages=stages,
    )
