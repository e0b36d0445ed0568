"""Train every (variant, seed) of an experiment: skip finished runs, resume unfinished ones, then report.

A directory holding an experiment with other settings is refused unless ``force``. Under ``torchrun`` every
process runs the same loop (each run is DDP); rank 0 decides (which runs are finished, which need more seeds)
and writes the tables.

Several ``compare`` commands may share a run store (``runs``, :mod:`pdeconv.experiment.store`): a run another
process is training (its lock is held) is left for last, then waited for (polling, so that under ``torchrun`` no
collective outlasts its timeout) — and skipped if that process finished it (unless ``force``).

What a rerun must reproduce is kept with the experiment: the thread count of its first run on a CPU (results on a
CPU depend on it; recorded in ``experiment.json`` and taken by every later run unless ``threads`` is given), and
the precision ``amp="auto"`` measured (each run's ``config.json``; a new seed takes its variant's). The time the
job has left is estimated from the epochs measured (:mod:`pdeconv.eta`) and printed after the first epoch and as
runs finish; on a terminal one progress bar carries it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from pdeconv import engine, run
from pdeconv.distributed import agree, on_main, start, stop
from pdeconv.errors import PdeconvError
from pdeconv.eta import Progress
from pdeconv.experiment import store
from pdeconv.experiment.report import write_report
from pdeconv.experiment.results import collect, learned_pde_summary, run_dir
from pdeconv.experiment.stats import Paired, paired
from pdeconv.experiment.store import (
    claim_directory,
    in_training,
    lock_run,
    ran_on_cpu_with,
    record_threads,
    recorded_threads,
    run_state,
    unlock_run,
)

__all__ = ["CompareResult", "check_seed_options", "compare"]


@dataclass
class CompareResult:
    """Where the experiment's files are, its per-run rows, the printed table, and each variant's paired
    comparison with the reference (:class:`~pdeconv.experiment.stats.Paired`; ``reached``: whether its CI met
    ``target_ci``, when one was set)."""

    out: Path
    rows: list[dict[str, Any]]
    table: str
    reference: str = "baseline"
    comparisons: dict[str, Paired] = field(default_factory=dict)
    reached: dict[str, bool] | None = None
    verdicts: list[str] = field(default_factory=list)


def _recorded_amp_choices(directories: Sequence[Path]) -> list[dict[str, Any]]:
    """The ``amp="auto"`` measurements the runs in ``directories`` recorded (config.json's ``amp_choice``)."""
    found = []
    for directory in directories:
        try:
            choice = json.loads((directory / engine.CONFIG).read_text()).get("amp_choice")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(choice, dict):
            found.append(choice)
    return found


def _epochs_done(directory: Path) -> int:
    try:
        return engine.run_summary(directory)["epochs"]
    except (OSError, ValueError, KeyError):
        return 0


def check_seed_options(seeds: Sequence[int], target_ci: float | None, max_seeds: int) -> None:
    """``ValueError`` (one line) for seeds or automatic-seed settings that cannot work."""
    if not seeds:
        raise PdeconvError("compare needs at least one seed")
    if len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise PdeconvError(f"seeds must be distinct and non-negative; got {list(seeds)}")
    if target_ci is not None:
        if not target_ci > 0:
            raise PdeconvError(f"`target_ci` must be a positive number of accuracy points, e.g. 0.15; got {target_ci}")
        if max_seeds < 2:
            raise PdeconvError(f"`max_seeds` must be at least 2 (a CI needs two paired seeds); got {max_seeds}")
        if len(seeds) > max_seeds:
            raise PdeconvError(f"{len(seeds)} starting seeds exceed `max_seeds` {max_seeds}")


def _paired_of(out: Path, variant: str, reference: str, plan: dict[str, list[int]], runs: Path | None) -> Paired:
    """The paired comparison that decides whether to add seeds: of validation accuracy when the runs hold out a
    validation split (so the choice never reads the test set), else of test accuracy."""
    summaries = {v: {s: engine.run_summary(run_dir(out, v, s, runs)) for s in plan[v]} for v in (variant, reference)}
    key = "val_acc" if all("val_acc" in r for rs in summaries.values() for r in rs.values()) else "test_acc"
    accuracy = {v: {s: r[key] for s, r in rs.items()} for v, rs in summaries.items()}
    return paired(accuracy[variant], accuracy[reference])


def _more_seeds(out: Path, plan: dict[str, list[int]], reference: str, target_ci: float,
                max_seeds: int, runs: Path | None) -> dict[str, list[int]]:
    """The plan with one more seed for each variant whose paired CI is wider than the target (up to the cap);
    the reference gets every seed any variant has."""
    grown = {v: list(s) for v, s in plan.items()}
    for variant in plan:
        if variant == reference:
            continue
        half = _paired_of(out, variant, reference, plan, runs).half_width
        if (half is None or 100 * half > target_ci) and len(plan[variant]) < max_seeds:
            grown[variant].append(next(s for s in range(len(plan[variant]) + max_seeds) if s not in plan[variant]))
    grown[reference] = sorted(set().union(*grown.values()))
    return grown


def compare(
    variants: Sequence[str],
    seeds: Sequence[int],
    out: str | Path,
    *,
    base: engine.TrainConfig,
    force: bool = False,
    reference: str | None = None,
    target_ci: float | None = None,
    max_seeds: int = 10,
    runs: str | Path | None = None,
    command: str | None = None,
    say: Callable[..., None] = print,
) -> CompareResult:
    """Train every (variant, seed) with the settings of ``base`` and write results, report and plots.

    ``variants`` are pdeconv variant specs (``"seed+neumann"`` allowed); the run directory of each is
    ``out/runs/VARIANT/seedN``; each run is :func:`pdeconv.run.variant_config` of ``base`` (seed s pairs the runs
    of every variant: :func:`pdeconv.run.train`). Each variant is compared with ``reference`` (default:
    ``baseline`` when listed, else the first variant) by the paired difference of test accuracy per seed.

    ``target_ci`` (accuracy points, e.g. 0.15): automatic seeds. After ``seeds``, each variant whose 95% CI of
    Δ is wider than ± ``target_ci`` gets one more seed (the reference too), round after round, until every
    variant meets the target or has ``max_seeds`` seeds; finished runs are reused.

    ``runs``: a run store shared by several experiments (``RUNS/VARIANT/seedN``; default ``out/runs``), so a run
    with the same settings and seed (the baseline above all) is trained once; the store records its settings
    in ``runs.json`` and refuses others, like the experiment directory (the thread count stays the experiment's:
    its ``experiment.json``). ``command``: the command line, for the
    report's record of how it was made. ``say``: what prints the experiment's progress and hints (``print``'s
    signature; the command line passes one that shows flags for the parameters they name).
    """
    from pdeconv.models import get_variant, variant_training

    variants = list(dict.fromkeys(variants))
    for v in variants:  # unknown names and contradicting parts fail before anything is trained
        get_variant(v)
        variant_training(v)
    if not variants:
        raise PdeconvError("compare needs at least one variant")
    seeds = list(seeds)
    check_seed_options(seeds, target_ci, max_seeds)
    if reference is None:
        reference = "baseline" if "baseline" in variants else variants[0]
    elif reference not in variants:
        raise PdeconvError(f"`reference` {reference!r} is not among the variants ({', '.join(variants)}); add it "
                         "to `variants` or name one of them")
    out = Path(out)
    runs = Path(runs) if runs is not None else None
    # under torchrun: one process group for the whole experiment, every decision made by rank 0 and shared
    procs = start(base.device, deterministic=base.deterministic)

    def claim() -> None:
        claim_directory(out, base, force)
        if runs is not None:
            claim_directory(runs, base, force, meta_name="runs.json")

    on_main(claim, main=procs.main)
    say = say if procs.main else (lambda *args, **kwargs: None)
    plan = {v: list(seeds) for v in variants}
    trained: set[tuple[str, int]] = set()  # this call's runs: with force, each is retrained once, not per round
    # one thread count for every run and rerun of the experiment (results on a CPU depend on it): the first run's
    every = [run_dir(out, v, s, runs) for v in variants for s in seeds]
    recorded = None if force else on_main(lambda: recorded_threads(out, every), main=procs.main)
    if base.threads == "auto" and recorded is not None:
        base = replace(base, threads=recorded)
        say(f"threads: {recorded}, the count this experiment's first run used (experiment.json; `threads` N "
            "to change it)", flush=True)
    elif base.threads != "auto" and recorded not in (None, base.threads):
        say(f"threads: {base.threads} as given; this experiment's earlier runs used {recorded} (experiment.json), "
            "so the new runs' accuracies may differ from what they would have been with theirs", flush=True)
    if procs.main and base.amp == "auto":  # the precision measured for earlier seeds holds for new ones
        engine.restore_amp_choices(_recorded_amp_choices(every))
    progress = Progress("compare", bar=base.progress and procs.main, say=lambda line: say(line, flush=True))

    def fix_threads(directory: Path) -> None:
        """After the experiment's first run on a CPU: its thread count is the experiment's (recorded)."""
        nonlocal base
        if base.threads != "auto":
            return
        threads = on_main(lambda: ran_on_cpu_with(directory), main=procs.main)
        if threads is not None:
            on_main(lambda: record_threads(out, threads), main=procs.main)
            base = replace(base, threads=threads)
            say(f"threads: {threads}, chosen from the idle cores by this first run; every later run and rerun of "
                "this experiment uses it (experiment.json; `threads` N to change it)", flush=True)

    def one_run(variant: str, seed: int, head: str, wait: bool) -> bool:
        """Train (or skip) one run; ``False`` when another process holds it and not ``wait``."""
        directory = run_dir(out, variant, seed, runs)
        # every try is one short collective under torchrun: a blocking wait on rank 0 would outlast the others'
        # (the other ranks get rank 0's descriptor number: only whether it is None matters to them)
        while (fd := on_main(lambda: lock_run(directory), main=procs.main)) is None:
            if not wait:
                return False
            time.sleep(store.LOCK_POLL)
        try:
            state = on_main(lambda: run_state(directory), main=procs.main)
            if state == "finished" and not force:
                say(f"{head} {variant} seed {seed}: finished {'meanwhile' if wait else 'earlier'}, skipped",
                    flush=True)
                progress.drop((variant, seed))
                return True
            config = replace(run.variant_config(base, variant, seed, directory),
                             resume=state == "partial" and not force, force=force or state == "stale")
            doing = "resuming" if config.resume else ("training again (unfinished, no checkpoint here)"
                                                      if state == "stale" and not force else "training")
            threads = "" if config.threads == "auto" else f" ({config.threads} thread{'s' * (config.threads != '1')})"
            say(f"{head} {variant} seed {seed}: {doing} → {directory}{threads}", flush=True)
            if base.compile:  # each variant is a new graph: start from an empty compile cache, not its limit
                torch._dynamo.reset()
            if procs.main:
                if (variant, seed) not in progress.estimate:  # left for last, and ours to train after all
                    progress.add((variant, seed), variant, config.epochs, 0 if force else _epochs_done(directory))
                progress.start((variant, seed))
            record = (lambda r: progress.epoch((variant, seed), r)) if procs.main else None
            run.train(config, on_epoch_end=record)
            progress.finish((variant, seed))
            fix_threads(directory)
            if procs.main:  # the learned PDE now, while the checkpoint is here: a session stopped before the
                learned_pde_summary(directory)  # experiment's end would lose it with the (uncommitted) checkpoint
            return True
        finally:
            if procs.main:
                unlock_run(fd)

    def expect(todo: list[tuple[str, int]]) -> None:
        """What the estimate counts: the runs to train, less those finished and those another process holds."""
        for variant, seed in todo:
            directory = run_dir(out, variant, seed, runs)
            state = run_state(directory)
            if (state == "finished" and not force) or (directory.is_dir() and in_training(directory)):
                continue
            progress.add((variant, seed), variant, base.epochs, 0 if force else _epochs_done(directory))

    try:
        with progress.printing():
            while True:
                todo = [(v, s) for v in variants for s in plan[v] if (v, s) not in trained]
                if procs.main:
                    expect(todo)
                busy = []  # runs another process is training: last, waited for
                for i, (variant, seed) in enumerate(todo, 1):
                    trained.add((variant, seed))
                    if not one_run(variant, seed, f"[{i}/{len(todo)}]", wait=False):
                        say(f"[{i}/{len(todo)}] {variant} seed {seed}: another process is training it; left for last",
                            flush=True)
                        progress.drop((variant, seed))
                        busy.append((variant, seed))
                for variant, seed in busy:
                    say(f"[waiting] {variant} seed {seed}: for the other process to finish it", flush=True)
                    one_run(variant, seed, "[waited]", wait=True)
                if target_ci is None:
                    break
                grown = on_main(lambda p=plan: _more_seeds(out, p, reference, target_ci, max_seeds, runs),
                                main=procs.main)
                if grown == plan:
                    break
                added = [f"{v} +{len(grown[v]) - len(plan[v])}" for v in variants if len(grown[v]) > len(plan[v])]
                say(f"95% CI of Δ wider than ±{target_ci:g} points: more seeds ({', '.join(added)})", flush=True)
                plan = grown
    finally:
        progress.close()
    result = CompareResult(out, [], "", reference)
    if procs.main:
        rows = collect(out, variants, plan, base, runs=runs)
        report = write_report(out, rows, base, reference=reference, target_ci=target_ci, max_seeds=max_seeds,
                              command=command)
        result = CompareResult(out, rows, report.table, reference, report.comparisons, report.reached,
                               report.verdicts)
        say(report.table, flush=True)
        say("\n".join(["", *report.verdicts, ""]), flush=True)
        say(f"wrote {out / 'results.csv'}, {out / 'report.md'} and plots", flush=True)
    agree(None)  # every rank waits for rank 0's tables, then leaves together
    stop(procs)
    return result
