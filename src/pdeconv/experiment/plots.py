"""The figures of an experiment: test accuracy per epoch, and accuracy against forward FLOPs."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from pdeconv import engine

__all__ = ["plot_experiment"]


def _histories(out: Path, rows: list[dict]) -> dict[str, list[list[float]]]:
    curves: dict[str, list[list[float]]] = {}
    for r in rows:
        path = Path(out) / r["run"] / engine.METRICS
        accs = [json.loads(line)["test_acc"] for line in path.read_text().splitlines() if line.strip()]
        curves.setdefault(r["variant"], []).append(accs)
    return curves


def _save(fig, ax, path: Path, xlabel: str, title: str) -> Path:
    """Label a test-accuracy plot, write it to ``path`` and close it."""
    import matplotlib.pyplot as plt

    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_experiment(out: Path, rows: list[dict]) -> list[Path]:
    """Write ``accuracy_per_epoch.png`` and ``accuracy_vs_flops.png`` to ``out``; return their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    files = []
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
    return files
