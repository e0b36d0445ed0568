"""The figures of an experiment: the paired differences to the reference, test accuracy per epoch, accuracy
against forward FLOPs and against the learned hyperbolicity."""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping
from pathlib import Path

from pdeconv import engine, storage
from pdeconv.experiment.stats import Paired

__all__ = ["plot_experiment"]


def _histories(out: Path, rows: list[dict]) -> dict[str, list[list[float]]]:
    curves: dict[str, list[list[float]]] = {}
    for r in rows:
        path = Path(out) / r["run"] / engine.METRICS
        accs = [json.loads(line)["test_acc"] for line in path.read_text().splitlines() if line.strip()]
        curves.setdefault(r["variant"], []).append(accs)
    return curves


def _write(fig, path: Path) -> Path:
    """Lay out ``fig``, write it to ``path`` (whole or not at all) and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    storage.write_figure(path, fig)
    plt.close(fig)
    return path


def _save(fig, ax, path: Path, xlabel: str, title: str) -> Path:
    """Label a test-accuracy plot, write it to ``path`` and close it."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _write(fig, path)


def _paired_plot(out: Path, rows: list[dict], paired: Mapping[str, Paired], reference: str) -> Path:
    """``paired_differences.png``: per variant, each seed's Δ = variant − reference (dots, in seed order from
    left to right) and the mean Δ with its 95% CI (bar), against a line at 0."""
    import matplotlib.pyplot as plt

    acc = {(r["variant"], int(r["seed"])): 100 * r["test_acc"] for r in rows}
    fig, ax = plt.subplots(figsize=(max(4.0, 1.3 * len(paired) + 2), 4))
    ax.axhline(0.0, color="0.4", lw=1)
    for i, (variant, c) in enumerate(paired.items()):
        diffs = [acc[variant, s] - acc[reference, s] for s in c.seeds]
        offsets = [0.12 * (k - (len(diffs) - 1) / 2) / max(1, len(diffs) - 1) for k in range(len(diffs))]
        ax.plot([i - 0.15 + o for o in offsets], diffs, "o", color="0.55", ms=4,
                label="one seed" if i == 0 else None)
        lo, hi = (100 * c.ci[0], 100 * c.ci[1]) if c.ci is not None else (100 * c.mean, 100 * c.mean)
        ax.errorbar(i + 0.1, 100 * c.mean, yerr=[[100 * c.mean - lo], [hi - 100 * c.mean]], fmt="s", ms=6,
                    capsize=4, color="C0", label="mean Δ, 95% CI" if i == 0 else None)
    ax.set_xticks(range(len(paired)), list(paired), rotation=15 if len(paired) > 3 else 0)
    ax.set_xlim(-0.6, len(paired) - 0.4)
    ax.set_ylabel(f"Δ test accuracy vs {reference} (points)")
    seeds = max(len(c.seeds) for c in paired.values())
    ax.set_title(f"paired differences to {reference}\n({seeds} seeds; a dot: variant − {reference}, same seed)",
                 fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    return _write(fig, Path(out) / "paired_differences.png")


def plot_experiment(out: Path, rows: list[dict], paired: Mapping[str, Paired] | None = None,
                    reference: str = "baseline") -> list[Path]:
    """Write the experiment's plots to ``out`` and return their paths: ``paired_differences.png`` (when
    ``paired``, the :func:`~pdeconv.experiment.report.comparisons` with ``reference``, is not empty),
    ``accuracy_per_epoch.png``, ``accuracy_vs_flops.png`` and, when the runs were analysed,
    ``accuracy_vs_hyperbolicity.png`` and (when their penalty weights differ) ``hyperbolicity_vs_penalty.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    files = [_paired_plot(out, rows, paired, reference)] if paired else []
    fig, ax = plt.subplots(figsize=(6, 4))
    for variant, curves in _histories(out, rows).items():
        n = min(len(c) for c in curves)
        a = 100 * np.array([c[:n] for c in curves])
        epochs = np.arange(1, n + 1)
        ax.plot(epochs, a.mean(0), marker="o", label=variant)
        ax.fill_between(epochs, a.min(0), a.max(0), alpha=0.2)
    files.append(_save(fig, ax, out / "accuracy_per_epoch.png", "epoch",
                       "test accuracy per epoch (mean, band = min–max over seeds)"))

    fig, ax = plt.subplots(figsize=(6, 4))
    by: dict[str, list[dict]] = {}
    for r in rows:
        by.setdefault(r["variant"], []).append(r)
    for variant, rs in by.items():
        accs = [100 * r["test_acc"] for r in rs]
        std = statistics.stdev(accs) if len(accs) > 1 else 0.0
        ax.errorbar(rs[0]["flops"] / 1e6, statistics.fmean(accs), yerr=std, fmt="o", capsize=3, label=variant)
    files.append(_save(fig, ax, out / "accuracy_vs_flops.png", "forward MFLOPs per image",
                       "accuracy vs compute (mean ± std over seeds)"))

    scored = [r for r in rows if r.get("hyperbolicity") not in (None, "")]
    if scored:  # what the trained models learned: each run's mean hyperbolicity score against its accuracy
        fig, ax = plt.subplots(figsize=(6, 4))
        for variant in by:
            rs = [r for r in scored if r["variant"] == variant]
            if rs:
                ax.plot([float(r["hyperbolicity"]) for r in rs], [100 * r["test_acc"] for r in rs], "o",
                        label=variant)
        files.append(_save(fig, ax, out / "accuracy_vs_hyperbolicity.png",
                           "hyperbolicity score of the trained model (mean over its layers, 0–1)",
                           "accuracy vs hyperbolicity (one point per run)"))
        points = [(_penalty_weight(out, r), float(r["hyperbolicity"])) for r in scored]
        if len({w for w, _ in points}) > 1:  # the runs differ in the penalty's weight: does it move the score?
            files.append(_penalty_plot(out, points))
    return files


def _penalty_weight(out: Path, row: dict) -> float:
    """The hyperbolicity penalty's weight the run trained with (its ``config.json``)."""
    config = json.loads((Path(out) / row["run"] / engine.CONFIG).read_text())
    return float(config["config"].get("penalty_weight") or 0.0)


def _penalty_plot(out: Path, points: list[tuple[float, float]]) -> Path:
    """``hyperbolicity_vs_penalty.png``: each run's hyperbolicity score against the penalty weight it trained
    with (symmetric-log axis, so weight 0 has its place), the mean per weight joined (runs of one weight are
    averaged together whatever their variant: meant for experiments that vary the weight alone)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    by: dict[float, list[float]] = {}
    for weight, score in points:  # (penalty weight, hyperbolicity score) of each run
        by.setdefault(weight, []).append(score)
    xs = sorted(by)
    for x in xs:
        ax.plot([x] * len(by[x]), by[x], "o", color="0.55", ms=4)
    ax.plot(xs, [statistics.fmean(by[x]) for x in xs], "-s", color="C0", label="mean over runs")
    positive = [x for x in xs if x > 0]
    ax.set_xscale("symlog", linthresh=min(positive) if positive else 1.0)
    ax.set_xlabel("hyperbolicity penalty weight (0 = none)")
    ax.set_ylabel("hyperbolicity score of the trained model (0–1)")
    ax.set_title("does the penalty move the score? (one point per run)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _write(fig, Path(out) / "hyperbolicity_vs_penalty.png")
