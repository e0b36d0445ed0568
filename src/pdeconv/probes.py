"""Mechanism probes: small synthetic tasks that test a prediction of the essay directly (``pdeconv probe NAME``).

Each probe states its prediction (:attr:`Probe.prediction`, committed before any run) and compares two or more
*arms* (model variants) on generated data, seed by seed: seed s gives every arm the same data and, where the
arms share a layer, the same initial weights. The report gives each arm's metric over seeds and the paired
difference between arms with its 95% CI (:func:`pdeconv.experiment.stats.paired`), then says whether the
prediction held.

* ``rotation``: learn ``u ↦ u rotated by 22.5° about the image centre`` with a constant-resolution PDE net of 8
  layers ``u ← u + Σ_k a_k(x, y)·(K_k ⋆ u)`` (two learned 3×3 operators per layer). Arm ``constant``: the
  fields a_k are constants (degree 0); arm ``variable``: degree-2 polynomials. Metric: test error relative to
  doing nothing, ``‖f(u) − R u‖² / ‖u − R u‖²``; and, for the variable arm, how well the learned first-order
  coefficients ``(c_x, c_y)`` (summed over layers) align with the rotation's velocity field.
* ``transport``: learn a shift by k pixels (periodic) with L composed 3×3 convolutions, on white-noise images,
  for k = 1…3 and L = 1…4, 4 fits from random kernels per cell. Metric: the best fit's test error relative to
  the target's energy (and the median fit's: how often one fit finds the shift).
* ``truncation`` (:func:`truncation`, on trained runs): replace every 3×3 kernel by its part of total order
  ≤ k (:func:`pdeconv.stencil.truncate`), recalibrate BatchNorm on training images, and measure test accuracy
  for k = 4 (unchanged), 3, 2, 1.
* ``boundary``: classify the orientation of a short bar cut by the image border (only its last 2–3 pixels are
  inside), on a noisy background, with a 4-layer CNN whose convolutions pad by zeros (``dirichlet``) or by
  reflection (``neumann``). Metric: test accuracy.

Conventions: images (N, 1, H, W), x along the width (pointing right), y down the rows; coordinates of the
fields pixel-centred in [−1, 1] (:func:`pdeconv.layers.monomials`).
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pdeconv import _checkpoint, stencil
from pdeconv.boundary import set_boundary
from pdeconv.experiment.stats import paired, summarize
from pdeconv.layers import VariableCoefficients
from pdeconv.layers.varcoef import monomials
from pdeconv.runtime import check_out_dir

__all__ = ["PROBES", "TRUNCATION_PREDICTION", "Probe", "ProbeResult", "plot_probe", "run_probe", "truncate_model",
           "truncation"]


@dataclass(frozen=True)
class Probe:
    """A probe: the essay's sentence it tests, its prediction (written before it is run), its arms, and
    ``trial(seed, quick) → {arm: {metric: value}}`` (one seed of every arm)."""

    name: str
    essay: str
    prediction: str
    arms: tuple[str, ...]
    metric: str  # the metric the arms are compared on
    higher_is_better: bool
    trial: Callable[[int, bool], dict[str, dict[str, float]]]
    verdict: Callable[[dict[str, list[float]], dict[str, dict[str, list[float]]]], tuple[bool, str]]


@dataclass
class ProbeResult:
    """What :func:`run_probe` measured and wrote."""

    probe: str
    seeds: list[int]
    metrics: dict[str, dict[str, list[float]]]  # arm → metric → one value per seed
    held: bool
    verdict: str
    files: list[Path] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------- rotation

_ROTATION_ANGLE = math.pi / 8  # 22.5°


def _blobs(n: int, size: int, g: torch.Generator) -> Tensor:
    """n images (n, 1, size, size) of 3–6 Gaussian blobs inside the central disc of radius 0.55 (so a rotation
    keeps them on the grid), coordinates pixel-centred in [−1, 1]."""
    c = (2 * torch.arange(size) + 1) / size - 1
    y, x = c[:, None], c[None, :]
    out = torch.zeros(n, 1, size, size)
    for i in range(n):
        for _ in range(int(torch.randint(3, 7, (1,), generator=g))):
            r, phi = 0.55 * float(torch.rand(1, generator=g)) ** 0.5, 2 * math.pi * float(torch.rand(1, generator=g))
            width = 0.08 + 0.12 * float(torch.rand(1, generator=g))
            cx, cy = r * math.cos(phi), r * math.sin(phi)
            out[i, 0] += torch.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * width**2))
    return out


def _rotate(u: Tensor, angle: float) -> Tensor:
    """u rotated by ``angle`` about the centre as the flow v = (−y, x) carries it (bilinear resampling)."""
    cos, sin = math.cos(angle), math.sin(angle)
    theta = torch.tensor([[[cos, sin, 0.0], [-sin, cos, 0.0]]], dtype=u.dtype).expand(u.shape[0], 2, 3)
    grid = F.affine_grid(theta, list(u.shape), align_corners=False)
    return F.grid_sample(u, grid, align_corners=False)


class _PDELayer(nn.Module):
    """``u ← u + Σ_k a_k(x, y)·(K_k ⋆ u)``: ``operators`` learned 3×3 kernels, each times its field of ``degree``."""

    def __init__(self, operators: int, degree: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, operators, 3, padding=1, bias=False)
        nn.init.normal_(self.conv.weight, std=0.01)
        self.fields = VariableCoefficients(operators, degree)  # a ≡ 1 at the start

    def forward(self, u: Tensor) -> Tensor:
        return u + self.fields(self.conv(u)).sum(1, keepdim=True)


def _fit(model: nn.Module, batch: Callable[[], tuple[Tensor, Tensor]], steps: int, lr: float) -> None:
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    for _ in range(steps):
        x, y = batch()
        loss = F.mse_loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()


def _velocity_alignment(model: nn.Sequential, size: int) -> float:
    """Cosine similarity, over the disc of radius 0.6, between the learned first-order coefficient fields
    ``(c_x, c_y) = Σ_layers Σ_k a_k(x, y)·(∂x, ∂y coefficient of K_k)`` and the rotation's ``(y, −x)``."""
    cx, cy = torch.zeros(size, size), torch.zeros(size, size)
    with torch.no_grad():
        for layer in model:
            moments = stencil.moments(layer.conv.weight[:, 0].double())  # (operators, 3, 3): M[a, b] of ∂y^a ∂x^b
            fields = layer.fields.field(size, size, dtype=torch.float64)[0]  # (operators, H, W)
            cx += (fields * moments[:, 0, 1, None, None]).sum(0).float()
            cy += (fields * moments[:, 1, 0, None, None]).sum(0).float()
    grid = monomials(size, size, 1, dtype=torch.float32)[0]  # 1, x, y
    x, y = grid[1], grid[2]
    inside = x**2 + y**2 <= 0.36
    learned = torch.stack([cx[inside], cy[inside]]).flatten()
    true = torch.stack([y[inside], -x[inside]]).flatten()
    return float(learned @ true / (learned.norm() * true.norm() + 1e-12))


def _rotation_trial(seed: int, quick: bool) -> dict[str, dict[str, float]]:
    size, layers, steps = 32, 8, (120 if quick else 600)
    test = _blobs(64, size, torch.Generator().manual_seed(10_000 + seed))
    target = _rotate(test, _ROTATION_ANGLE)
    result = {}
    for arm, degree in (("constant", 0), ("variable", 2)):
        g = torch.Generator().manual_seed(seed)  # the same training images for both arms
        torch.manual_seed(seed)  # the same kernels (the fields start at a ≡ 1 in both)
        model = nn.Sequential(*[_PDELayer(2, degree) for _ in range(layers)])

        def batch(g=g):
            u = _blobs(16, size, g)
            return u, _rotate(u, _ROTATION_ANGLE)

        _fit(model, batch, steps, lr=1e-2)
        with torch.no_grad():
            error = float((model(test) - target).square().sum() / (test - target).square().sum())
        result[arm] = {"relative_error": error, "velocity_alignment": _velocity_alignment(model, size)}
    return result


def _rotation_verdict(values, metrics) -> tuple[bool, str]:
    const, var = statistics.fmean(values["constant"]), statistics.fmean(values["variable"])
    align = statistics.fmean(metrics["variable"]["velocity_alignment"])
    held = bool(const > 0.5 and var < 0.2 and align > 0.9)
    return held, (f"constant coefficients: relative error {const:.3f} (predicted > 0.5); degree-2 fields: "
                  f"{var:.3f} (predicted < 0.2); their learned (c_x, c_y) align with (y, −x) at cosine {align:.3f} "
                  f"(predicted > 0.9)")


# --------------------------------------------------------------------------------------------- transport

_SHIFTS, _DEPTHS = (1, 2, 3), (1, 2, 3, 4)


def _transport_trial(seed: int, quick: bool) -> dict[str, dict[str, float]]:
    """Each (k, L) cell: ``restarts`` fits from random kernels; the best one's test error (can it be learned?)
    and the median's (how often one fit finds it: products of kernels have poor local minima)."""
    size, steps, restarts = 16, (120 if quick else 400), (2 if quick else 4)
    test = torch.randn(32, 1, size, size, generator=torch.Generator().manual_seed(10_000 + seed))
    result: dict[str, dict[str, float]] = {}
    for k in _SHIFTS:
        target = torch.roll(test, k, dims=-1)
        for depth in _DEPTHS:
            errors = []
            for restart in range(restarts):
                g = torch.Generator().manual_seed(seed)  # the same training images in every cell and restart
                torch.manual_seed(1000 * seed + restart)
                convs = [nn.Conv2d(1, 1, 3, padding=1, bias=False, padding_mode="circular") for _ in range(depth)]
                for conv in convs:
                    nn.init.normal_(conv.weight, std=0.4)
                model = nn.Sequential(*convs)

                def batch(g=g, k=k):
                    u = torch.randn(8, 1, size, size, generator=g)
                    return u, torch.roll(u, k, dims=-1)

                _fit(model, batch, steps, lr=0.03)
                with torch.no_grad():
                    errors.append(float((model(test) - target).square().sum() / target.square().sum()))
            result[f"shift {k}, {depth} layers"] = {"relative_error": min(errors),
                                                    "median_single_fit": statistics.median(errors)}
    return result


def _cell(arm: str) -> tuple[int, int]:
    """(k, L) of a transport arm ``"shift k, L layers"``."""
    k, depth = (int(s.split()[0]) for s in arm.replace("shift ", "").split(", "))
    return k, depth


def _transport_verdict(values, metrics) -> tuple[bool, str]:
    reach = {arm: statistics.fmean(v) for arm, v in values.items()}
    ok = []
    for arm, error in reach.items():
        k, depth = _cell(arm)
        ok.append(error < 1e-2 if depth >= k else error > 0.95)
    worst_in = max((e for a, e in reach.items() if _reaches(a)), default=float("nan"))
    best_out = min((e for a, e in reach.items() if not _reaches(a)), default=float("nan"))
    return all(ok), (f"best of the restarts: largest error where L ≥ k {worst_in:.2e} (predicted < 1e-2); "
                     f"smallest where L < k {best_out:.3f} (predicted > 0.95)")


def _reaches(arm: str) -> bool:
    k, depth = _cell(arm)
    return depth >= k


# ---------------------------------------------------------------------------------------------- boundary

_BAR = 7  # pixels of a bar; 2–3 of them inside the image


def _bars(n: int, size: int, g: torch.Generator, noise: float = 0.3) -> tuple[Tensor, Tensor]:
    """Images of Gaussian noise (std ``noise``) with a bar (+1.5) of one of 4 orientations (labels 0–3: 0°,
    45°, 90°, 135°) that leaves the image through a random border it crosses, with only its last 2 or 3 pixels
    inside; labels (n,)."""
    directions = ((0, 1), (1, 1), (1, 0), (1, -1))  # (dy, dx) along the bar, per class
    normals = ((-1, 0), (1, 0), (0, -1), (0, 1))  # outward normals of the top, bottom, left, right borders
    images = noise * torch.randn(n, 1, size, size, generator=g)
    labels = torch.randint(0, 4, (n,), generator=g)
    for i in range(n):
        dy, dx = directions[int(labels[i])]
        crossing = [e for e, (ny, nx) in enumerate(normals) if dy * ny + dx * nx != 0]
        edge = crossing[int(torch.randint(0, len(crossing), (1,), generator=g))]
        ny, nx = normals[edge]
        sign = 1 if dy * ny + dx * nx > 0 else -1  # sign·(dy, dx) points out through the chosen border
        depth = int(torch.randint(1, 3, (1,), generator=g))  # the innermost pixel's distance from the border
        pos = int(torch.randint(4, size - 4, (1,), generator=g))
        y0 = {0: depth, 1: size - 1 - depth}.get(edge, pos)
        x0 = {2: depth, 3: size - 1 - depth}.get(edge, pos)
        for t in range(_BAR):  # depth + 1 pixels inside, the rest beyond the border
            y, x = y0 + t * sign * dy, x0 + t * sign * dx
            if 0 <= y < size and 0 <= x < size:
                images[i, 0, y, x] += 1.5
    return images, labels


def _boundary_model(bc: str) -> nn.Module:
    layers: list[nn.Module] = []
    channels = 1
    for _ in range(4):
        layers += [nn.Conv2d(channels, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU()]
        channels = 16
    model = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4))
    set_boundary(model, bc)
    return model


def _boundary_trial(seed: int, quick: bool) -> dict[str, dict[str, float]]:
    size, n_train, epochs = 24, (800 if quick else 3000), (2 if quick else 6)
    train_x, train_y = _bars(n_train, size, torch.Generator().manual_seed(seed))
    test_x, test_y = _bars(1000, size, torch.Generator().manual_seed(10_000 + seed))
    result = {}
    for arm in ("dirichlet", "neumann"):
        torch.manual_seed(seed)  # the same initial weights and the same batches in both arms
        model = _boundary_model(arm)
        optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
        order = torch.Generator().manual_seed(seed)
        model.train()
        for _ in range(epochs):
            for idx in torch.randperm(n_train, generator=order).split(64):
                loss = F.cross_entropy(model(train_x[idx]), train_y[idx])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        model.eval()
        with torch.no_grad():
            accuracy = float((model(test_x).argmax(1) == test_y).float().mean())
        result[arm] = {"test_accuracy": accuracy}
    return result


def _boundary_verdict(values, metrics) -> tuple[bool, str]:
    c = paired(dict(enumerate(values["neumann"])), dict(enumerate(values["dirichlet"])))
    held = bool(c.ci is not None and c.ci[0] > 0)
    interval = "" if c.ci is None else f", 95% CI [{100 * c.ci[0]:+.2f}, {100 * c.ci[1]:+.2f}]"
    if c.ci is not None and c.ci[0] <= 0 <= c.ci[1]:
        interval += ": the interval includes 0, so not resolved either way at this many seeds"
    return held, f"neumann − dirichlet test accuracy: {100 * c.mean:+.2f} points{interval} (predicted > 0)"


PROBES: dict[str, Probe] = {
    "rotation": Probe(
        "rotation",
        "variable coefficients … enable the ConvNet to learn to rotate and scale the image",
        "A constant-coefficient PDE net is translation-equivariant and cannot rotate about a fixed centre (only "
        "the borders break the symmetry): its test error stays above 0.5 of doing nothing. With degree-2 "
        "coefficient fields the same net learns the rotation: error below 0.2, and its learned first-order "
        "coefficients align with the rotation's velocity field (y, −x) at cosine above 0.9.",
        ("constant", "variable"), "relative_error", False, _rotation_trial, _rotation_verdict,
    ),
    "transport": Probe(
        "transport",
        "compounding Sobel can shift the image … at a rate of one pixel per layer",
        "L composed 3×3 convolutions see k pixels away only if L ≥ k: a shift by k pixels of white noise is "
        "learned (the best of 4 fits from random kernels reaches a test error below 1e-2) when L ≥ k and not at "
        "all (error above 0.95: the noise beyond reach is unpredictable) when L < k.",
        tuple(f"shift {k}, {depth} layers" for k in _SHIFTS for depth in _DEPTHS), "relative_error", False,
        _transport_trial, _transport_verdict,
    ),
    "boundary": Probe(
        "boundary",
        "Neumann … could make traveling waves bounce back and thereby retain more information",
        "When the answer lies in pixels at the border, reflect padding (Neumann) keeps more of them than zero "
        "padding (Dirichlet): a CNN classifying bars cut by the border is more accurate with Neumann padding "
        "(paired difference above 0, its 95% CI excluding 0).",
        ("dirichlet", "neumann"), "test_accuracy", True, _boundary_trial, _boundary_verdict,
    ),
}


# -------------------------------------------------------------------------------------------- truncation

TRUNCATION_PREDICTION = (
    "The essay's first sentence: a 3×3 convolution is a differential operator of order ≤ 2. If trained networks "
    "used their kernels as such, truncating every 3×3 kernel to its moments of total order ≤ 2 would leave test "
    "accuracy within 1 point of the untruncated network (both after BatchNorm recalibration). (A single earlier "
    "try on one fast-preset ResNet-20 lost 41 points at order ≤ 2, so we expect the prediction to fail for free "
    "kernels; the order2 variant, constrained to order ≤ 2 in training, cannot lose anything at k ≥ 2.)"
)


def truncate_model(model: nn.Module, max_order: int) -> int:
    """Truncate (in place) every 3×3 kernel of ``model`` to total order ≤ ``max_order``: the weights of 3×3
    ``nn.Conv2d`` layers (any groups) and the depthwise kernels of ``DifferentialConv2d`` (free kernels, or the
    coefficients of a constrained one). Returns the number of layers changed."""
    from pdeconv.layers import DifferentialConv2d
    from pdeconv.stencil import multi_indices

    count = 0
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, DifferentialConv2d) and module.order is not None:
                orders = torch.tensor([a + b for a, b in multi_indices(module.order, size=3)])
                module.coefficients[:, orders > max_order] = 0
                count += 1
            elif isinstance(module, (nn.Conv2d, DifferentialConv2d)) and tuple(module.weight.shape[-2:]) == (3, 3):
                module.weight.copy_(stencil.truncate(module.weight, max_order))
                count += 1
    return count


def _recalibrate(model: nn.Module, batches) -> None:
    """BatchNorm running statistics recomputed (cumulative average) over ``batches`` of training images."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    with torch.no_grad():
        for x in batches:
            model(x)
    model.eval()


def truncation(runs: list[str | Path], *, orders: tuple[int, ...] = (4, 3, 2, 1), calibration: int = 2048,
               out: str | Path = "runs/probe-truncation", data_dir: str | None = None,
               progress: bool = True) -> ProbeResult:
    """The truncation probe on trained runs (``pdeconv train`` run directories, several seeds of one or more
    variants): test accuracy after truncating every 3×3 kernel to order ≤ k, for each k in ``orders``, with
    BatchNorm recalibrated on ``calibration`` training images each time (k = 4 too, so every k is compared
    alike). Arms are the runs' variants; the report gives each k's accuracy and its paired drop from k = 4."""
    import copy

    from tqdm import tqdm

    from pdeconv import data, engine
    from pdeconv.run import model_from_run

    if not runs:
        raise ValueError("give the run directories to truncate, e.g. --runs results/store-fast/baseline/seed*")
    metrics: dict[str, dict[str, list[float]]] = {}
    seeds: dict[str, list[int]] = {}
    cache: dict[Any, Any] = {}
    for path in tqdm(runs, desc="probe truncation", disable=None if progress else True, unit="run"):
        config = engine.load_checkpoint(Path(path) / engine.CHECKPOINT)["config"]
        key = (config["dataset"], data_dir or config.get("data_dir"))
        if key not in cache:
            train, test, _ = data.build_loaders(config["dataset"], data_dir=key[1], batch_size=64, seed=0)
            cache[key] = ([x for x, _ in zip((x for x, _ in train), range(max(1, calibration // 64)))], test)
        calibrate, test = cache[key]
        trained = model_from_run(path)
        variant = config["variant"]
        seeds.setdefault(variant, []).append(int(config["seed"]))
        for k in orders:
            model = copy.deepcopy(trained)
            truncate_model(model, k)
            _recalibrate(model, calibrate)
            accuracy = engine.evaluate(model, test, tta_flip=bool(config.get("tta_flip")))["test_acc"]
            metrics.setdefault(variant, {}).setdefault(f"order ≤ {k}", []).append(accuracy)
    verdicts, held = [], True
    for variant, m in metrics.items():
        full, two = m.get(f"order ≤ {max(orders)}"), m.get("order ≤ 2")
        if full and two:
            drop = 100 * statistics.fmean(f - t for f, t in zip(full, two))
            held &= drop < 1.0
            verdicts.append(f"{variant}: {drop:.2f} points lost at order ≤ 2 (predicted < 1)")
    verdict = "; ".join(verdicts)
    probe = Probe("truncation", "the 3×3 conv can be seen as a differential operator (of order ≤ 2)",
                  TRUNCATION_PREDICTION, tuple(metrics), f"order ≤ {max(orders)}", True,
                  lambda seed, quick: {}, lambda values, metrics_: (held, verdict))
    files = _write_truncation(Path(out), probe, seeds, metrics, held, verdict, [str(r) for r in runs])
    return ProbeResult("truncation", sorted({s for v in seeds.values() for s in v}), metrics, held, verdict, files)


def _write_truncation(out: Path, probe: Probe, seeds: dict[str, list[int]], metrics: dict[str, dict[str, list[float]]],
                      held: bool, verdict: str, runs: list[str]) -> list[Path]:
    from pdeconv.runtime import code_revision, cpu_description

    out.mkdir(parents=True, exist_ok=True)
    record = {"probe": "truncation", "essay": probe.essay, "prediction": probe.prediction, "runs": runs,
              "seeds": seeds, "metrics": metrics, "held": held, "verdict": verdict, "machine": cpu_description(),
              "threads": torch.get_num_threads(), "code": code_revision(), "torch": torch.__version__}
    keys = list(next(iter(metrics.values())))
    csv = (["variant", "seed", *keys], [[v, s, *(f"{m[k][i]:.6g}" for k in keys)]
                                        for v, m in metrics.items() for i, s in enumerate(seeds[v])])
    lines = ["| variant | seeds | " + " | ".join(f"{k}: acc % (Δ vs {keys[0]}, 95% CI)" for k in keys) + " |",
             "|:--|--:|" + "--:|" * len(keys)]
    for v, m in metrics.items():
        cells = []
        for k in keys:
            s = summarize(m[k])
            if k == keys[0]:
                cells.append(f"{100 * s.mean:.2f}")
                continue
            c = paired(dict(enumerate(m[k])), dict(enumerate(m[keys[0]])))
            ci = "" if c.ci is None else f", [{100 * c.ci[0]:+.2f}, {100 * c.ci[1]:+.2f}]"
            cells.append(f"{100 * s.mean:.2f} ({100 * c.mean:+.2f}{ci})")
        lines.append(f"| {v} | {len(seeds[v])} | " + " | ".join(cells) + " |")
    how = (f"Runs: {', '.join(f'`{r}`' for r in runs)}. Every 3×3 kernel truncated to total order ≤ k "
           f"(`pdeconv.stencil.truncate`), BatchNorm recalibrated on training images each time; test accuracy on the "
           f"full test set (with the runs' flip TTA).")
    return _save(out, probe, record, csv, how, lines)


def run_probe(name: str, *, seeds: int = 5, out: str | Path | None = None, quick: bool = False,
              progress: bool = True) -> ProbeResult:
    """Run probe ``name`` over seeds 0…seeds−1 and write ``probe.json``, ``results.csv`` and ``report.md`` to
    ``out`` (default ``runs/probe-NAME``). ``quick``: fewer training steps (a smoke test, not a result)."""
    if name not in PROBES:
        raise ValueError(f"unknown probe {name!r}; valid ones: {', '.join(PROBES)}")
    if seeds < 2:
        raise ValueError(f"--seeds must be at least 2 (the report pairs seeds); got {seeds}")
    probe = PROBES[name]
    out = Path(out or f"runs/probe-{name}")
    check_out_dir(out)
    metrics: dict[str, dict[str, list[float]]] = {arm: {} for arm in probe.arms}
    from tqdm import tqdm

    for seed in tqdm(range(seeds), desc=f"probe {name}", disable=None if progress else True, unit="seed"):
        with torch.random.fork_rng(devices=[]):
            for arm, values in probe.trial(seed, quick).items():
                for key, value in values.items():
                    metrics[arm].setdefault(key, []).append(value)
    values = {arm: metrics[arm][probe.metric] for arm in probe.arms}
    held, verdict = probe.verdict(values, metrics)
    files = _write(out, probe, list(range(seeds)), metrics, held, verdict, quick)
    return ProbeResult(name, list(range(seeds)), metrics, held, verdict, files)


def _write(out: Path, probe: Probe, seeds: list[int], metrics: dict[str, dict[str, list[float]]], held: bool,
           verdict: str, quick: bool) -> list[Path]:
    from pdeconv.runtime import code_revision, cpu_description

    out.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {"probe": probe.name, "essay": probe.essay, "prediction": probe.prediction,
                              "seeds": seeds, "quick": quick, "metrics": metrics, "held": held, "verdict": verdict,
                              "machine": cpu_description(), "threads": torch.get_num_threads(),
                              "code": code_revision(), "torch": torch.__version__}
    csv = probe_csv(metrics, seeds)
    first = probe.arms[0]
    lines = [f"| arm | {probe.metric} (mean ± std over {len(seeds)} seeds) | 95% CI | Δ vs {first} (paired) | "
             "95% CI of Δ |", "|:--|--:|--:|--:|--:|"]
    for arm in probe.arms:
        v = metrics[arm][probe.metric]
        s = summarize(v)
        ci = "–" if s.ci is None else f"[{s.ci[0]:.4g}, {s.ci[1]:.4g}]"
        if arm == first:
            delta = dci = "–"
        else:
            c = paired(dict(zip(seeds, v)), dict(zip(seeds, metrics[first][probe.metric])))
            delta = f"{c.mean:+.4g}"
            dci = "–" if c.ci is None else f"[{c.ci[0]:+.4g}, {c.ci[1]:+.4g}]"
        std = "" if s.std is None else f" ± {s.std:.3g}"
        lines.append(f"| {arm} | {s.mean:.4g}{std} | {ci} | {delta} | {dci} |")
    how = f"Command: `pdeconv probe {probe.name} --seeds {len(seeds)}{' --quick' if quick else ''}`."
    return _save(out, probe, record, csv, how, lines, " (quick: a smoke test, not a result)" if quick else "")


def probe_csv(metrics: dict[str, dict[str, list[float]]], seeds: list[int]) -> tuple[list[str], list[list]]:
    """``(header, rows)`` of a probe's ``results.csv``: one row per arm and seed, one column per metric."""
    keys = sorted({k for m in metrics.values() for k in m})
    return ["arm", "seed", *keys], [[arm, s, *(f"{m[k][i]:.6g}" if k in m else "" for k in keys)]
                                    for arm, m in metrics.items() for i, s in enumerate(seeds)]


def _save(out: Path, probe: Probe, record: dict[str, Any], csv: tuple[list[str], list[list]], how: str,
          table: list[str],
          title_note: str = "") -> list[Path]:
    """``probe.json`` (``record``), ``results.csv`` and ``report.md``: the essay's sentence, the prediction, how
    it was run (``how``, the machine, threads, code), the table, the outcome."""
    report = [
        f"# Probe `{probe.name}`{title_note}", "",
        f"The essay: \"{probe.essay}\"", "",
        f"**Prediction** (written before the run, in `pdeconv.probes`): {probe.prediction}", "",
        f"{how} Machine: {record['machine']}, {record['threads']} threads; torch {torch.__version__}; code "
        f"{record['code']}.", "",
        *table, "",
        f"**Outcome: the prediction {'held' if record['held'] else 'did not hold'}.** {record['verdict']}.", "",
    ]
    paths = [out / "probe.json", out / "results.csv", out / "report.md", out / PLOT]
    report += [f"![{probe.name}]({PLOT})", ""]
    _checkpoint.write_text(paths[0], json.dumps(record, indent=2) + "\n")
    _checkpoint.write_csv(paths[1], *csv)
    plot_probe(out)  # drawn from probe.json, before the report that shows it
    _checkpoint.write_text(paths[2], "\n".join(report))
    return paths


# ------------------------------------------------------------------------------------------------- plots

#: the figure each probe writes beside its report
PLOT = "probe.png"


def plot_probe(out: str | Path) -> Path:
    """Draw ``out/probe.png`` from ``out/probe.json`` (what :func:`run_probe` and :func:`truncation` wrote).

    * ``truncation``: test accuracy against the truncation order k, per variant (mean over its runs, bars the
      95% t-interval).
    * ``transport``: the best fit's test error, mean over seeds, per shift k (rows) and depth L (columns), on a
      log colour scale; the cells with L ≥ k (reachable) outlined.
    * the others: the probe's metric per arm, one line per seed joining its arms (the pairing), and each arm's
      mean with its 95% t-interval.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    out = Path(out)
    record = json.loads((out / "probe.json").read_text())
    name, metrics = record["probe"], record["metrics"]
    if name == "truncation":
        fig, ax = plt.subplots(figsize=(5.5, 4))
        for variant, m in metrics.items():
            ks = [int(key.split()[-1]) for key in m]
            stats = [summarize([100 * v for v in values]) for values in m.values()]
            lo = [s.mean - (s.ci[0] if s.ci else s.mean) for s in stats]
            hi = [(s.ci[1] if s.ci else s.mean) - s.mean for s in stats]
            ax.errorbar(ks, [s.mean for s in stats], yerr=[lo, hi], marker="o", capsize=3,
                        label=f"{variant} ({len(next(iter(m.values())))} runs)")
        ax.set_xlabel("kernels cut to total order ≤ k")
        ax.set_ylabel("test accuracy (%), BatchNorm recalibrated")
        ax.set_xticks(sorted({int(key.split()[-1]) for m in metrics.values() for key in m}))
        ax.set_title("truncation: accuracy of trained networks cut to order ≤ k", fontsize=9)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    elif name == "transport":
        cells = {_cell(arm): statistics.fmean(m["relative_error"]) for arm, m in metrics.items()}
        shifts, depths = sorted({k for k, _ in cells}), sorted({d for _, d in cells})
        grid = np.array([[cells[k, d] for d in depths] for k in shifts])
        fig, ax = plt.subplots(figsize=(5, 3.6))
        im = ax.imshow(np.log10(np.clip(grid, 1e-16, None)), cmap="viridis_r", vmin=-16, vmax=0)
        for i, k in enumerate(shifts):
            for j, d in enumerate(depths):
                ax.text(j, i, f"{grid[i, j]:.1g}", ha="center", va="center", fontsize=8,  # dark on yellow
                        color="black" if grid[i, j] < 1e-8 else "white")
                if d >= k:
                    ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, lw=1.5, ec="C3"))
        ax.set_xticks(range(len(depths)), [str(d) for d in depths])
        ax.set_yticks(range(len(shifts)), [str(k) for k in shifts])
        ax.set_xlabel("layers L")
        ax.set_ylabel("shift k (pixels)")
        fig.colorbar(im, ax=ax, label="log10 test error (best fit, mean over seeds)")
        ax.set_title("transport: red = reachable (L ≥ k)", fontsize=9)
    else:
        probe = PROBES[name]
        arms = [a for a in probe.arms if a in metrics]
        values = np.array([metrics[a][probe.metric] for a in arms])  # (arms, seeds)
        fig, ax = plt.subplots(figsize=(5, 4))
        xs = np.arange(len(arms))
        for seed_values in values.T:
            ax.plot(xs, seed_values, "-o", color="0.6", ms=3, lw=0.8, alpha=0.7)
        for x, row in zip(xs, values):
            s = summarize(list(row))
            if s.ci is not None:
                ax.errorbar(x + 0.08, s.mean, yerr=[[s.mean - s.ci[0]], [s.ci[1] - s.mean]], fmt="s",
                            color="C0", capsize=4, ms=6)
        ax.set_xticks(xs, arms)
        ax.set_xlim(-0.4, len(arms) - 0.6)
        ax.set_ylabel(probe.metric.replace("_", " "))
        ax.set_title(f"{name}: {values.shape[1]} paired seeds (grey), mean ± 95% CI (blue)", fontsize=9)
        ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    path = out / PLOT
    _checkpoint.write_figure(path, fig)
    plt.close(fig)
    return path
