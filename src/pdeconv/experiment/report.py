"""``report.md``: the per-variant table of an experiment, its settings, the learned PDEs and the plots."""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pdeconv import engine, storage
from pdeconv.experiment.plots import plot_experiment
from pdeconv.experiment.results import LEARNED_PDE, learned_pde_summary
from pdeconv.experiment.stats import Paired, equivalence, holm, paired, summarize, welch_p

#: The smallest effect of interest, in accuracy (0.002 = 0.2 points): a null answer is "equivalent within ±δ"
#: only when the two one-sided tests say so (docs/results.md, "How to read an answer", gives the reason for its size).
EQUIVALENCE_MARGIN = 0.002

__all__ = ["EQUIVALENCE_MARGIN", "Report", "comparisons", "equivalences", "format_p", "shared_settings",
           "summary_table", "verdict", "write_report"]


def shared_settings(config: engine.TrainConfig) -> dict[str, Any]:
    """The settings every run of an experiment shares: its identity settings (:func:`pdeconv.engine.settings_of`),
    not each run's own (variant, seed) nor where and how fast it runs (threads, compile, device, ...)."""
    identity = engine.settings_of("identity")
    return {k: v for k, v in asdict(config).items() if k in identity}


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.2f}"


def format_p(x: float | None) -> str:
    """A p-value as the tables print it: "< 0.001", "0.012" or "–" for none."""
    return "–" if x is None else ("< 0.001" if x < 0.001 else f"{x:.3f}")


def _p_is(x: float) -> str:
    """``p`` in a sentence: "< 0.001" or "= 0.012"."""
    return format_p(x) if x < 0.001 else f"= {format_p(x)}"


@dataclass
class Report:
    """What :func:`write_report` wrote: the summary table, each variant's paired comparison with the reference
    and its Holm-adjusted p-value, whether each met the CI target (when set) and one plain sentence per
    comparison."""

    table: str
    reference: str
    comparisons: dict[str, Paired]
    holm: dict[str, float | None]
    reached: dict[str, bool] | None
    verdicts: list[str]


def _by_variant(rows: list[dict[str, Any]]) -> dict[str, dict[int, dict[str, Any]]]:
    by: dict[str, dict[int, dict[str, Any]]] = {}
    for r in rows:
        by.setdefault(r["variant"], {})[int(r["seed"])] = r
    return by


def comparisons(rows: list[dict[str, Any]], reference: str = "baseline") -> tuple[dict[str, Paired], dict]:
    """Each variant's :func:`~pdeconv.experiment.stats.paired` comparison of test accuracy with ``reference``
    over the seeds both ran, and the Holm-adjusted p-values of the family; empty without the reference."""
    by = _by_variant(rows)
    if reference not in by:
        return {}, {}
    ref = {s: r["test_acc"] for s, r in by[reference].items()}
    result = {v: paired({s: r["test_acc"] for s, r in rs.items()}, ref) for v, rs in by.items() if v != reference}
    adjusted = dict(zip(result, holm([c.p for c in result.values()])))
    return result, adjusted


def summary_table(rows: list[dict[str, Any]], reference: str = "baseline") -> str:
    """The per-variant Markdown table of the report (also printed to the terminal).

    Main columns: the paired difference to ``reference`` (mean Δ over shared seeds, in accuracy points), its
    95% CI, the paired t-test's p-value and its Holm adjustment over the table's comparisons. Secondary: each
    variant's own mean ± std, the unpaired Welch p-value, and the cost.
    """
    by = _by_variant(rows)
    paired_, adjusted = comparisons(rows, reference)
    ref = [r["test_acc"] for r in by.get(reference, {}).values()]
    val = any(r.get("val_acc") not in (None, "") for r in rows)
    lines = [
        f"| variant | seeds | Δ vs {reference} | 95% CI of Δ | p (paired t) | p (Holm) | test acc % (mean ± std) | "
        + ("val acc % (mean) | " if val else "") + "p (Welch) | params | MFLOPs/img | img/s (train) | wall s/run |",
        "|:--|--:|--:|--:|--:|--:|--:|" + ("--:|" if val else "") + "--:|--:|--:|--:|--:|",
    ]
    for variant, runs in by.items():
        rs = [runs[s] for s in sorted(runs)]
        accs = [r["test_acc"] for r in rs]
        st = summarize(accs)
        std = "" if st.std is None else f" ± {100 * st.std:.2f}"
        c = paired_.get(variant)
        if c is None:
            delta = ci = p = p_holm = welch = "–"
        else:
            delta = f"{100 * c.mean:+.2f}"
            ci = "–" if c.ci is None else f"[{100 * c.ci[0]:+.2f}, {100 * c.ci[1]:+.2f}]"
            p, p_holm, welch = format_p(c.p), format_p(adjusted.get(variant)), format_p(welch_p(accs, ref))
        n = f"{st.n}" if c is None or c.n == st.n else f"{st.n} ({c.n} paired)"
        vals = [float(r["val_acc"]) for r in rs if r.get("val_acc") not in (None, "")]
        val_cell = (f"{_pct(statistics.fmean(vals)) if vals else '–'} | ") if val else ""
        lines.append(
            f"| {variant} | {n} | {delta} | {ci} | {p} | {p_holm} | {_pct(st.mean)}{std} | {val_cell}{welch} | "
            f"{rs[0]['params']:,} | {rs[0]['flops'] / 1e6:.1f} | "
            f"{statistics.fmean(r['train_img_per_s'] for r in rs):.0f} | "
            f"{statistics.fmean(r['wall_s'] for r in rs):.0f} |"
        )
    return "\n".join(lines)


def verdict(variant: str, reference: str, c: Paired, p_holm: float | None, alpha: float = 0.05, *,
            p_equivalent: float | None = None, margin: float = EQUIVALENCE_MARGIN) -> str:
    """One plain sentence on a paired comparison (accuracy points): resolved when the Holm p ≤ ``alpha``;
    otherwise equivalent within ±``margin`` when ``p_equivalent`` (the Holm-adjusted TOST p) ≤ ``alpha``;
    otherwise not resolved — which says only that the data fit any difference inside the interval."""
    if c.ci is None:
        return f"{variant} vs {reference}: one paired seed (Δ = {100 * c.mean:+.2f} points); no interval, no verdict."
    lo, hi = 100 * c.ci[0], 100 * c.ci[1]
    interval = f"95% CI [{lo:+.2f}, {hi:+.2f}] points over {c.n} paired seeds"
    if p_holm is not None and p_holm <= alpha:
        side = "better" if c.mean > 0 else "worse"
        return (f"{variant} is {side} than {reference} by {abs(100 * c.mean):.2f} points ({interval}, "
                f"Holm p {_p_is(p_holm)}).")
    if p_equivalent is not None and p_equivalent <= alpha:
        return (f"{variant} is equivalent to {reference} within ±{100 * margin:.1f} points (Δ = {100 * c.mean:+.2f}, "
                f"{interval}; two one-sided tests, Holm p {_p_is(p_equivalent)}).")
    return (f"{variant} vs {reference}: not resolved at this budget: Δ = {100 * c.mean:+.2f}, {interval}; the data "
            f"fit any difference in that interval, and equivalence within ±{100 * margin:.1f} points is not shown.")


def equivalences(comparisons_: dict[str, Paired], margin: float = EQUIVALENCE_MARGIN) -> dict[str, float | None]:
    """Holm-adjusted TOST p-values (:func:`~pdeconv.experiment.stats.equivalence` within ±``margin``) of each
    comparison, over the family given."""
    raw = [None if c.se is None else equivalence(c.mean, c.se, c.df, margin) for c in comparisons_.values()]
    return dict(zip(comparisons_, holm(raw)))


def _started(out: Path, rows: list[dict]) -> list[str]:
    return [json.loads((Path(out) / r["run"] / engine.CONFIG).read_text()).get("started", "?") for r in rows]


def _seed_ranges(seeds: list[int]) -> str:
    """``[0, 1, 2, 4]`` → ``"0–2, 4"``."""
    spans: list[list[int]] = []
    for s in sorted(seeds):
        if spans and s == spans[-1][1] + 1:
            spans[-1][1] = s
        else:
            spans.append([s, s])
    return ", ".join(f"{a}" if a == b else f"{a}–{b}" for a, b in spans)


def provenance(out: Path, rows: list[dict]) -> str:
    """Which machine (the run's device description: for a CPU its model, cores, features and threads) and which code
    ran which runs, from each run's config.json, with the dates they started: one clause per (device, code) group,
    runs listed by variant and seed range; then each resumption (a run continued later, perhaps elsewhere or on
    other code). Runs written before config.json recorded the code say "code not recorded"."""
    groups: dict[tuple[str, str], list[tuple[str, int, str]]] = {}
    resumptions = []
    for r in rows:
        meta = json.loads((Path(out) / r["run"] / engine.CONFIG).read_text())
        device = str(meta.get("device_name", meta.get("device", "unknown device")))
        code = meta.get("code") or "not recorded"
        groups.setdefault((device, code), []).append((r["variant"], int(r["seed"]), str(meta.get("started", "?"))))
        resumptions += [f"{r['variant']} seed {r['seed']} after epoch {x.get('epoch', '?')} on {x.get('at', '?')} "
                        f"({x.get('device_name', 'unknown device')}, code {x.get('code') or 'not recorded'})"
                        for x in meta.get("resumed", [])]
    clauses = []
    for (device, code), runs in groups.items():
        by_variant: dict[str, list[int]] = {}
        for variant, seed, _ in runs:
            by_variant.setdefault(variant, []).append(seed)
        which = "; ".join(f"{v} seed{'s' if len(s) > 1 else ''} {_seed_ranges(s)}" for v, s in by_variant.items())
        dates = sorted(started for *_, started in runs)
        when = dates[0] if dates[0] == dates[-1] else f"{dates[0]} to {dates[-1]}"
        clauses.append(f"{which}: {device}, code {code}, started {when}")
    return "Runs: " + " · ".join(clauses) + "." + (f" Resumed: {'; '.join(resumptions)}." if resumptions else "")


def _learned_means(rows: list[dict]) -> str:
    """Per variant, the mean over its runs of the learned-PDE columns of ``results.csv``."""
    from pdeconv.experiment.results import _LEARNED

    columns = [c for c in _LEARNED if any(r.get(c) not in (None, "") for r in rows)]  # those some run has
    lines = ["| variant | " + " | ".join(columns) + " |", "|:--|" + "--:|" * len(columns)]
    for variant in dict.fromkeys(r["variant"] for r in rows):
        cells = []
        for column in columns:
            values = [float(r[column]) for r in rows if r["variant"] == variant and r.get(column) not in (None, "")]
            cells.append(f"{statistics.fmean(values):.3f}" if values else "–")
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _learned_pde(out: Path, rows: list[dict]) -> str:
    """One line per variant from :func:`learned_pde_summary` of its first seed."""
    lines = []
    seen = set()
    for r in rows:
        if r["variant"] in seen:
            continue
        seen.add(r["variant"])
        s = learned_pde_summary(Path(out) / r["run"])
        if s is None:
            lines.append(f"- **{r['variant']}** (seed {r['seed']}): no checkpoint and no {LEARNED_PDE} to read")
            continue
        parts = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in s.items() if v is not None)
        lines.append(f"- **{r['variant']}** (seed {r['seed']}): {parts}")
    return "\n".join(lines)


def _run_home(rows: list[dict[str, Any]]) -> str:
    """Where the runs of ``rows`` live, relative to the report: ``runs/``, or a shared run store's folder."""
    homes = {str(Path(r["run"]).parent.parent) for r in rows if r.get("run")}
    if len(homes) == 1 and (home := homes.pop()) not in ("runs", "."):
        return f"`{home}/` (a run store shared with other experiments: `{home}/VARIANT/seedS`)"
    return "`runs/`"


def write_report(out: Path, rows: list[dict[str, Any]], base: engine.TrainConfig, *, reference: str = "baseline",
                 target_ci: float | None = None, max_seeds: int = 10, command: str | None = None) -> Report:
    """Write ``report.md`` and the plots; return the :class:`Report` (its table is also printed).

    The report says how it was made: ``command`` (when given), the code revision, the machine and the thread
    count of the runs, the date of the first run.
    """
    from pdeconv.models import variant_training
    from pdeconv.runtime import code_revision, cpu_description

    table = summary_table(rows, reference)
    paired_, adjusted = comparisons(rows, reference)
    equivalent = equivalences(paired_)
    verdicts = [verdict(v, reference, c, adjusted.get(v), p_equivalent=equivalent.get(v)) for v, c in paired_.items()]
    resolved = [v for v in paired_ if adjusted.get(v) is not None and adjusted[v] <= 0.05]
    if paired_:
        same = [v for v in paired_ if v not in resolved and equivalent.get(v) is not None and equivalent[v] <= 0.05]
        open_ = [v for v in paired_ if v not in resolved and v not in same]
        verdicts.append(f"In short: {len(resolved)} of {len(paired_)} differences to {reference} resolved at this "
                        f"budget (Holm p ≤ 0.05{': ' + ', '.join(resolved) if resolved else ''})"
                        + (f"; equivalent within ±{100 * EQUIVALENCE_MARGIN:.1f} points: {', '.join(same)}"
                           if same else "")
                        + (f"; not resolved: {', '.join(open_)}" if open_ else "") + ".")
    reached = None
    if target_ci is not None:
        reached = {v: c.half_width is not None and 100 * c.half_width <= target_ci for v, c in paired_.items()}
        met = [v for v, ok in reached.items() if ok]
        missed = [v for v, ok in reached.items() if not ok]
        verdicts.append(
            f"Target ±{target_ci:g} points (95% CI half-width of Δ): "
            + (f"reached by {', '.join(met)}" if met else "reached by none")
            + (f"; not reached with {max_seeds} seeds: {', '.join(missed)}" if missed else "") + "."
        )
    plots = plot_experiment(out, rows, paired_, reference)
    meta = json.loads((Path(out) / rows[0]["run"] / engine.CONFIG).read_text())
    settings = shared_settings(base)
    own = {v: variant_training(v) for v in dict.fromkeys(r["variant"] for r in rows)}
    per_variant = sorted({k for training in own.values() for k in training} & set(settings))
    for k in per_variant:  # a variant that sets its own (seed+lr=0.4) makes the setting no longer shared
        settings.pop(k)
    own_text = "".join(
        f" Set per variant: `{k}` ({', '.join(f'{v}: {t.get(k, getattr(base, k)):g}' for v, t in own.items())})."
        for k in per_variant)
    text = [
        f"# {base.model} on {base.dataset}: {len({r['variant'] for r in rows})} variants, "
        f"{len({r['seed'] for r in rows})} seeds",
        "",
        *([f"Command: `{command}`", ""] if command else []),
        f"Device: {meta.get('device_name', meta.get('device'))} ({cpu_description()}; "
        f"{meta.get('config', {}).get('threads')} threads, {meta.get('world_size', 1)} process(es)); "
        f"torch {meta.get('torch_version')}; pdeconv {meta.get('pdeconv_version')}; "
        f"code {code_revision() or 'unknown'} when the report was written; first run started "
        f"{min(_started(out, rows))}.",
        "",
        provenance(out, rows),
        "",
        f"Test accuracy at the last epoch. Seed s gives every variant the same data order, augmentation draws and "
        f"(in the layers it shares with the baseline) initial weights, so each variant is compared with "
        f"`{reference}` seed by seed: Δ is the mean paired difference in accuracy points, its 95% CI the Student t "
        f"interval over seeds, p the paired t-test's, adjusted by Holm's method over the table's "
        f"{len(paired_)} comparisons. The variant's own mean ± std and Welch's unpaired test are secondary.",
        "",
        table,
        "",
        *[f"- {v}" for v in verdicts],
        "",
        "Settings shared by every run: " + ", ".join(f"`{k}={v}`" for k, v in settings.items()) + "." + own_text,
        "",
        "## The learned PDE",
        "",
        "Mean over each variant's runs: hyperbolicity score (0–1, mean over layers), independent operators per "
        "channel used by depthwise layers, share of kernel moment energy at orders ≥ 3, and how much coefficient "
        "fields a(x, y) vary in space (std / rms, 0 = constant) and the share of them that change sign "
        "(`pdeconv analyze`), where the runs have them:",
        "",
        _learned_means(rows),
        "",
        "First seed of each variant in full:",
        "",
        _learned_pde(out, rows),
        "",
        "## Plots",
        "",
        *[f"![{p.stem}]({p.name})" for p in plots],
        "",
        f"Every run's files (config.json, metrics.jsonl, TensorBoard events, checkpoint) are under {_run_home(rows)}.",
        "",
    ]
    storage.write_text(out / "report.md", "\n".join(text))
    return Report(table, reference, paired_, adjusted, reached, verdicts)
