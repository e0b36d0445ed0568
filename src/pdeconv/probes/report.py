"""What a probe writes: probe.json, results.csv (through the csv module), report.md and its figure."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import torch

from pdeconv import storage
from pdeconv.experiment.stats import paired, summarize
from pdeconv.probes.base import Probe
from pdeconv.probes.registry import PROBES
from pdeconv.probes.transport import _cell


def write(out: Path, probe: Probe, seeds: list[int], metrics: dict[str, dict[str, list[float]]], held: bool,
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
    return save(out, probe, record, csv, how, lines, " (quick: a smoke test, not a result)" if quick else "")


def probe_csv(metrics: dict[str, dict[str, list[float]]], seeds: list[int]) -> tuple[list[str], list[list]]:
    """``(header, rows)`` of a probe's ``results.csv``: one row per arm and seed, one column per metric."""
    keys = sorted({k for m in metrics.values() for k in m})
    return ["arm", "seed", *keys], [[arm, s, *(f"{m[k][i]:.6g}" if k in m else "" for k in keys)]
                                    for arm, m in metrics.items() for i, s in enumerate(seeds)]


def save(out: Path, probe: Probe, record: dict[str, Any], csv: tuple[list[str], list[list]], how: str,
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
    storage.write_text(paths[0], json.dumps(record, indent=2) + "\n")
    storage.write_csv(paths[1], *csv)
    plot_probe(out)  # drawn from probe.json, before the report that shows it
    storage.write_text(paths[2], "\n".join(report))
    return paths


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
    storage.write_figure(path, fig)
    plt.close(fig)
    return path
