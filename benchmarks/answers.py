"""The essay's questions, one `pdeconv compare` experiment each (issue "The essay's questions, answered").

Every experiment is ResNet-20 on Fashion-MNIST with the ``fast`` preset, 5 paired seeds (more with
``--target-ci``), its runs kept in one shared run store (``results/store-fast``), so the baseline of seed s is
trained once and reused by every experiment. Each writes ``results/NAME/`` (results.csv, report.md, plots); the
store keeps each run's config.json, metrics.jsonl and learned-PDE summary (committed) and its checkpoint (not
committed). Interrupted at any point, the same command continues: finished runs are skipped, a run with its
checkpoint resumes, a run without one starts again.

    python benchmarks/answers.py                 # every experiment, in the order below
    python benchmarks/answers.py seed boundary   # some of them
    python benchmarks/answers.py --list          # the commands, without running them
    python benchmarks/answers.py --status        # how far each experiment has got, run by run
    python benchmarks/answers.py --summaries     # learned_pde.json for every finished run that has a checkpoint
    python benchmarks/answers.py --summary       # every comparison of docs/results.md, adjusted over the document
    python benchmarks/answers.py --budget        # the essay's block against the baseline at each training budget
    python benchmarks/answers.py --lr-choice     # each variant's best rate from lr-0.1 lr-0.2 lr-0.4 (validation)
    python benchmarks/answers.py own-lr          # then: the re-answers, each side at its own best rate (lr-NAME)

Several of these commands may run at once (one per free core, e.g. ``answers.py boundary varcoef`` and
``answers.py order operators``): ``compare`` locks each run of the shared store, so none is trained twice, and a
run that another command is training is waited for at the end.

``--threads`` (default 1) fixes the thread count of every run: a run's accuracy then does not depend on the
load of the machine, so the experiments can run in the background next to other work (their timing columns
then measure that load too, and are no speed claims).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import shlex
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"
STORE = RESULTS / "store-fast"


STORE_RTS = RESULTS / "store-rts"
STORE_LR = RESULTS / "lr" / "store"
#: the learning-rate sweep: its rates, its variants (the baseline first) and the validation split every run holds out
LR_RATES = ("0.1", "0.2", "0.4")
LR_VARIANTS = ("baseline", "seed", "dw4", "order2", "neumann", "wave", "varcoef")
VAL_SPLIT = ("--val-split", "5000")
LR_CHOICE = RESULTS / "lr" / "choice.csv"
OWN_LR_SEEDS = (2, 3, 4, 5, 6)  # the re-answers' seeds: none of the sweep's (0, 1), which chose the rates


@dataclass(frozen=True)
class Experiment:
    question: str
    essay: str  # the sentence of the essay it tests
    variants: str
    reference: str = "baseline"
    dataset: str = "fashion-mnist"
    store: Path = STORE
    # The plain experiments ran with the preset's ``--amp auto`` (bf16 on the machine that ran them); later ones
    # pin the precision, so that a run on another CPU trains as these did.
    amp: str | None = None
    preset: str = "fast"
    extra: tuple[str, ...] = ()  # more compare options (a learning rate, a validation split)
    seeds: int | tuple[int, ...] | None = None  # its own seed count or seeds (else --seeds)
    out: Path | None = None  # default: results/NAME
    setting: str = "plain"  # the setting its answers belong to (docs/results.md's summary table)
    in_family: bool = True  # its test-set comparisons are answers of docs/results.md (a sweep that only chooses
    # a learning rate on the validation split is not)


EXPERIMENTS: dict[str, Experiment] = {
    "seed": Experiment(
        "Does the essay's block (depthwise ×4 differential operators + variable coefficients) match the plain "
        "ResNet?",
        "Here is the modified Bottleneck … depthwise ×4 … with variable coefficients",
        "baseline,seed",
    ),
    "boundary": Experiment(
        "Which boundary condition: zero (Dirichlet), reflect (Neumann), periodic or replicate padding?",
        "Neumann … could make traveling waves bounce back and thereby retain more information",
        "baseline,neumann,periodic,bc=replicate",
    ),
    "varcoef": Experiment(
        "Do variable coefficients (degree 1 and 2 polynomial fields a(x, y)) help?",
        "variable coefficients … enable the ConvNet to learn to rotate and scale the image",
        "baseline,varcoef=1,varcoef",
    ),
    "hyperbolicity": Experiment(
        "Does the hyperbolicity penalty move the hyperbolicity score, and what does that do to accuracy?",
        "we could help make the ConvNet more hyperbolic by putting a suitable regularization term",
        "baseline,penalty=0.01,hyperbolic,penalty=1,penalty=10",
    ),
    "wave": Experiment(
        "A network that is a discretised hyperbolic system (leapfrog steps of u_tt = −Kᵀσ(BN(Ku))) against the "
        "baseline at equal parameters",
        "symmetric hyperbolic systems … would be interesting to implement",
        "baseline,wave",
    ),
    "order": Experiment(
        "Free depthwise ×4 kernels against kernels constrained to differential operators of order ≤ 2 (and ≤ 1)",
        "the space of second-order differential operators is 6 or perhaps 5 dimensional",
        "dw4,order2,dw4+order=1",
        reference="dw4",
    ),
    # The same questions on images where the essay's mechanisms should matter (docs/results.md: predictions).
    "rts-boundary": Experiment(
        "Boundary conditions on rotated, scaled and shifted garments that touch the border",
        "Neumann … could make traveling waves bounce back and thereby retain more information",
        "baseline,neumann,periodic", dataset="fashion-mnist-rts", store=STORE_RTS, amp="bf16", setting="rts",
    ),
    "rts-varcoef": Experiment(
        "Variable coefficients on rotated and scaled images",
        "variable coefficients … enable the ConvNet to learn to rotate and scale the image",
        "baseline,varcoef=1,varcoef", dataset="fashion-mnist-rts", store=STORE_RTS, amp="bf16", setting="rts",
    ),
    "rts-seed": Experiment(
        "The essay's block and depthwise ×4 operators on rotated, scaled and shifted images",
        "Here is the modified Bottleneck … depthwise ×4 … with variable coefficients",
        "baseline,seed,dw4", dataset="fashion-mnist-rts", store=STORE_RTS, amp="bf16", setting="rts",
    ),
    # The training budget of the headline: the `quick` recipe (2 epochs on a 24,000-image subset, the README's
    # quick table) and the `full` recipe (30 epochs, cosine, lr 0.1) around the `fast` one of "seed" (10 epochs).
    "quick-seed": Experiment(
        "The essay's block at the quick demo's budget (2 epochs on 24,000 images), with paired seeds",
        "Here is the modified Bottleneck … depthwise ×4 … with variable coefficients",
        "baseline,seed", store=RESULTS / "store-quick", amp="bf16", preset="quick", setting="quick",
    ),
    "full-seed": Experiment(
        "Does the essay's block close its gap with a longer budget (30 epochs)?",
        "Here is the modified Bottleneck … depthwise ×4 … with variable coefficients",
        "baseline,seed,varcoef", store=RESULTS / "store-full", amp="bf16", preset="full", setting="full",
    ),
    # Learning-rate fairness: the fast recipe at three peak rates, 2 seeds, each variant's best read from a
    # validation split of 5,000 training images (results/lr/). Each run is VARIANT+lr=RATE in one shared store,
    # which the re-answers at each side's own best rate (own_lr_experiments) share, on fresh seeds (OWN_LR_SEEDS).
    **{f"lr-{lr}": Experiment(
        f"The fast recipe at peak learning rate {lr}: which rate does each variant's validation accuracy prefer?",
        "(fairness of the recipe: every variant trains with the baseline's learning rate)",
        ",".join(f"{v}+lr={lr}" for v in LR_VARIANTS), reference=f"baseline+lr={lr}", store=STORE_LR, amp="bf16",
        extra=VAL_SPLIT, seeds=2, out=RESULTS / "lr" / f"lr-{lr}", setting=f"lr {lr}", in_family=False,
    ) for lr in LR_RATES},
    "operators": Experiment(
        "How many operators per channel: depthwise ×1, ×2, ×4, ×9 against the full 3×3 convolution",
        "there can only be at most 9 linearly independent kernels … I'd go with ×4",
        "baseline,dw=1,dw=2,dw4,dw=9",
    ),
}

# ------------------------------------------------------------------------------------------ each variant's own rate

def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def spec_name(spec: str) -> str:
    """A variant spec without its learning-rate part: ``"seed+lr=0.4"`` → ``"seed"``."""
    parts = [p.strip() for p in spec.split("+")]
    return "+".join(p for p in parts if p.partition("=")[0].strip() != "lr") or "baseline"


def lr_choice(results: Path = RESULTS) -> list[dict]:
    """The learning-rate sweep read back: per variant and rate, the validation accuracy of each seed (its last
    epoch) and their mean; per variant, the best rate (the highest mean; a tie goes to the recipe's 0.2, then to
    the lower rate) once the variant has runs of the same seeds at every rate of :data:`LR_RATES`. The test set is
    not read."""
    val: dict[tuple[str, str], dict[int, float]] = {}
    for lr in LR_RATES:
        path = _where(f"lr-{lr}", results)[1] / "results.csv"
        if not path.is_file():
            continue
        for r in _read_csv(path):
            if r.get("val_acc") in (None, ""):
                raise ValueError(f"{path}: {r['variant']} seed {r['seed']} has no val_acc; the sweep's runs hold out "
                                 f"a validation split ({' '.join(VAL_SPLIT)})")
            val.setdefault((spec_name(r["variant"]), lr), {})[int(r["seed"])] = float(r["val_acc"])
    rows = []
    for variant in dict.fromkeys(v for v, _ in val):
        mine = {lr: statistics.mean(val[variant, lr].values()) for lr in LR_RATES if (variant, lr) in val}
        same_seeds = len({frozenset(val[variant, lr]) for lr in mine}) == 1  # means over the same seeds
        best = (max(mine, key=lambda lr: (mine[lr], lr == "0.2", -float(lr)))
                if len(mine) == len(LR_RATES) and same_seeds else None)
        for lr, mean in mine.items():
            seeds = val[variant, lr]
            rows.append({"variant": variant, "lr": float(lr), "seeds": len(seeds), "val_acc": round(mean, 6),
                         "val_acc_per_seed": " ".join(f"{seeds[k]:.4f}" for k in sorted(seeds)),
                         "best": "" if best is None else ("yes" if lr == best else "no")})
    return rows


def write_lr_choice(rows: list[dict], out: Path = RESULTS / "lr") -> tuple[Path, Path, Path]:
    """``choice.csv`` (what :func:`own_lr_experiments` reads), ``choice.md`` (a variant × rate table of mean
    validation accuracy, the best marked) and ``val_acc.png`` (validation accuracy against the rate)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from pdeconv import storage

    columns = ["variant", "lr", "seeds", "val_acc", "val_acc_per_seed", "best"]
    storage.write_csv(out / "choice.csv", columns, rows)
    rates = sorted({r["lr"] for r in rows})
    by = {(r["variant"], r["lr"]): r for r in rows}
    lines = ["| variant | " + " | ".join(f"lr {lr:g}" for lr in rates) + " | best |",
             "|:--|" + "--:|" * len(rates) + ":--|"]
    for variant in dict.fromkeys(r["variant"] for r in rows):
        cells = []
        for lr in rates:
            r = by.get((variant, lr))
            mark = " **best**" if r is not None and r["best"] == "yes" else ""
            cells.append("–" if r is None else f"{100 * r['val_acc']:.2f}{mark}")
        chosen = [f"{r['lr']:g}" for r in rows if r["variant"] == variant and r["best"] == "yes"]
        best = chosen[0] if chosen else "not all rates yet"
        lines.append(f"| {variant} | " + " | ".join(cells) + f" | {best} |")
    head = ("# Each variant's learning rate, chosen on the validation split\n\n"
            "Written by `python benchmarks/answers.py --lr-choice` from `results/lr/lr-*/results.csv`: mean validation "
            f"accuracy (%, last epoch, {VAL_SPLIT[1]} held-out training images) over each variant's seeds at each "
            "peak learning rate of the `fast` recipe. The test set is not read for the choice.\n\n")
    storage.write_text(out / "choice.md", head + "\n".join(lines) + "\n")
    fig = Figure(figsize=(5.5, 3.6), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for i, variant in enumerate(dict.fromkeys(r["variant"] for r in rows)):
        mine = sorted((r for r in rows if r["variant"] == variant), key=lambda r: r["lr"])
        ax.plot([r["lr"] for r in mine], [100 * r["val_acc"] for r in mine], "o-", color=f"C{i}", label=variant)
        best = [r for r in mine if r["best"] == "yes"]
        ax.plot([r["lr"] for r in best], [100 * r["val_acc"] for r in best], "*", ms=12, color=f"C{i}")
    ax.set_xscale("log")
    ax.set_xticks(rates, [f"{lr:g}" for lr in rates])
    ax.set_xticks([], minor=True)
    ax.set_xlabel("peak learning rate (fast recipe)")
    ax.set_ylabel("validation accuracy % (mean over seeds)")
    ax.legend(fontsize=7, ncol=2)
    storage.write_figure(out / "val_acc.png", fig)
    return out / "choice.csv", out / "choice.md", out / "val_acc.png"


def plain_reference(variant: str) -> str:
    """The reference of the plain question ``variant`` answers: that of the first plain experiment comparing it
    (``dw4`` for ``order2``, whose question is what the order constraint costs free depthwise kernels; else the
    baseline)."""
    return next((e.reference for e in EXPERIMENTS.values() if e.setting == "plain"
                 and variant in e.variants.split(",") and variant != e.reference), "baseline")


def own_lr_experiments(choice: Path = LR_CHOICE) -> dict[str, Experiment]:
    """``lr-NAME`` for each variant whose best rate in ``choice`` (:func:`write_lr_choice`) is not its reference's
    (:func:`plain_reference`: the baseline, or dw4 for order2): the variant at its own best rate against the
    reference at its own, 5 paired seeds, the same validation split, in the sweep's store. Its seeds are
    :data:`OWN_LR_SEEDS`, not the sweep's 0 and 1: the seeds that chose a rate would carry their luck into the
    answer (a rate is chosen where a seed happened to do well). None before the sweep has chosen.

    Where both sides prefer one rate, the shared recipe treats them alike (both at the same distance from their
    best), so the recipe is fair to that variant and its shared-recipe answer stands, even when that rate is not the
    recipe's 0.2: the question here is the recipe's fairness between the two, not each answer's best rate."""
    if not choice.is_file():
        return {}
    best = {r["variant"]: r["lr"] for r in _read_csv(choice) if r["best"] == "yes"}
    experiments = {}
    for v, lr in best.items():
        ref = plain_reference(v)
        if v == "baseline" or ref not in best or float(lr) == float(best[ref]):
            continue
        experiments[f"lr-{v}"] = Experiment(
            f"{v} against {ref}, each at its own best learning rate ({lr} and {best[ref]}, chosen on the validation "
            "split)", "(fairness of the recipe: each side at the rate its validation accuracy prefers)",
            f"{ref}+lr={best[ref]},{v}+lr={lr}", reference=f"{ref}+lr={best[ref]}", store=STORE_LR, amp="bf16",
            extra=VAL_SPLIT, seeds=OWN_LR_SEEDS, setting="own lr")
    return experiments


EXPERIMENTS.update(own_lr_experiments())


def _where(name: str, root: Path | None) -> tuple[Path, Path]:
    """(run store, experiment folder) of ``name``: this repository's results/, or the same layout under ``root``."""
    e = EXPERIMENTS[name]
    out = e.out or RESULTS / name
    if root is None:
        return e.store, out
    return root / e.store.relative_to(RESULTS), root / out.relative_to(RESULTS)


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def command(name: str, args: argparse.Namespace) -> list[str]:
    """The ``pdeconv compare`` command of experiment ``name`` with this script's options (``--dataset``,
    ``--preset``, ``--device``, ``--results`` and ``--extra`` for a rerun elsewhere)."""
    e = EXPERIMENTS[name]
    store, out = _where(name, Path(args.results).resolve() if getattr(args, "results", None) else None)
    dataset = getattr(args, "dataset", None) or e.dataset
    cmd = [sys.executable, "-m", "pdeconv", "compare", "--preset", getattr(args, "preset", None) or e.preset,
           "--variants", e.variants, "--reference", e.reference, "--runs", _shown(store), "--out", _shown(out),
           "--threads", str(args.threads), "--no-progress"]
    cmd += ["--dataset", dataset] if dataset != "fashion-mnist" else []
    cmd += ["--amp", e.amp] if e.amp else []
    cmd += ["--device", args.device] if getattr(args, "device", None) else []
    cmd += list(e.extra)
    if args.target_ci is not None:
        cmd += ["--seeds", "auto", "--target-ci", str(args.target_ci), "--max-seeds", str(args.max_seeds)]
    else:
        own = e.seeds or args.seeds
        cmd += ["--seeds", ",".join(map(str, own)) if isinstance(own, tuple) else str(own)]
    cmd += ["--data-dir", args.data_dir] if args.data_dir else []
    return cmd + shlex.split(getattr(args, "extra", None) or "")


# ------------------------------------------------------------------------------------------ the document's family

#: Contrasts the text of docs/results.md draws between two variants of the same store (paired by seed), each in
#: the family and the setting of the experiment named first: (experiment, variant, reference).
CONTRASTS = [
    ("operators", "dw=2", "dw=1"),
    ("operators", "dw4", "dw=2"),
    ("operators", "dw=9", "dw4"),
    ("varcoef", "varcoef", "varcoef=1"),
    ("seed", "seed", "dw4"),
    ("rts-seed", "seed", "dw4"),  # on rts: what the block's coefficient fields add to dw4's operators
]

#: Probes whose per-seed results docs/results.md compares: (folder, metric column, arm, reference arm, unit). The
#: transport probe's claims are thresholds on errors per cell, not comparisons between arms; it is not in here.
PROBES = [
    ("probe-boundary-20", "test_accuracy", "neumann", "dirichlet", "points"),
    ("probe-rotation", "relative_error", "variable", "constant", "relative error"),
]
TRUNCATION = "probe-truncation"
SUMMARY_COLUMNS = ["setting", "experiment", "comparison", "kind", "n", "delta", "ci_low", "ci_high", "unit", "p",
                   "p_experiment_holm", "p_document_bh", "p_document_holm", "p_equivalent", "p_equivalent_holm",
                   "answer"]


def _accuracies(results: Path = RESULTS) -> dict[tuple[str, str], dict[int, float]]:
    """{(setting, variant): {seed: test accuracy}} from every experiment's committed results.csv."""
    acc: dict[tuple[str, str], dict[int, float]] = {}
    for name, e in EXPERIMENTS.items():
        path = _where(name, results)[1] / "results.csv"
        if e.in_family and path.is_file():
            for row in _read_csv(path):
                acc.setdefault((e.setting, row["variant"]), {})[int(row["seed"])] = float(row["test_acc"])
    return acc


def document_family(results: Path = RESULTS, margin: float | None = None) -> list[dict]:
    """Every comparison docs/results.md reports, from the committed CSVs, with its p adjusted three ways: Holm
    within its experiment, Benjamini–Hochberg and Holm over the whole document; accuracy comparisons also get the
    TOST p of equivalence within ±``margin`` (default: the reports' smallest effect of interest), Holm-adjusted
    over the document, and one ``answer`` word for what survives.

    Rows: each experiment's variants against its reference; the contrasts of :data:`CONTRASTS`; for each experiment
    in another setting (rts, the longer budget), its Δ set against the plain experiment's Δ of the same variant
    (Welch, unpaired: other runs); the probes of :data:`PROBES` and every cut of the truncation probe against its
    uncut network. ``results`` is the folder laid out as this repository's results/.
    """
    from pdeconv.experiment.report import EQUIVALENCE_MARGIN
    from pdeconv.experiment.stats import benjamini_hochberg, equivalence, holm, paired, welch

    margin = EQUIVALENCE_MARGIN if margin is None else margin
    acc = _accuracies(results)
    rows: list[dict] = []

    def add(setting, experiment, comparison, kind, c, unit="points", scale=100.0):
        se = getattr(c, "se", None)
        df = getattr(c, "df", None)
        rows.append({"setting": setting, "experiment": experiment, "comparison": comparison, "kind": kind,
                     "n": c.n, "delta": scale * c.mean,
                     "ci_low": None if c.ci is None else scale * c.ci[0],
                     "ci_high": None if c.ci is None else scale * c.ci[1], "unit": unit, "p": c.p,
                     "p_equivalent": (equivalence(c.mean, se, df, margin)
                                      if unit == "points" and se is not None and df else None)})

    answered = [(name, e, variant) for name, e in EXPERIMENTS.items()
                if e.in_family and (e.setting, e.reference) in acc
                and (_where(name, results)[1] / "results.csv").is_file()
                for variant in e.variants.split(",") if variant != e.reference and (e.setting, variant) in acc]

    def deltas(e: Experiment, variant: str) -> list[float]:
        mine, ref = acc[e.setting, variant], acc[e.setting, e.reference]
        return [mine[s] - ref[s] for s in sorted(mine.keys() & ref.keys())]

    # each variant's plain Δ against each reference, whichever plain experiment (in any order) measured it
    plain_deltas = {(variant, e.reference): deltas(e, variant) for _, e, variant in reversed(answered)
                    if e.setting == "plain"}
    for name, e, variant in answered:
        # a variant at its own rate (seed+lr=0.4 against baseline+lr=0.2) answers the same question as seed − baseline
        mine_, reference_ = spec_name(variant), spec_name(e.reference)
        add(e.setting, name, f"{mine_} − {reference_}", "paired",
            paired(acc[e.setting, variant], acc[e.setting, e.reference]))
        if e.setting != "plain" and (mine_, reference_) in plain_deltas:
            mine = deltas(e, variant)
            if len(mine) >= 2:
                add(f"{e.setting} vs plain", name, f"Δ({mine_}) {e.setting} − Δ({mine_}) plain", "welch",
                    welch(mine, plain_deltas[mine_, reference_]))
    for experiment, variant, reference in CONTRASTS:
        setting = EXPERIMENTS[experiment].setting
        if ((setting, variant) in acc and (setting, reference) in acc
                and (_where(experiment, results)[1] / "results.csv").is_file()):
            add(setting, experiment, f"{variant} − {reference}", "contrast",
                paired(acc[setting, variant], acc[setting, reference]))
    for folder, metric, arm, reference, unit in PROBES:
        path = results / folder / "results.csv"
        if path.is_file():
            by = {}
            for row in _read_csv(path):
                by.setdefault(row["arm"], {})[int(row["seed"])] = float(row[metric])
            scale = 100.0 if unit == "points" else 1.0
            add("probe", folder, f"{arm} − {reference}", "paired", paired(by[arm], by[reference]), unit, scale)
    path = results / TRUNCATION / "results.csv"
    if path.is_file():
        table = _read_csv(path)
        cuts = [k for k in table[0] if k not in ("variant", "seed")]
        for variant in dict.fromkeys(r["variant"] for r in table):
            mine = [r for r in table if r["variant"] == variant]
            uncut = {int(r["seed"]): float(r[cuts[0]]) for r in mine}
            for cut in cuts[1:]:
                add("probe", TRUNCATION, f"{variant}: {cut} − {cuts[0]}", "paired",
                    paired({int(r["seed"]): float(r[cut]) for r in mine}, uncut))

    bh, doc_holm = benjamini_hochberg([r["p"] for r in rows]), holm([r["p"] for r in rows])
    equivalent = holm([r["p_equivalent"] for r in rows])
    for r, b, h, q in zip(rows, bh, doc_holm, equivalent):
        r["p_document_bh"], r["p_document_holm"], r["p_equivalent_holm"] = b, h, q
    for experiment in dict.fromkeys(r["experiment"] for r in rows):
        family = [r for r in rows if r["experiment"] == experiment]
        for r, h in zip(family, holm([r["p"] for r in family])):
            r["p_experiment_holm"] = h
    for r in rows:
        r["answer"] = _answer(r, margin)
    return rows


def _answer(r: dict, margin: float, alpha: float = 0.05) -> str:
    """What a comparison's adjusted p-values allow it to claim, strongest first."""
    side = "higher" if r["delta"] > 0 else "lower"
    for key, words in (("p_document_holm", "Holm over the document"), ("p_document_bh", "BH over the document"),
                       ("p_experiment_holm", "Holm within its experiment")):
        if r[key] is not None and r[key] <= alpha:
            return f"{side}: resolved by {words}"
    if r["p_equivalent_holm"] is not None and r["p_equivalent_holm"] <= alpha:
        return f"equivalent within ±{100 * margin:.1f} points (Holm over the document)"
    if r["p_equivalent"] is not None and r["p_equivalent"] <= alpha:
        return f"not resolved (equivalent within ±{100 * margin:.1f} points before adjustment only)"
    return "not resolved"


def read_summary(path: Path = RESULTS / "summary.csv") -> list[dict]:
    """The rows :func:`write_summary` wrote, numbers as numbers (an empty cell is None)."""
    text_columns = {"setting", "experiment", "comparison", "kind", "unit", "answer"}
    return [{k: v if k in text_columns else (None if v == "" else (int(v) if k == "n" else float(v)))
             for k, v in row.items()} for row in _read_csv(path)]


def write_summary(rows: list[dict], out: Path = RESULTS) -> tuple[Path, Path]:
    """``summary.csv`` (through the csv module) and ``summary.md`` (the table docs/results.md shows)."""
    from pdeconv import storage
    from pdeconv.experiment.report import format_p

    text = io.StringIO()
    writer = csv.DictWriter(text, SUMMARY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: "" if r.get(k) is None else (f"{r[k]:.6g}" if isinstance(r[k], float) else r[k])
                         for k in SUMMARY_COLUMNS})
    storage.write_text(out / "summary.csv", text.getvalue())
    lines = ["| setting | experiment | comparison | n | Δ | 95% CI | p | Holm (experiment) | BH (document) | "
             "Holm (document) | TOST ±0.2 (Holm, document) | answer |",
             "|:--|:--|:--|--:|--:|--:|--:|--:|--:|--:|--:|:--|"]
    for r in rows:
        digits = 2 if r["unit"] == "points" else 3
        ci = "–" if r["ci_low"] is None else f"[{r['ci_low']:+.{digits}f}, {r['ci_high']:+.{digits}f}]"
        unit = "" if r["unit"] == "points" else f" ({r['unit']})"
        lines.append(f"| {r['setting']} | {r['experiment']} | {r['comparison']}{unit} | {r['n']} | "
                     f"{r['delta']:+.{digits}f} | {ci} | {format_p(r['p'])} | {format_p(r['p_experiment_holm'])} | "
                     f"{format_p(r['p_document_bh'])} | {format_p(r['p_document_holm'])} | "
                     f"{format_p(r['p_equivalent_holm'])} | {r['answer']} |")
    m = len(rows)
    head = (f"# Every comparison of docs/results.md, adjusted over the document\n\n"
            f"Written by `python benchmarks/answers.py --summary` from the committed `results/*/results.csv`: {m} "
            f"comparisons. Δ in accuracy points unless a unit is named; p is the paired t-test's (Welch's for a "
            f"Δ in another setting against the same Δ in the plain one); Holm (experiment) adjusts over the "
            f"comparisons of one experiment, BH "
            f"(Benjamini–Hochberg) and Holm (document) over all {m}; TOST ±0.2 is the p of the two one-sided tests "
            f"of equivalence within ±0.2 points, Holm-adjusted over the document.\n\n")
    storage.write_text(out / "summary.md", head + "\n".join(lines) + "\n")
    return out / "summary.csv", out / "summary.md"


#: docs/results.md, whose tables quote each comparison's page-wide p and whose by-setting table is written here
PAGE = ROOT / "docs" / "results.md"
#: the page's sections whose table has "p (BH, page)" and "p (Holm, page)" columns, and their experiments
SECTIONS = {"The essay's block": "seed", "Boundary conditions": "boundary", "Order-≤2 operators": "order",
            "Operators per channel": "operators", "Variable coefficients": "varcoef",
            "The hyperbolicity penalty": "hyperbolicity", "A hyperbolic network": "wave",
            "The essay's block at 2 epochs": "quick-seed",
            "Boundary conditions on rotated, scaled and shifted images": "rts-boundary",
            "Variable coefficients on rotated and scaled images": "rts-varcoef",
            "The essay's block and dw4 on rotated, scaled and shifted images": "rts-seed"}
#: each setting's column head in the by-setting table, in the table's order
SETTINGS = {"plain": "Fashion-MNIST, `fast` (10 epochs)", "quick": "2 epochs (`quick`)",
            "rts": "rotated, scaled, shifted (`fashion-mnist-rts`, `fast`)", "full": "30 epochs (`full`)",
            "own lr": "each side at its own learning rate (`fast`, chosen on a validation split)"}
#: the question each comparison answers, as the by-setting table's first column says it
QUESTIONS = {"seed − baseline": "the essay's block", "dw4 − baseline": "depthwise ×4 operators",
             "neumann − baseline": "Neumann boundary", "periodic − baseline": "periodic boundary",
             "varcoef − baseline": "variable coefficients (degree 2)",
             "varcoef=1 − baseline": "variable coefficients (degree 1)",
             "order2 − dw4": "order-≤2 operators (against free depthwise ×4 kernels)",
             "wave − baseline": "a hyperbolic network"}
BEGIN_SETTINGS = "<!-- by-setting table: written by `python benchmarks/answers.py --summary`; not edited by hand -->"
END_SETTINGS = "<!-- end of the by-setting table -->"


def _status(r: dict) -> str:
    """The strictest adjustment a comparison survives, in a table cell's words."""
    answer = r["answer"]
    for words, short in (("Holm over the document", "Holm, page"), ("BH over the document", "BH, page"),
                         ("Holm within its experiment", "experiment only")):
        if answer.endswith(words):
            return short
    return "equivalent (±0.2)" if answer.startswith("equivalent") else "not resolved"


def _signed(x: float) -> str:
    return f"{x:+.2f}".replace("-", "−")


def by_setting_table(rows: list[dict]) -> str:
    """The answer to each question asked in more than one setting, per setting: Δ [95% CI] and the strictest
    adjustment it survives; in another setting also its difference from the plain Δ (Welch) and that one's status.
    Rows and columns come from the comparisons that exist, so the table grows as experiments finish."""
    paired = {(r["setting"], r["comparison"]): r for r in rows if r["kind"] == "paired" and r["setting"] in SETTINGS}
    # a Welch row belongs to the paired row of its experiment and variant (an experiment has one reference)
    welch = {(r["experiment"], r["comparison"].split(")")[0].removeprefix("Δ(")): r
             for r in rows if r["kind"] == "welch"}
    order = list(QUESTIONS)
    asked = sorted(dict.fromkeys(c for s, c in paired if s != "plain"),
                   key=lambda c: order.index(c) if c in order else len(order))
    if not asked:
        return "(No question has been answered in a second setting yet.)"
    settings = [s for s in SETTINGS if any((s, c) in paired for c in asked)]
    lines = ["| question (Δ in points, 95% CI) | " + " | ".join(SETTINGS[s] for s in settings) + " |",
             "|:--|" + ":--|" * len(settings)]
    for comparison in asked:
        cells = []
        for s in settings:
            r = paired.get((s, comparison))
            if r is None:
                cells.append("–")
                continue
            ci = "" if r["ci_low"] is None else f" [{_signed(r['ci_low'])}, {_signed(r['ci_high'])}]"
            cell = f"{_signed(r['delta'])}{ci}, {_status(r)}"
            w = welch.get((r["experiment"], comparison.split(" − ")[0]))
            if w is not None:
                cell += f"; against plain {_signed(w['delta'])}, {_status(w)}"
            cells.append(cell)
        question = QUESTIONS.get(comparison, comparison)
        lines.append(f"| {question}: {comparison} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def results_page(text: str, rows: list[dict]) -> str:
    """docs/results.md with the page-wide p of every comparison its tables show (the "p (BH, page)" and "p (Holm,
    page)" cells) and its by-setting table as ``rows`` give them; the rest of the page as it is. A table row whose
    comparison is not in ``rows`` is an error (the page shows an answer the summary does not have)."""
    from pdeconv.experiment.report import format_p

    by = {(r["experiment"], r["comparison"]): r for r in rows}
    out, experiment, columns, reference, section = [], None, None, None, "(before the first section)"
    lines = iter(text.splitlines())
    for line in lines:
        if line == BEGIN_SETTINGS:
            out += [line, by_setting_table(rows)]
            for line in lines:  # skip the old table
                if line == END_SETTINGS:
                    break
            else:
                raise ValueError(f"docs/results.md: {BEGIN_SETTINGS!r} without {END_SETTINGS!r} after it")
            out.append(END_SETTINGS)
            continue
        if line.startswith("## "):
            section, columns = line[3:].strip(), None
            experiment = SECTIONS.get(section)
        elif line.startswith("| variant |") and "p (BH, page)" in line:
            if experiment is None:
                raise ValueError(f"docs/results.md: section {section!r} has a table with page-wide p-values but no "
                                 "experiment in answers.SECTIONS")
            columns = [c.strip() for c in line.strip("|").split("|")]
            reference = columns[2].removeprefix("Δ vs ")
        elif columns and line.startswith("| ") and not line.startswith("|:"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            variant = cells[0].split(" (")[0]
            if variant != reference:
                r = by.get((experiment, f"{variant} − {reference}"))
                if r is None:
                    raise ValueError(f"docs/results.md shows {experiment}: {variant} − {reference}, which the "
                                     "summary does not have")
                cells[columns.index("p (BH, page)")] = format_p(r["p_document_bh"])
                cells[columns.index("p (Holm, page)")] = format_p(r["p_document_holm"])
                line = "| " + " | ".join(cells) + " |"
        elif not line.startswith("|"):
            columns = None
        out.append(line)
    return "\n".join(out) + "\n"


#: the essay's block against the baseline at each training budget: (experiment, epochs, recipe)
BUDGETS = (("quick-seed", 2, "quick: 24,000 images, batch 64"), ("seed", 10, "fast"), ("full-seed", 30, "full"))


def budget(results: Path = RESULTS) -> list[dict]:
    """Δ(seed − baseline) with its 95% CI at each budget of :data:`BUDGETS` whose results.csv exists."""
    from pdeconv.experiment.stats import paired

    rows = []
    for name, epochs, recipe in BUDGETS:
        path = _where(name, results)[1] / "results.csv"
        if not path.is_file():
            continue
        acc: dict[str, dict[int, float]] = {}
        for row in _read_csv(path):
            acc.setdefault(row["variant"], {})[int(row["seed"])] = float(row["test_acc"])
        if "seed" in acc and "baseline" in acc:
            c = paired(acc["seed"], acc["baseline"])
            rows.append({"experiment": name, "epochs": epochs, "recipe": recipe, "n": c.n, "delta": 100 * c.mean,
                         "ci_low": None if c.ci is None else 100 * c.ci[0],
                         "ci_high": None if c.ci is None else 100 * c.ci[1], "p": c.p})
    return rows


def write_budget(rows: list[dict], out: Path = RESULTS) -> tuple[Path, Path]:
    """``budget.csv`` and ``budget.png``: Δ against the training budget (epochs), with 95% CIs."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from pdeconv import storage

    columns = ["experiment", "epochs", "recipe", "n", "delta", "ci_low", "ci_high", "p"]
    storage.write_csv(out / "budget.csv", columns, rows)
    fig = Figure(figsize=(5.5, 3.4), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.axhline(0.0, color="0.6", lw=0.8)
    for r in rows:
        low, high = (r["delta"], r["delta"]) if r["ci_low"] is None else (r["ci_low"], r["ci_high"])
        ax.errorbar([r["epochs"]], [r["delta"]], yerr=[[r["delta"] - low], [high - r["delta"]]], fmt="o", capsize=4,
                    color="C0")
        ax.annotate(f"{r['recipe']}, n = {r['n']}", (r["epochs"], r["delta"]), textcoords="offset points",
                    xytext=(6, 4), fontsize=7)
    ax.set_xscale("log")
    ax.set_xticks([r["epochs"] for r in rows], [str(r["epochs"]) for r in rows])
    ax.set_xticks([], minor=True)  # no log-axis minor labels such as 3×10⁰ between the budgets
    if rows:
        ax.set_xlim(min(r["epochs"] for r in rows) / 1.3, max(r["epochs"] for r in rows) * 2.2)  # room for labels
    ax.set_xlabel("training budget (epochs)")
    ax.set_ylabel("seed − baseline (points, 95% CI)")
    ax.set_title("The essay's block against ResNet-20 by budget (Fashion-MNIST)", fontsize=9)
    storage.write_figure(out / "budget.png", fig)
    return out / "budget.csv", out / "budget.png"


def summaries() -> None:
    """The learned-PDE summary of every finished run in the store, computed while its checkpoint is here."""
    from pdeconv import engine
    from pdeconv.experiment.results import learned_pde_summary

    stores = dict.fromkeys(e.store for e in EXPERIMENTS.values())
    for run in sorted(run for store in stores for run in store.glob("*/seed*")):
        if (run / engine.CONFIG).is_file() and engine.run_summary(run)["finished"]:
            summary = learned_pde_summary(run)
            print(f"{run.relative_to(ROOT)}: {'no checkpoint' if summary is None else 'ok'}", flush=True)


def status(names: list[str], seeds: int, store: Path | None = None, *, root: Path | None = None) -> list[str]:
    """One line per experiment: its runs (seeds 0 … ``seeds`` − 1 of each variant; more added by ``--target-ci``
    are not counted) finished, being trained now (another process holds the run's lock), interrupted (resumed
    from the checkpoint, or started again without one) and not started (no config.json yet). ``store``: one run
    store for all of them; ``root``: a results folder of one's own (``--results``)."""
    from pdeconv import engine
    from pdeconv.experiment.store import in_training

    lines = []
    for name in names:
        e = EXPERIMENTS[name]
        runs = store or _where(name, root)[0]
        own = e.seeds or seeds
        seeds_ = list(own) if isinstance(own, tuple) else list(range(own))
        finished, training, interrupted, pending = 0, [], [], 0
        for variant in e.variants.split(","):
            for seed in seeds_:
                run = runs / variant / f"seed{seed}"
                if not (run / engine.CONFIG).is_file():
                    pending += 1
                    continue
                summary = engine.run_summary(run)
                if summary["finished"]:
                    finished += 1
                    continue
                epochs = json.loads((run / engine.CONFIG).read_text())["config"]["epochs"]
                where = f"{variant} seed {seed} (epoch {summary['epochs']}/{epochs}"
                if in_training(run):
                    training.append(where + ")")
                else:
                    checkpoint = (run / engine.CHECKPOINT).is_file()
                    interrupted.append(where + (", resumes from its checkpoint)" if checkpoint else
                                                ", no checkpoint: starts again)"))
        total = len(seeds_) * len(e.variants.split(","))
        parts = [f"{name}: {finished}/{total} finished"]
        parts += [f"training now: {', '.join(training)}"] if training else []
        parts += [f"interrupted: {', '.join(interrupted)}"] if interrupted else []
        parts += [f"{pending} not started"] if pending else []
        lines.append("; ".join(parts))
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("names", nargs="*", help=f"experiments to run: {', '.join(EXPERIMENTS)}, or own-lr for the "
                   "re-answers at each side's own learning rate once --lr-choice has chosen (default: all)")
    p.add_argument("--seeds", type=int, default=5, help="paired seeds per variant (default: 5)")
    p.add_argument("--target-ci", type=float, default=None, help="instead: seeds until the CI is this narrow")
    p.add_argument("--max-seeds", type=int, default=10)
    p.add_argument("--threads", type=int, default=1, help="threads of every run (default: 1)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--dataset", default=None,
                   help="rerun the answers on another dataset (cifar10, cifar100, imagefolder, ...: any of pdeconv's); "
                        "the rts experiments, built on Fashion-MNIST, are left out")
    p.add_argument("--preset", default=None, help="another recipe for every experiment (default: each one's own)")
    p.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--results", default=None,
                   help="a folder of your own for the run stores and reports, laid out as results/ here (default: "
                        "this repository's results/)")
    p.add_argument("--extra", default=None, help='more `pdeconv compare` options for every experiment, e.g. '
                   '"--epochs 30 --batch-size 256"')
    p.add_argument("--list", action="store_true", help="print the commands and stop")
    p.add_argument("--status", action="store_true",
                   help="print how far each experiment has got (finished, training now, interrupted, not started)")
    p.add_argument("--summary", action="store_true",
                   help="adjust every comparison of docs/results.md over the document (Holm, BH, equivalence) from "
                        "the committed CSVs; write results/summary.csv and results/summary.md, update the page's "
                        "page-wide p-values and its by-setting table, and stop")
    p.add_argument("--budget", action="store_true",
                   help="the essay's block against the baseline at each training budget that has results: write "
                        "results/budget.csv and results/budget.png and stop")
    p.add_argument("--lr-choice", action="store_true",
                   help="each variant's best learning rate from the sweep (lr-0.1 lr-0.2 lr-0.4) by validation "
                        "accuracy: write results/lr/choice.csv, choice.md and val_acc.png and stop; then `own-lr` "
                        "runs the re-answers (lr-NAME) for the variants whose best is not their reference's "
                        "(the baseline's; dw4's for order2)")
    p.add_argument("--summaries", action="store_true",
                   help="write each finished run's learned_pde.json (kept in git; checkpoints are not) and stop")
    args = p.parse_args()
    root = Path(args.results).resolve() if args.results else RESULTS
    if args.results:  # the re-answers at each side's own rate follow that folder's own sweep
        for name in [n for n, e in EXPERIMENTS.items() if e.setting == "own lr"]:
            del EXPERIMENTS[name]
        EXPERIMENTS.update(own_lr_experiments(root / LR_CHOICE.relative_to(RESULTS)))
    if args.summary:
        rows = document_family(root)
        for path in write_summary(rows, root):
            print(f"wrote {_shown(path)}")
        if root == RESULTS:  # this repository's page quotes this repository's summary
            from pdeconv import storage

            storage.write_text(PAGE, results_page(PAGE.read_text(), rows))
            print(f"updated {_shown(PAGE)}: its tables' page-wide p and the by-setting table")
        return
    if args.budget:
        for path in write_budget(budget(root), root):
            print(f"wrote {_shown(path)}")
        return
    if args.summaries:
        summaries()
        return
    if args.lr_choice:
        rows = lr_choice(root)
        if not rows:
            p.error(f"--lr-choice: no finished sweep yet (none of {_shown(root / 'lr')}/lr-*/results.csv, which "
                    "each sweep experiment writes when all its runs are done); run `answers.py lr-0.1 lr-0.2 "
                    "lr-0.4` (`--status lr-0.1 lr-0.2 lr-0.4` shows how far it has got)")
        for path in write_lr_choice(rows, root / "lr"):
            print(f"wrote {_shown(path)}")
        return
    if "own-lr" in args.names:
        own = [n for n, e in EXPERIMENTS.items() if e.setting == "own lr"]
        if not own and not (root / LR_CHOICE.relative_to(RESULTS)).is_file():
            p.error("own-lr: no learning rate chosen yet; run `answers.py lr-0.1 lr-0.2 lr-0.4`, then "
                    "`answers.py --lr-choice`")
        if not own:
            print("# own-lr: every variant's best rate is its reference's (the baseline's; dw4's for order2): the "
                  "shared-recipe answers stand", flush=True)
        args.names = [n for name in args.names for n in (own if name == "own-lr" else [name])]
        if not args.names:
            return
    unknown = [n for n in args.names if n not in EXPERIMENTS]
    if unknown:
        p.error(f"unknown experiments {unknown}; valid ones: {', '.join(EXPERIMENTS)}")
    names = args.names or list(EXPERIMENTS)
    if args.dataset and args.dataset != "fashion-mnist":
        skipped = [n for n in names if EXPERIMENTS[n].dataset != "fashion-mnist"]
        if skipped:
            print(f"# left out on {args.dataset}: {', '.join(skipped)} (built on Fashion-MNIST)", flush=True)
        names = [n for n in names if n not in skipped]
    if args.status:
        root = Path(args.results).resolve() if args.results else None
        print("\n".join(status(names, args.seeds, root=root)))
        return
    for name in names:
        cmd = command(name, args)
        print(f"# {name}: {EXPERIMENTS[name].question}\n{shlex.join(['python', *cmd[1:]])}", flush=True)
        if not args.list:
            subprocess.run(cmd, cwd=ROOT, check=True)


if __name__ == "__main__":
    main()
