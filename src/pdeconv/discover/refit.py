"""The rollout refit of a fit (stage 4 of :mod:`pdeconv.discover.fit`): windows of observed frames, the rollout
loss relative to how far the data move (after a binomial blur), the noise floor that decides whether a refit can
gain, L-BFGS with its stall rules, and the long-horizon prediction error."""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
from tqdm.auto import tqdm

from pdeconv.boundary import convolve_along
from pdeconv.discover.model import PolynomialPDE
from pdeconv.discover.weak import noise_variance
from pdeconv.stencil import binomial


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
#: noisy data the weak form's regression already sits at the noise's floor and the refit creeps; a strong-form
#: refit from a poor start crosses plateaus on its way down, short ones below 0.1, long ones above it; on clean
#: data an iteration removes a fifth or more of the truncation error. The three numbers are conventions chosen
#: from such loss traces, not tuned optima: each fit's ``history`` holds the losses before and after its refit
#: (recorded per case by ``python benchmarks/discover_vs_pysindy.py``), and tests/test_discover.py checks the rule
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


def prediction_error(
    model: PolynomialPDE, u: torch.Tensor, dt: float, substeps: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Relative L2 error per frame of rollouts from each trajectory's first frame (averaged), and the first rollout
    ``(T, C, *space)``."""
    with torch.no_grad():
        pred = model.rollout(u[:, 0], u.shape[1] - 1, dt, substeps)
    err = (pred - u).flatten(2).norm(dim=-1) / u.flatten(2).norm(dim=-1).clamp_min(1e-300)
    return err.mean(0).numpy(), pred[0].numpy()
