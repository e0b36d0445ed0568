"""The ``pdeconv`` command: ``train | compare | probe | analyze | discover | demo | doctor``.

The CLI only parses arguments and calls floor-2 (or demo) functions; everything here is also a Python
call. Errors a user can fix (:class:`pdeconv.errors.PdeconvError`: bad names, malformed files, settings that
cannot work; and the operating system's file errors) print one line and exit with 2; set ``PDECONV_DEBUG=1`` to
see the traceback instead. Any other exception is a bug and shows its traceback.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import replace

from pdeconv import __version__
from pdeconv.errors import PdeconvError, for_command_line

#: name → (one-line help, builder): the builder adds the subcommand's options to its parser and sets
#: ``func(args) -> int | None`` on it.
_COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]] = {}


def command(name: str, help: str) -> Callable:  # noqa: A002 - argparse's word
    """Register a subcommand builder. Builders import what their options list (torch, for most) inside, and only
    the chosen command's builder runs (:func:`build_parser`): ``pdeconv --help`` imports no torch."""

    def register(add: Callable[[argparse.ArgumentParser], None]) -> Callable[[argparse.ArgumentParser], None]:
        _COMMANDS[name] = (help, add)
        return add

    return register


class UsageError(PdeconvError):
    """An error in what the user asked for; printed as one line, exit code 2."""


# -------------------------------------------------------------------------------------------------- train

# TrainConfig fields the commands set themselves (or that compare sets per run)
_ENGINE_SKIP = {"model", "variant", "penalty_weight", "out", "seed"}


def _add_engine_options(p: argparse.ArgumentParser, *, skip: set[str]) -> None:
    """One option per TrainConfig field, with its help and choices; default None = "not given"."""
    import typing
    from dataclasses import MISSING, fields

    from pdeconv.engine import TrainConfig

    hints = typing.get_type_hints(TrainConfig)
    flags = {f.name: "--" + f.name.replace("_", "-") for f in fields(TrainConfig)}
    for f in fields(TrainConfig):
        if f.name in skip:
            continue
        flag = flags[f.name]
        default = None if f.default is MISSING else f.default
        help_ = for_command_line(f.metadata.get("help", ""), flags).replace("%", "%%")  # argparse formats with %
        if default is not None and "(default:" not in help_:  # None: not given, the help says what happens then
            help_ += f" (default: {default})"
        if hints[f.name] is bool:
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_)
            continue
        kind = next((t for t in (int, float, str) if t in typing.get_args(hints[f.name]) or hints[f.name] is t), str)
        p.add_argument(flag, type=kind, default=None, choices=f.metadata.get("choices"), help=help_)


def _given(args: argparse.Namespace, skip: set[str]) -> dict:
    from dataclasses import fields

    from pdeconv.engine import TrainConfig

    return {f.name: getattr(args, f.name) for f in fields(TrainConfig)
            if f.name not in skip and getattr(args, f.name, None) is not None}


def _check_model(model: str | None, variant: str | None = None) -> None:
    from pdeconv.models import get_variant, list_models, variant_training

    if model is not None and model not in list_models():
        raise UsageError(f"unknown model {model!r}; choose one of: {', '.join(list_models())}")
    if variant is not None:
        get_variant(variant)
        variant_training(variant)  # two rates or two penalty weights in one spec


def _variant_names() -> str:
    """The named variants and the fields a variant can set, for --help."""
    from pdeconv.models.variants import PARAMETERS, VARIANTS

    return f"{', '.join(VARIANTS)}; combine with + and FIELD=VALUE, FIELD one of {', '.join(PARAMETERS)}"


@command("train", "train one model (single process, or DDP under torchrun)")
def _add_train(p: argparse.ArgumentParser) -> None:
    from pdeconv.run import PRESETS

    p.description = (
        "Train a pdeconv model on a dataset. Same command under "
        "`torchrun --nproc_per_node=K -m pdeconv train ...` for DistributedDataParallel."
    )
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="start from a settings bundle, e.g. fast ("
                   + PRESETS["fast"].description.replace("%", "%%") + "); explicit options override it")
    p.add_argument("--model", default=None, help="model name (pdeconv.models.list_models(); default: pde_resnet20)")
    p.add_argument("--variant", default="baseline",
                   help=f"variant, e.g. seed or seed+neumann or dw=2 (default: baseline). Named: {_variant_names()}")
    p.add_argument("--penalty-weight", type=float, default=None,
                   help="hyperbolicity penalty weight (default: the variant's own)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--out", default=None, help="run directory (default: runs/MODEL-VARIANT-seedN)")
    _add_engine_options(p, skip=_ENGINE_SKIP)
    p.set_defaults(func=_train)


def _train(args: argparse.Namespace) -> int:
    from pdeconv import run
    from pdeconv.eta import Progress

    _check_model(args.model, args.variant)
    config = run.make_config(model=args.model, variant=args.variant, preset=args.preset, seed=args.seed,
                             penalty_weight=args.penalty_weight, **_given(args, _ENGINE_SKIP))
    config = replace(config, out=args.out or f"runs/{config.model}-{args.variant}-seed{args.seed}")
    if os.environ.get("RANK", "0") == "0":
        print(f"settings: {'preset ' + args.preset if args.preset else 'no preset'}: {run.describe_config(config)}",
              flush=True)
    main_rank = os.environ.get("RANK", "0") == "0"
    progress = Progress("train")  # the time left, printed after the first epoch (the epoch bars are the engine's)
    progress.add(config.out, config.variant, config.epochs)
    progress.start(config.out)
    summary = run.train(config, on_epoch_end=(lambda r: progress.epoch(config.out, r)) if main_rank else None)
    if summary.get("test_acc") is not None and os.environ.get("RANK", "0") == "0":  # under torchrun: rank 0 says it
        print(f"final test accuracy {summary['test_acc']:.2%} after {summary['epochs']} epochs; files in {config.out}")
    return 0


# -------------------------------------------------------------------------------------------------- compare

@command("compare", "the main job: train variants × seeds, write results.csv, report.md and plots")
def _add_compare(p: argparse.ArgumentParser) -> None:
    from pdeconv.run import PRESETS

    p.description = (
        "An honest ablation of the essay's ideas: every variant against a reference, seed by seed "
        "(paired). With no training option: the quick preset (" + PRESETS["quick"].description + "). A preset "
        "applies when named, or when no training option is given; options you give are never mixed with a "
        "preset you did not name. Rerunning skips finished runs and resumes unfinished ones."
    )
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="settings bundle (default: quick when no training option is given, else none)")
    p.add_argument("--model", default=None, help="model name (default: the preset's, else pde_resnet20)")
    p.add_argument("--variants", default=None,
                   help=f"comma-separated variants (default: the preset's). Named: {_variant_names()}")
    p.add_argument("--reference", default=None,
                   help="the variant every other is compared with (default: baseline if listed, else the first)")
    p.add_argument("--seeds", default=None,
                   help="number of seeds N (seeds 0..N-1), a list like 0,3,7, or auto (with --target-ci: 5 seeds, "
                   "then more where the CI is wider than the target) (default: the preset's, else 5)")
    p.add_argument("--target-ci", type=float, default=None,
                   help="with --seeds auto: the wanted half-width of each Δ's 95%% CI, in accuracy points, e.g. 0.15")
    p.add_argument("--max-seeds", type=int, default=10, help="with --seeds auto: at most this many seeds (default: 10)")
    p.add_argument("--out", default=None, help="experiment directory (default: runs/compare-PRESET, else runs/compare)")
    p.add_argument("--runs", default=None, metavar="DIR",
                   help="a run store shared by experiments with the same settings: a run (variant, seed) in it is "
                   "trained once and reused by every experiment that lists it; several compare commands may use it "
                   "at once (a run another one is training is left for last and waited for) (default: OUT/runs)")
    _add_engine_options(p, skip=_ENGINE_SKIP | {"resume"})
    p.set_defaults(func=_compare)


def _seeds(text: str | int) -> list[int]:
    try:
        if isinstance(text, int) or "," not in text:
            n = int(text)
            if n < 1:
                raise ValueError
            return list(range(n))
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise UsageError(f"--seeds must be a positive count like 3, a list like 0,1,2 or auto; got {text!r}") from None


def _compare(args: argparse.Namespace) -> int:
    from pdeconv import run
    from pdeconv.engine import settings_of
    from pdeconv.experiment import compare
    from pdeconv.experiment.compare import check_seed_options

    given = _given(args, _ENGINE_SKIP | {"resume"})
    force = given.pop("force", False)
    # options that say what is trained (not where or how fast): given any, no preset is taken for the rest
    training = sorted(k for k in given if k not in settings_of("placement")) + (["model"] if args.model else [])
    preset_name = args.preset or (None if training else "quick")
    preset = run.PRESETS[preset_name] if preset_name else run.Preset("")
    variants = [v.strip() for v in (args.variants or preset.variants).split(",") if v.strip()]
    for v in variants:
        _check_model(args.model, v)
    auto = str(args.seeds).strip().lower() == "auto"
    if auto != (args.target_ci is not None):
        raise UsageError("--seeds auto and --target-ci go together: e.g. --seeds auto --target-ci 0.15")
    seeds = list(range(5)) if auto or (args.seeds is None and preset_name is None) else _seeds(
        args.seeds or preset.seeds)
    check_seed_options(seeds, args.target_ci, args.max_seeds)
    base = run.make_config(model=args.model, preset=preset_name, **given)
    out = args.out or (f"runs/compare-{preset_name}" if preset_name else "runs/compare")
    if os.environ.get("RANK", "0") == "0":
        why = (f"preset {preset_name}" + ("" if args.preset else " (no training option given)") if preset_name
               else f"no preset (you gave --{training[0].replace('_', '-')}); defaults for the rest")
        print(f"settings: {why}: {run.describe_config(base)}", flush=True)
        from pdeconv.models import variant_training
        from pdeconv.models.variants import TRAINING_PARAMETERS

        spec_key = {setting: name for name, setting in TRAINING_PARAMETERS.items()}  # penalty_weight → penalty
        own = {v: variant_training(v) for v in variants}
        own = {v: ", ".join(f"{spec_key[k]} {value:g}" for k, value in t.items()) for v, t in own.items() if t}
        if own:
            print("  where a variant sets its own: " + "; ".join(f"{v}: {t}" for v, t in own.items()), flush=True)
    command = " ".join(shlex.quote(a) for a in ["pdeconv", *args.argv])
    compare(variants, seeds, out, base=base, force=force, reference=args.reference, target_ci=args.target_ci,
            max_seeds=args.max_seeds, runs=args.runs, command=command,
            say=lambda line, **kw: print(for_command_line(line, args.flags), **kw))
    if preset_name == "quick" and os.environ.get("RANK", "0") == "0":
        print("This is the quick demo's budget. The essay's questions at a larger one (ResNet-20 to about 93.5%, "
              "5 paired seeds per question): docs/results.md")
    return 0


# -------------------------------------------------------------------------------------------------- demo


@command("demo", "pictures and GIFs of the PDE view (translation, heat, boundary, rotation, dilation)")
def _add_demo(p: argparse.ArgumentParser) -> None:
    from pdeconv import demos

    p.description = (
        "Small, fast demonstrations of the essay's claims; each writes PNG/GIF files to --out."
    )
    p.add_argument("name", choices=sorted(demos.DEMOS), help="which demo to run")
    p.add_argument("--out", default="runs/demo", help="output directory (default: runs/demo)")
    p.add_argument("--size", type=int, default=None, help="image size in pixels (default: the demo's own)")
    p.add_argument("--steps", type=int, default=None, help="number of layers / time steps (default: the demo's own)")
    p.set_defaults(func=lambda a: demos.run(a.name, out=a.out, size=a.size, steps=a.steps) and 0)


# -------------------------------------------------------------------------------------------------- probe


@command("probe", "test one of the essay's predictions directly: small synthetic tasks (rotation, transport, "
         "boundary) or trained runs (truncation)")
def _add_probe(p: argparse.ArgumentParser) -> None:
    from pdeconv.probes import PROBES

    p.description = (
        "A mechanism probe: its prediction (printed first, written in pdeconv.probes before any run), "
        "arms compared seed by seed on generated data, and whether the prediction held; writes probe.json, "
        "results.csv and report.md to --out."
    )
    p.add_argument("name", choices=sorted(PROBES), help="which probe")
    p.add_argument("--runs", nargs="+", default=None, metavar="DIR",
                   help="for a probe of trained runs (truncation): the pdeconv train run directories it reads")
    p.add_argument("--seeds", type=int, default=5, help="paired seeds (default: 5)")
    p.add_argument("--out", default=None, help="output directory (default: runs/probe-NAME)")
    p.add_argument("--quick", action="store_true", help="fewer training steps: a smoke test, not a result")
    p.add_argument("--threads", default="auto", help="CPU threads: a count or auto (the idle cores; default)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bar")

    def run(a: argparse.Namespace) -> int:
        from pdeconv import probes, runtime

        runtime.set_threads(a.threads)
        probe = probes.PROBES[a.name]
        if probe.needs_runs and a.runs is None:
            raise UsageError(f"the {a.name} probe needs --runs DIR [DIR ...]: the trained runs it reads (run "
                             "directories of `pdeconv train`)")
        if not probe.needs_runs and a.runs is not None:
            raise UsageError(f"--runs goes only with a probe of trained runs; the {a.name} probe trains its own "
                             "models")
        print(f"prediction: {probe.prediction}", flush=True)
        result = probes.run_probe(a.name, seeds=a.seeds, out=a.out, quick=a.quick, progress=a.progress, runs=a.runs)
        quick = " (--quick: a smoke test, not a result)" if a.quick else ""
        print(f"outcome{quick}: the prediction {'held' if result.held else 'did not hold'}. {result.verdict}.")
        print(f"wrote {', '.join(str(f) for f in result.files)}")
        return 0

    p.set_defaults(func=run)


# -------------------------------------------------------------------------------------------------- analyze


@command("analyze", "read the PDE a ConvNet has learned: order spectra, operators, hyperbolicity, depthwise spans")
def _add_analyze(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Analyse each spatial convolution of a training run, a checkpoint, a pdeconv model "
        "(random init) or a torchvision classifier (weights=None) as differential operators; writes "
        "analysis.json, summary.md and PNG figures to --out and prints a table."
    )
    p.add_argument(
        "source", nargs="?", metavar="CHECKPOINT_OR_MODEL_NAME",
        help="run directory or checkpoint of `pdeconv train`, or a pdeconv model name (e.g. pde_resnet20)",
    )
    p.add_argument("--torchvision", metavar="NAME", help="analyse this torchvision classifier instead")
    p.add_argument("--variant", help="variant of a pdeconv model name, e.g. dw4 or seed+neumann")
    p.add_argument("--in-chans", type=int, help="input channels of a pdeconv model name")
    p.add_argument("--num-classes", type=int, help="classes of a pdeconv or torchvision model name")
    p.add_argument("--weights", metavar="FILE",
                   help="a state dict (torch.save(model.state_dict())) for a model name or a --torchvision model, "
                   "e.g. torchvision's pretrained weights saved beforehand")
    p.add_argument("--layer", help="layer whose first-order matrices are drawn (default: the first C→C 3×3 conv, "
                   "else the first depthwise 3×3 one, else the first spatial conv)")
    p.add_argument("--h", type=float, default=1.0, help="grid spacing of the moments (default: 1, pixels)")
    p.add_argument("--image-size", type=int, help="grid of the coefficient fields' samples (default: 32)")
    p.add_argument("--out", default="runs/analyze", help="output directory (default: runs/analyze)")

    def run(a: argparse.Namespace) -> int:
        from pdeconv import analysis

        model = analysis.load_model(
            a.source,
            torchvision=a.torchvision,
            variant=a.variant,
            in_chans=a.in_chans,
            num_classes=a.num_classes,
            weights=a.weights,
        )
        result = analysis.analyze_model(model, h=a.h, image_size=a.image_size)
        paths = analysis.write_report(result, model, a.out, layer=a.layer)
        print(result.summary_table(short=True))
        print(f"wrote {', '.join(path.name for path in paths)} to {a.out}")
        return 0

    p.set_defaults(func=run)


# -------------------------------------------------------------------------------------------------- discover


@command("discover", "the inverse problem: simulate PDE data, or learn the PDE behind solution data")
def _add_discover(p: argparse.ArgumentParser) -> None:
    from pdeconv import discover  # torch-free until a fit or simulation runs
    from pdeconv.discover.dataset import BOUNDARY_CONDITIONS
    from pdeconv.discover.formats import ROLES
    from pdeconv.discover.library import KINDS

    p.description = (
        "`simulate` writes reference solutions to an .npz file; `fit` learns u_t = Σ c·term from one "
        "with moment-constrained filters, writes pde.json, report.md and plots to --out and prints the equation."
    )
    steps = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    s = steps.add_parser("simulate", help="write solutions of a preset PDE (1-D to 3-D) to an .npz file")
    s.add_argument("--pde", required=True, choices=list(discover.PDES),
                   help="; ".join(f"{name}: {spec.summary}" for name, spec in discover.PDES.items()))
    s.add_argument("--out", required=True, metavar="FILE.npz", help="output file")
    s.add_argument("--grid", help="observed grid: N, HxW or DxHxW (default: the preset's)")
    s.add_argument("--dims", type=int, choices=(1, 2, 3),
                   help="space dimensions, for presets that run in several (heat: --grid 64 --dims 1)")
    s.add_argument("--steps", type=int, help="time steps per trajectory (frames = steps + 1)")
    s.add_argument("--dt", type=float, help="time between frames")
    s.add_argument("--noise", type=float, default=0.0, help="Gaussian noise, as a fraction of the data's std")
    s.add_argument("--trajectories", type=int, help="number of random initial conditions")
    s.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    s.add_argument("--zoom", type=int, help="solve on a grid this many times finer, keep every zoom-th point")
    s.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="override a coefficient (repeatable); names: " + "; ".join(
                       f"{name} {', '.join(spec.params) or '(none: its coefficients are fixed)'}"
                       for name, spec in discover.PDES.items()))
    s.add_argument("--no-progress", action="store_true", help="no progress bar")

    def run_simulate(a: argparse.Namespace) -> int:
        params = {}
        for item in a.param:
            name, _, value = item.partition("=")
            try:
                params[name.strip()] = float(value)
            except ValueError:
                raise UsageError(f"--param takes NAME=VALUE with a number, e.g. nu=0.05; got {item!r}") from None
        path = discover.simulate_to_file(
            a.pde, a.out, params=params, grid=a.grid, steps=a.steps, dt=a.dt, noise=a.noise,
            trajectories=a.trajectories, seed=a.seed, zoom=a.zoom, dims=a.dims, progress=not a.no_progress,
        )
        print(f"wrote {path}")
        return 0

    s.set_defaults(func=run_simulate)

    f = steps.add_parser("fit", help="learn the PDE behind DATA; writes pde.json, report.md, plots")
    f.add_argument("data", metavar="DATA",
                   help="solution data: .npz, MATLAB .mat or HDF5 .h5 (see docs/discover.md for the formats)")
    f.add_argument("--var", dest="variables", action="append", default=[], metavar="ROLE=NAME",
                   help="for .mat/.h5 files, the array of each role (repeatable): u (the solution), t, x, and y, z "
                   "for 2-D, 3-D (coordinate vectors or single spacings), e.g. --var u=usol --var t=t --var x=x")
    f.add_argument("--axes", metavar="ORDER",
                   help="u's axis order, letters of n (trajectories), t (time), c (fields), z, y, x: xt for u stored "
                   "(x, t) as PDE-FIND's usol, tx for (t, x), ntyx (default: an .npz's own 'axes' or layout; the "
                   "order the coordinates' lengths fit; when several do, the one a quick fit of u_t explains)")
    complex_group = f.add_mutually_exclusive_group()
    complex_group.add_argument("--real", dest="complex_part", action="store_const", const="real",
                               help="complex u: fit its real part")
    complex_group.add_argument("--abs", dest="complex_part", action="store_const", const="abs",
                               help="complex u: fit its modulus |u|")
    f.add_argument("--bc", choices=list(BOUNDARY_CONDITIONS),
                   help="boundary condition of .mat/.h5 data (default: periodic); an .npz states its own")
    f.add_argument("--out", required=True, metavar="DIR", help="output directory")
    f.add_argument("--library", default="linear",
                   help=f"candidate terms, comma-separated from {', '.join(KINDS)} (default: linear)")
    f.add_argument("--coefficients", default="constant", choices=["constant", "variable"],
                   help="a number per term, or a smooth field per term (default: constant)")
    f.add_argument("--degree", type=int, help="degree of variable coefficient fields (default: 6)")
    f.add_argument("--max-order", type=int, default=2, help="highest derivative order (default: 2)")
    f.add_argument("--kernel-size", type=int, default=11, help="filter size, odd (default: 11)")
    f.add_argument("--rollout", type=int, default=10, help="time steps per training window (default: 10)")
    f.add_argument("--substeps", type=int, help="RK4 steps per dt (default: enough for stability)")
    f.add_argument("--iterations", type=int, default=50, help="L-BFGS iterations of the rollout refit (default: 50)")
    f.add_argument("--l1", type=float, default=1e-3, help="L1 penalty on normalised coefficients (default: 1e-3)")
    f.add_argument("--threshold", type=float, default=1e-2,
                   help="prune terms explaining less than this share of u_t (default: 0.01)")
    f.add_argument("--weighting", default="0.05", metavar="QUANTILE|none",
                   help="down-weight under-resolved samples; 'none' for uniform weights (default: 0.05)")
    f.add_argument("--holdout", type=int, help="trajectories kept out of the fit for the prediction error")
    f.add_argument("--fixed-moments", action="store_true", help="keep the filters' free moments at zero")
    f.add_argument("--form", default="auto", choices=["auto", "strong", "weak"],
                   help="regression on pointwise derivatives (strong), on integrals against test functions (weak), "
                        "or both and keep the one that predicts the data better (default: auto)")
    f.add_argument("--support", type=int, metavar="M",
                   help="weak form: test-function half-width in grid points along space (default: from the data)")
    f.add_argument("--time-support", type=int, metavar="M",
                   help="weak form: test-function half-width in frames (default: from the data)")
    f.add_argument("--test-functions", type=int, default=4096, metavar="N",
                   help="weak form: about N test functions per equation, shifts on a regular grid (default: 4096)")
    f.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    f.add_argument("--no-progress", action="store_true", help="no progress bar")

    def run_fit(a: argparse.Namespace) -> int:
        try:
            weighting = None if a.weighting.lower() == "none" else float(a.weighting)
        except ValueError:
            raise UsageError(f"--weighting takes a quantile in (0, 1] or 'none'; got {a.weighting!r}") from None
        variables: dict[str, str] = {}
        for item in a.variables:
            role, eq, name = (part.strip() for part in item.partition("="))
            if not (eq and role in ROLES and name):
                raise UsageError(f"--var takes ROLE=NAME with ROLE one of {', '.join(ROLES)}, e.g. --var u=usol; "
                                 f"got {item!r}")
            if role in variables:
                raise UsageError(f"--var {role}= given twice ({variables[role]!r} and {name!r})")
            variables[role] = name
        result, paths = discover.fit_file(
            a.data, a.out, variables=variables or None, axes=a.axes, complex_part=a.complex_part, bc=a.bc,
            library=a.library, coefficients=a.coefficients, degree=a.degree, max_order=a.max_order,
            kernel_size=a.kernel_size, rollout=a.rollout, substeps=a.substeps, iterations=a.iterations, l1=a.l1,
            threshold=a.threshold, weighting=weighting, holdout=a.holdout, learn_moments=not a.fixed_moments,
            form=a.form, support=a.support, time_support=a.time_support, test_functions=a.test_functions,
            seed=a.seed, progress=not a.no_progress,
        )
        print(for_command_line(discover.summary(result, paths), a.flags))
        if result.failed:  # printed as an error, and a status of its own: 3
            print(f"pdeconv discover: error: {for_command_line(result.warning, a.flags)}", file=sys.stderr)
            return 3
        return 0

    f.set_defaults(func=run_fit)


# -------------------------------------------------------------------------------------------------- doctor


@command("doctor", "check that this machine runs pdeconv's paths (GPU, AMP, channels-last, compile, NCCL)")
def _add_doctor(p: argparse.ArgumentParser) -> None:
    p.description = (
        "One line per check: every variant trains a step in float32, bf16/fp16 autocast and "
        "channels-last (on the GPU when one is visible, and on the CPU), optionally torch.compile, and with two "
        "or more GPUs a 2-process NCCL compare. Exit code 1 if any check failed."
    )
    p.add_argument("--variants", default=None, help="comma-separated variants (default: all)")
    p.add_argument("--compile", action="store_true", help="also check torch.compile (slow: it compiles)")
    p.add_argument("--no-cpu", action="store_true", help="on a GPU machine, skip the CPU checks")

    def run(a: argparse.Namespace) -> int:
        from pdeconv.doctor import run_checks
        from pdeconv.models import get_variant

        variants = [v.strip() for v in a.variants.split(",")] if a.variants else None
        for v in variants or []:
            get_variant(v)
        checks = run_checks(variants=variants, compile=a.compile, cpu=not a.no_cpu)
        failed = [c for c in checks if c.status == "FAIL"]
        print(f"{len(checks) - len(failed)} of {len(checks)} checks passed or skipped; {len(failed)} failed")
        return 1 if failed else 0

    p.set_defaults(func=run)


# -------------------------------------------------------------------------------------------------- main


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: what was wrong and where to look, no usage dump."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The ``pdeconv`` parser; given ``argv``, only the command it names gets its options (the others are listed
    with their help), so that the import of what a command's options list waits until it is chosen."""
    parser = _Parser(
        prog="pdeconv",
        description="ConvNets from the PDE perspective: train, compare, analyze, discover, demo.",
    )
    parser.add_argument("--version", action="version", version=f"pdeconv {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    chosen = None if argv is None else next((a for a in argv if not a.startswith("-")), "")
    for name, (help_, add) in _COMMANDS.items():
        p = sub.add_parser(name, help=help_)
        if chosen is None or name == chosen:
            add(p)
    return parser


def _flags(parser: argparse.ArgumentParser, command: str | None) -> dict[str, str]:
    """Parameter → flag of the options of ``command``'s parser (its own and its sub-commands'), for messages that
    name parameters (:func:`pdeconv.errors.for_command_line`): an option's ``dest`` is the parameter's name, its
    longest option string the flag (``--progress`` of ``--progress/--no-progress``); a parameter that several flags
    set (``complex_part``: ``--real``, ``--abs``) maps to them all, ``--real or --abs``."""
    flags: dict[str, list[str]] = {}
    todo = [parser]
    while todo:
        p = todo.pop()
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                todo += [sub for name, sub in action.choices.items() if p is not parser or name == command]
            elif action.option_strings:
                names = [s for s in action.option_strings if not s.startswith("--no-")] or action.option_strings
                flag = max(names, key=len)
                if flag not in flags.setdefault(action.dest, []):
                    flags[action.dest].append(flag)
    return {dest: " or ".join(names) for dest, names in flags.items()}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    args.argv = argv  # the command line as given, for records (compare's report)
    args.flags = _flags(parser, args.command)  # what the library's messages name in backquotes, as flags here
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _showwarning(args.flags, warnings.showwarning)
            rc = args.func(args)
    except KeyboardInterrupt:
        print("pdeconv: interrupted", file=sys.stderr)
        return 130
    except (PdeconvError, OSError) as e:  # what the user can fix; anything else is a bug: its traceback shows
        if os.environ.get("PDECONV_DEBUG"):
            raise
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"pdeconv {args.command}: error: {for_command_line(msg, args.flags)}", file=sys.stderr)
        return 2
    return int(rc or 0)


def _showwarning(flags: dict[str, str], show: Callable) -> Callable:
    """``show`` (``warnings.showwarning``) for warnings worded with flags instead of parameters: a warning the
    library gives a Python caller names `train_subset`, the command line's user reads --train-subset."""

    def shown(message, category, filename, lineno, file=None, line=None):
        show(for_command_line(str(message), flags), category, filename, lineno, file, line)

    return shown


if __name__ == "__main__":
    raise SystemExit(main())
