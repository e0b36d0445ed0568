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

from pathlib import Path

import torch

from pdeconv.errors import PdeconvError
from pdeconv.probes.base import Probe, ProbeResult
from pdeconv.probes.registry import PROBES, TRUNCATION_PREDICTION
from pdeconv.probes.report import PLOT, plot_probe, probe_csv, write
from pdeconv.probes.trained import truncate_model, truncation
from pdeconv.runtime import check_out_dir

__all__ = ["PLOT", "PROBES", "TRUNCATION_PREDICTION", "Probe", "ProbeResult", "plot_probe", "probe_csv", "run_probe",
           "truncate_model", "truncation"]


def run_probe(name: str, *, seeds: int = 5, out: str | Path | None = None, quick: bool = False,
              progress: bool = True, runs: list[str | Path] | None = None) -> ProbeResult:
    """Run probe ``name`` and write ``probe.json``, ``results.csv`` and ``report.md`` to ``out`` (default
    ``runs/probe-NAME``): over seeds 0…seeds−1 (``quick``: fewer training steps, a smoke test, not a result), or,
    for a probe that ``needs_runs`` (truncation), over the trained ``runs`` given."""
    if name not in PROBES:
        raise PdeconvError(f"unknown probe {name!r}; valid ones: {', '.join(PROBES)}")
    if PROBES[name].needs_runs != (runs is not None):
        raise PdeconvError(f"the {name} probe needs runs: the trained runs (run directories of pdeconv train) to read"
                         if PROBES[name].needs_runs else
                         f"runs go only with a probe of trained runs; the {name} probe trains its own models")
    if runs is not None:
        return truncation(runs, out=out or f"runs/probe-{name}", progress=progress)
    if seeds < 2:
        raise PdeconvError(f"`seeds` must be at least 2 (the report pairs seeds); got {seeds}")
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
    files = write(out, probe, list(range(seeds)), metrics, held, verdict, quick)
    return ProbeResult(name, list(range(seeds)), metrics, held, verdict, files)
