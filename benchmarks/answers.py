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

Several of these commands may run at once (one per free core, e.g. ``answers.py boundary varcoef`` and
``answers.py order operators``): ``compare`` locks each run of the shared store, so none is trained twice, and a
run that another command is training is waited for at the end.

``--threads`` (default 1) fixes the thread count of every run: a run's accuracy then does not depend on the
load of the machine, so the experiments can run in the background next to other work (their timing columns
then measure that load too, and are no speed claims).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"
STORE = RESULTS / "store-fast"


STORE_RTS = RESULTS / "store-rts"


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
        "baseline,neumann,periodic", dataset="fashion-mnist-rts", store=STORE_RTS, amp="bf16",
    ),
    "rts-varcoef": Experiment(
        "Variable coefficients on rotated and scaled images",
        "variable coefficients … enable the ConvNet to learn to rotate and scale the image",
        "baseline,varcoef=1,varcoef", dataset="fashion-mnist-rts", store=STORE_RTS, amp="bf16",
    ),
    "rts-seed": Experiment(
        "The essay's block and depthwise ×4 operators on rotated, scaled and shifted images",
        "Here is the modified Bottleneck … depthwise ×4 … with variable coefficients",
        "baseline,seed,dw4", dataset="fashion-mnist-rts", store=STORE_RTS, amp="bf16",
    ),
    "operators": Experiment(
        "How many operators per channel: depthwise ×1, ×2, ×4, ×9 against the full 3×3 convolution",
        "there can only be at most 9 linearly independent kernels … I'd go with ×4",
        "baseline,dw=1,dw=2,dw4,dw=9",
    ),
}


def command(name: str, args: argparse.Namespace) -> list[str]:
    e = EXPERIMENTS[name]
    cmd = [sys.executable, "-m", "pdeconv", "compare", "--preset", "fast", "--variants", e.variants,
           "--reference", e.reference, "--runs", str(e.store.relative_to(ROOT)), "--out",
           str((RESULTS / name).relative_to(ROOT)), "--threads", str(args.threads), "--no-progress"]
    cmd += ["--dataset", e.dataset] if e.dataset != "fashion-mnist" else []
    cmd += ["--amp", e.amp] if e.amp else []
    if args.target_ci is not None:
        cmd += ["--seeds", "auto", "--target-ci", str(args.target_ci), "--max-seeds", str(args.max_seeds)]
    else:
        cmd += ["--seeds", str(args.seeds)]
    return cmd + (["--data-dir", args.data_dir] if args.data_dir else [])


def summaries() -> None:
    """The learned-PDE summary of every finished run in the store, computed while its checkpoint is here."""
    from pdeconv import engine
    from pdeconv.experiment.results import learned_pde_summary

    for run in sorted([*STORE.glob("*/seed*"), *STORE_RTS.glob("*/seed*")]):
        if (run / engine.CONFIG).is_file() and engine.run_summary(run)["finished"]:
            summary = learned_pde_summary(run)
            print(f"{run.relative_to(ROOT)}: {'no checkpoint' if summary is None else 'ok'}", flush=True)


def status(names: list[str], seeds: int, store: Path | None = None) -> list[str]:
    """One line per experiment: its runs (seeds 0 … ``seeds`` − 1 of each variant; more added by ``--target-ci``
    are not counted) finished, being trained now (another process holds the run's lock), interrupted (resumed
    from the checkpoint, or started again without one) and not started (no config.json yet)."""
    from pdeconv import engine
    from pdeconv.experiment.compare import in_training

    lines = []
    for name in names:
        e = EXPERIMENTS[name]
        runs = store or e.store
        finished, training, interrupted, pending = 0, [], [], 0
        for variant in e.variants.split(","):
            for seed in range(seeds):
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
        total = seeds * len(e.variants.split(","))
        parts = [f"{name}: {finished}/{total} finished"]
        parts += [f"training now: {', '.join(training)}"] if training else []
        parts += [f"interrupted: {', '.join(interrupted)}"] if interrupted else []
        parts += [f"{pending} not started"] if pending else []
        lines.append("; ".join(parts))
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("names", nargs="*", help=f"experiments to run: {', '.join(EXPERIMENTS)} (default: all)")
    p.add_argument("--seeds", type=int, default=5, help="paired seeds per variant (default: 5)")
    p.add_argument("--target-ci", type=float, default=None, help="instead: seeds until the CI is this narrow")
    p.add_argument("--max-seeds", type=int, default=10)
    p.add_argument("--threads", type=int, default=1, help="threads of every run (default: 1)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--list", action="store_true", help="print the commands and stop")
    p.add_argument("--status", action="store_true",
                   help="print how far each experiment has got (finished, training now, interrupted, not started)")
    p.add_argument("--summaries", action="store_true",
                   help="write each finished run's learned_pde.json (kept in git; checkpoints are not) and stop")
    args = p.parse_args()
    if args.summaries:
        summaries()
        return
    unknown = [n for n in args.names if n not in EXPERIMENTS]
    if unknown:
        p.error(f"unknown experiments {unknown}; valid ones: {', '.join(EXPERIMENTS)}")
    if args.status:
        print("\n".join(status(args.names or list(EXPERIMENTS), args.seeds)))
        return
    for name in args.names or EXPERIMENTS:
        cmd = command(name, args)
        print(f"# {name}: {EXPERIMENTS[name].question}\n{shlex.join(['python', *cmd[1:]])}", flush=True)
        if not args.list:
            subprocess.run(cmd, cwd=ROOT, check=True)


if __name__ == "__main__":
    main()
