"""Probes of trained runs: truncation — do trained 3×3 kernels act as differential operators of order ≤ 2?"""

from __future__ import annotations

import statistics
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pdeconv import stencil
from pdeconv.errors import PdeconvError
from pdeconv.experiment.stats import paired, summarize
from pdeconv.probes.base import Probe, ProbeResult
from pdeconv.probes.registry import PROBES
from pdeconv.probes.report import save


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
        raise PdeconvError("give the run directories to truncate as `runs`, e.g. results/store-fast/baseline/seed*")
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
    probe = replace(PROBES["truncation"], arms=tuple(metrics), metric=f"order ≤ {max(orders)}")
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
    return save(out, probe, record, csv, how, lines)
