"""``report.md``: the per-variant table of an experiment, its settings, the learned PDEs and the plots."""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pdeconv import _checkpoint, engine
from pdeconv.experiment.plots import plot_experiment
from pdeconv.experiment.results import run_dir
from pdeconv.experiment.stats import summarize, welch_p

__all__ = ["shared_settings", "summary_table", "write_report"]


def shared_settings(config: engine.TrainConfig) -> dict[str, Any]:
    """The settings every run of an experiment shares: everything but the run's own and where it runs."""
    skip = {"variant", "seed", "out", "resume", "force", "progress", "workers", "data_dir", "penalty_weight",
            "device", "threads"}
    return {k: v for k, v in asdict(config).items() if k not in skip}


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.2f}"


def summary_table(rows: list[dict[str, Any]]) -> str:
    """The per-variant Markdown table of the report (also printed to the terminal)."""
    by: dict[str, list[dict]] = {}
    for r in rows:
        by.setdefault(r["variant"], []).append(r)
    ref = [r["test_acc"] for r in by.get("baseline", [])]
    lines = [
        "| variant | runs | test acc % (mean ± std) | 95% CI | Δ vs baseline | p (Welch) | params | "
        "MFLOPs/img | img/s (train) | wall s/run |",
        "|:--|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for variant, rs in by.items():
        accs = [r["test_acc"] for r in rs]
        st = summarize(accs)
        std = "" if st.std is None else f" ± {100 * st.std:.2f}"
        ci = "–" if st.ci is None else f"[{_pct(st.ci[0])}, {_pct(st.ci[1])}]"
        if variant == "baseline" or not ref:
            delta, p = "–", "–"
        else:
            delta = f"{100 * (st.mean - statistics.fmean(ref)):+.2f}"
            pv = welch_p(accs, ref)
            p = "–" if pv is None else f"{pv:.3f}"
        lines.append(
            f"| {variant} | {st.n} | {_pct(st.mean)}{std} | {ci} | {delta} | {p} | {rs[0]['params']:,} | "
            f"{rs[0]['flops'] / 1e6:.1f} | {statistics.fmean(r['train_img_per_s'] for r in rs):.0f} | "
            f"{statistics.fmean(r['wall_s'] for r in rs):.0f} |"
        )
    return "\n".join(lines)


def _learned_pde(out: Path, rows: list[dict]) -> str:
    """One line per variant from :func:`pdeconv.analysis.variant_summary` on its first seed's weights."""
    from pdeconv.analysis import analyze_model, variant_summary
    from pdeconv.run import model_from_run

    lines = []
    seen = set()
    for r in rows:
        if r["variant"] in seen:
            continue
        seen.add(r["variant"])
        s = variant_summary(analyze_model(model_from_run(run_dir(out, r["variant"], r["seed"]))))
        parts = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in s.items() if v is not None)
        lines.append(f"- **{r['variant']}** (seed {r['seed']}): {parts}")
    return "\n".join(lines)


def write_report(out: Path, rows: list[dict[str, Any]], base: engine.TrainConfig) -> str:
    """Write ``report.md`` and the plots; return the summary table."""
    table = summary_table(rows)
    plots = plot_experiment(out, rows)
    meta = json.loads((run_dir(out, rows[0]["variant"], rows[0]["seed"]) / engine.CONFIG).read_text())
    settings = shared_settings(base)
    text = [
        f"# {base.model} on {base.dataset}: {len({r['variant'] for r in rows})} variants × "
        f"{len({r['seed'] for r in rows})} seeds",
        "",
        f"Device: {meta.get('device_name', meta.get('device'))}; torch {meta.get('torch_version')}; "
        f"pdeconv {meta.get('pdeconv_version')}; started {meta.get('started')}.",
        "",
        "Test accuracy at the last epoch. 95% CI: Student t over seeds. Δ and p: difference of means to "
        "`baseline` and Welch's t-test (unequal variances); with 3 seeds only large differences are significant.",
        "",
        table,
        "",
        "Settings shared by every run: " + ", ".join(f"`{k}={v}`" for k, v in settings.items()) + ".",
        "",
        "## The learned PDE (first seed of each variant)",
        "",
        _learned_pde(out, rows),
        "",
        "## Plots",
        "",
        *[f"![{p.stem}]({p.name})" for p in plots],
        "",
        "Every run's files (config.json, metrics.jsonl, TensorBoard events, checkpoint) are under `runs/`.",
        "",
    ]
    _checkpoint.write_text(out / "report.md", "\n".join(text))
    return table
