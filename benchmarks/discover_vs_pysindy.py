"""``pdeconv discover`` against PySINDy 2.1.0, side by side on identical arrays.

Cases (``CASES`` below), each at noise 0, 0.01 and 0.05 (``--noise``):

* ``burgers-pdefind``: PDE-FIND's 1-D Burgers data (``../shared/data/pdefind/burgers.mat``, or ``--burgers-file``),
  u_t = −u u_x + 0.1 u_xx;
* ``ks-pdefind``: PDE-FIND's Kuramoto–Sivashinsky file (``kuramoto_sivishinky.mat`` of PySINDy's ``examples/data``,
  1024 points × 251 frames), u_t = −u u_x − u_xx − u_xxxx, when ``--ks-file`` gives its path (``--real-files``: these
  two cases only);
* ``kdv``: ``simulate("kdv")``, u_t = −6 u u_x − u_xxx (derivatives to order 3);
* ``kuramoto-sivashinsky``: ``simulate("kuramoto-sivashinsky")``, u_t = −u u_x − u_xx − u_xxxx (order 4);
* ``convdiff``: 2-D ``simulate("convdiff", trajectories=8, steps=20, seed=1)``, linear library, order 2;
* ``burgers-2d``: 2-D ``simulate("burgers", trajectories=8, steps=20, seed=1)``, fields u, v.

Noise is added here, once per case and level, with a fixed seed: Gaussian of standard deviation
``level · std(field)`` (std over all trajectories, frames and points of that field, as ``simulate(noise=)``), and
both tools get the same noisy arrays.

* **pdeconv**: ``discover.fit(data, library=..., max_order=..., progress=False)``, defaults otherwise (form
  ``auto``, threshold 0.01, one torch thread); no tuning against the truth.
* **PySINDy** (a benchmark-only dependency; nothing in ``pdeconv`` imports it): ``PDELibrary`` (finite
  differences) and ``WeakPDELibrary`` (K = 100 and K = 1000 subdomains), function library
  ``PolynomialLibrary(degree=2, include_bias=False)`` with ``include_interaction=True`` for the nonlinear cases,
  ``PolynomialLibrary(degree=1, include_bias=False)`` with ``include_interaction=False`` for ``convdiff`` (exactly
  pdeconv's linear library: the field and its derivatives); ``STLSQ(threshold, normalize_columns=True)``, its
  other settings PySINDy's defaults. Trajectories are passed as a list (PySINDy 2.x's multiple trajectories),
  each as an array ``(*space, t, fields)``; in 2-D the space axes are in pdeconv's order ``(y, x)`` = (rows,
  columns), so PySINDy's axis ``_1`` is y and ``_2`` is x (:func:`pysindy_name`). The threshold is **tuned
  against the truth** over ``THRESHOLDS × ‖u_t‖`` (``‖u_t‖``: the norm of PySINDy's own regression target, over
  all samples; with normalised columns a coefficient is ``c_j‖θ_j‖``, on that scale); the best threshold
  minimises ``max(worst error, spurious)``. Of the two weak variants the better (same score) is reported.

Reported per case × noise × tool: the worst relative coefficient error over the true terms (|ĉ − c|/|c|; a
missing true term counts 1.0), the largest spurious coefficient relative to the largest true one, and the wall
time of the fit (``time.perf_counter`` around it; for PySINDy that of the best threshold's single fit, library
construction included, since the weak library draws its subdomains and builds its weights there, and the whole
grid search's total as well). Prints Markdown tables (every tool; pdeconv against PySINDy's best tuned variant,
with the lowest worst error PySINDy reached at any threshold and the time ratio; with ``--forms``, auto's pick
against each form forced) and appends one JSON object per row (each PySINDy row with its whole threshold grid) to
``benchmarks/results/discover_vs_pysindy.jsonl``.

    python benchmarks/discover_vs_pysindy.py              # the full benchmark (~20 minutes on 2 busy cores)
    python benchmarks/discover_vs_pysindy.py --forms      # ... and pdeconv with each form forced (diagnostic)
    python benchmarks/discover_vs_pysindy.py --no-refit   # ... and pdeconv without its rollout refit (diagnostic)
    python benchmarks/discover_vs_pysindy.py --quick      # a smoke run (seconds; numbers meaningless)
    python benchmarks/discover_vs_pysindy.py --only kdv --noise 0 0.05
    python benchmarks/discover_vs_pysindy.py --real-files --ks-file /tmp/pdefind/ks.mat   # PDE-FIND's own files
    python benchmarks/discover_vs_pysindy.py --summarize 2026-11-30T08:43:31+00:00   # a recorded run's tables
"""

from __future__ import annotations

import os

# one thread everywhere: pdeconv's fit runs on one torch thread, so PySINDy's numpy/BLAS gets one too
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _common import code_version, machine  # noqa: E402

from pdeconv.discover import Dataset, fit, load, simulate, true_equations  # noqa: E402

HERE = Path(__file__).resolve().parent
PDEFIND = HERE.parent.parent / "shared" / "data" / "pdefind" / "burgers.mat"
RESULTS = HERE / "results" / "discover_vs_pysindy.jsonl"
MISSING_PYSINDY = "PySINDy is a benchmark-only dependency: pip install pysindy==2.1.0"

#: name → (how to get the clean data, the truth, pdeconv's library, max order)
CASES: dict[str, dict] = {
    "burgers-pdefind": dict(data=("load", str(PDEFIND), {"u": "usol", "t": "t", "x": "x"}),
                            truth={"u": {"u*u_x": -1.0, "u_xx": 0.1}}, library="nonlinear", max_order=2),
    # PDE-FIND's Kuramoto–Sivashinsky file (PySINDy's examples/data/kuramoto_sivishinky.mat: uu (x 1024, t 251)),
    # run when --ks-file gives its path (it is not in this repository)
    "ks-pdefind": dict(data=("load", None, {"u": "uu", "t": "tt", "x": "x"}),
                       truth={"u": {"u*u_x": -1.0, "u_xx": -1.0, "u_xxxx": -1.0}}, library="nonlinear", max_order=4),
    "kdv": dict(data=("simulate", "kdv", {}), library="nonlinear", max_order=3),
    "kuramoto-sivashinsky": dict(data=("simulate", "kuramoto-sivashinsky", {}), library="nonlinear", max_order=4),
    "convdiff": dict(data=("simulate", "convdiff", dict(trajectories=8, steps=20, seed=1)), library="linear",
                     max_order=2),
    "burgers-2d": dict(data=("simulate", "burgers", dict(trajectories=8, steps=20, seed=1)), library="nonlinear",
                       max_order=2),
}
#: --quick: a small 1-D Burgers, a short refit; numbers meaningless
QUICK = dict(name="quick-burgers-1d", data=("simulate", "burgers-1d", dict(grid=64, zoom=2, steps=24, trajectories=2)),
             library="nonlinear", max_order=2, fit=dict(iterations=2, kernel_size=7))
NOISE = (0.0, 0.01, 0.05)
#: threshold grid, in units of ‖u_t‖ (the norm of PySINDy's regression target)
THRESHOLDS = tuple(float(x) for x in np.logspace(-4, 0, 13))
QUICK_THRESHOLDS = (1e-3, 1e-2, 1e-1)
WEAK_K = (100, 1000)
NOISE_SEED = 20261130


# ------------------------------------------------------------------------------------------------- names


def pysindy_name(name: str, components: tuple[str, ...], axes: str) -> str:
    """PySINDy 2.1.0's feature name → pdeconv's term name.

    ``components``: the field of each input feature (``x0`` → ``components[0]``); ``axes``: the letter of
    PySINDy's derivative axis ``1, 2, ...`` (its axes are the data's space axes in array order): ``"x"`` in 1-D,
    ``"yx"`` in 2-D with arrays ``(rows = y, columns = x, t, fields)``. Names: ``x0``, ``x0^2``, ``x0 x1``
    (PolynomialLibrary), ``x0_1``, ``x0_112`` (derivatives; digits name axes), and products, the monomial
    written before the derivative with no separator: ``x0x0_1``, ``x0 x1x1_12``, ``x0^2x0_1111``.
    """

    def monomial(text: str) -> list[str]:
        powers: dict[int, int] = {}
        for token in text.split():
            m = re.fullmatch(r"x(\d+)(?:\^(\d+))?", token)
            if not m:
                raise ValueError(f"cannot read PySINDy feature {name!r}")
            i = int(m.group(1))
            powers[i] = powers.get(i, 0) + int(m.group(2) or 1)
        return [components[i] + (f"^{k}" if k > 1 else "") for i, k in sorted(powers.items())]

    if name == "1":
        return "1"
    m = re.fullmatch(r"(.*?)x(\d+)_(\d+)", name)
    if not m:
        return "*".join(monomial(name))
    prefix, field, digits = m.group(1), components[int(m.group(2))], m.group(3)
    counts = {axes[int(d) - 1]: digits.count(d) for d in set(digits)}
    letters = "".join(a * counts.get(a, 0) for a in "xyz")  # pdeconv writes x, then y, then z
    return "*".join(monomial(prefix) + [f"{field}_{letters}"])


def check_names() -> None:
    """The mapping checked by hand on the names PySINDy 2.1.0 prints (run at every start; cheap)."""
    one = ("u",)
    two = ("u", "v")
    cases = [
        ("x0", one, "x", "u"), ("x0^2", one, "x", "u^2"), ("x0_1", one, "x", "u_x"), ("x0_111", one, "x", "u_xxx"),
        ("x0x0_1", one, "x", "u*u_x"), ("x0^2x0_1111", one, "x", "u^2*u_xxxx"), ("x0^2x0_11", one, "x", "u^2*u_xx"),
        ("x0 x1", two, "yx", "u*v"), ("x1^2", two, "yx", "v^2"), ("x0_2", two, "yx", "u_x"), ("x0_1", two, "yx", "u_y"),
        ("x0_12", two, "yx", "u_xy"), ("x0_22", two, "yx", "u_xx"), ("x1_11", two, "yx", "v_yy"),
        ("x1x0_1", two, "yx", "v*u_y"), ("x0x1_2", two, "yx", "u*v_x"), ("x1x1_1", two, "yx", "v*v_y"),
        ("x0 x1x1_12", two, "yx", "u*v*v_xy"), ("x1^2x0_2", two, "yx", "v^2*u_x"), ("1", two, "yx", "1"),
    ]
    for name, comps, axes, want in cases:
        got = pysindy_name(name, comps, axes)
        assert got == want, f"pysindy_name({name!r}) = {got!r}, expected {want!r}"


# ------------------------------------------------------------------------------------------------- data


def clean_data(spec: dict) -> Dataset:
    kind, *rest = spec["data"]
    if kind == "load":
        return load(rest[0], variables=rest[1])
    pde, options = rest
    return simulate(pde, progress=False, **options)


def truth_of(spec: dict) -> dict[str, dict[str, float]]:
    if "truth" in spec:
        return spec["truth"]
    return {e: {t: float(c) for t, c in terms.items()} for e, terms in true_equations(spec["data"][1]).items()}


#: the cases whose noise seeds come from their place here (the order of 2026-11-30): a case added later (ks-pdefind)
#: gets a seed of its own from a hash, so that adding one never changes another's draw
SEEDED_CASES = ("burgers-pdefind", "kdv", "kuramoto-sivashinsky", "convdiff", "burgers-2d")


def noise_seed(name: str, level: float) -> int:
    """The seed of a case's noise at a level, from the case's place in :data:`SEEDED_CASES` and the level's in
    :data:`NOISE`, so ``--only`` and ``--noise`` draw what the full benchmark draws (another level or case: a seed
    from a hash of both). (Before 2026-11-30 14:10 UTC the seed came from the case's place among the cases run:
    ``--only`` runs then drew other noise; from 2026-12-07 03:45 to 06:20 UTC, from its place in :data:`CASES`,
    where ks-pdefind had been inserted: every case after it drew other noise.)"""
    if name not in SEEDED_CASES or level not in NOISE:
        import hashlib

        return int.from_bytes(hashlib.sha256(f"{name}:{level!r}".encode()).digest()[:4], "little")
    return NOISE_SEED + 100 * SEEDED_CASES.index(name) + NOISE.index(level)


def noisy(data: Dataset, level: float, seed: int | None) -> Dataset:
    """``data`` plus Gaussian noise of std ``level · std(field)`` (over all frames), as ``simulate(noise=)``."""
    if level == 0:
        return data
    u = data.u
    std = u.std(axis=(0, 1, *range(3, u.ndim)), keepdims=True)
    rng = np.random.default_rng(seed)
    return dataclasses.replace(data, u=np.ascontiguousarray(u + level * std * rng.standard_normal(u.shape)))


def scores(equations: dict[str, dict[str, float]], truth: dict[str, dict[str, float]]) -> dict:
    """Worst relative error over the true terms (missing: 1.0) and the largest spurious |ĉ| / max |c_true|."""
    errors = {}
    for e, terms in truth.items():
        found = equations.get(e, {})
        for term, c in terms.items():
            got = found.get(term, 0.0)
            errors[f"{e}:{term}"] = abs(got - c) / abs(c) if got != 0.0 else 1.0
    largest = max(abs(c) for terms in truth.values() for c in terms.values())
    spurious, which = 0.0, None
    for e, terms in equations.items():
        for term, c in terms.items():
            if term not in truth.get(e, {}) and abs(c) / largest > spurious:
                spurious, which = abs(c) / largest, f"{e}:{term}"
    worst = max(errors.values())
    return dict(errors=errors, worst=worst, worst_term=max(errors, key=errors.get), spurious=spurious,
                spurious_term=which, score=max(worst, spurious))


# ------------------------------------------------------------------------------------------------- pdeconv


#: diagnostics (``--forms``, ``--no-refit``): a label and the fit options that replace pdeconv's defaults
DIAGNOSTICS = {"forms": [("form=strong", dict(form="strong")), ("form=weak", dict(form="weak"))],
               "no_refit": [("iterations=0", dict(iterations=0))]}


def run_pdeconv(data: Dataset, spec: dict, truth: dict, extra: dict,
                diagnostic: tuple[str, dict] | None = None) -> dict:
    """pdeconv's defaults (``diagnostic=None``), or a diagnostic: ``(label, options)`` replacing some of them."""
    label, forced = diagnostic or (None, {})
    t0 = time.perf_counter()
    result = fit(data, library=spec["library"], max_order=spec["max_order"], progress=False, **{**extra, **forced})
    seconds = time.perf_counter() - t0
    s = scores(result.equations, truth)
    return dict(tool="pdeconv" if label is None else "pdeconv (diagnostic)",
                variant=f"auto: {result.settings.form}" if label is None else label,
                seconds=seconds, equations=result.equations, form=result.settings.form, options=result.options,
                history=result.history, **s)


def run_command(data: Dataset, spec: dict, level: float, scratch: Path) -> dict:
    """The whole ``pdeconv discover fit`` command on a real-file case, as a user runs it (a fresh process: Python's
    start, the imports, loading, the fit, the prediction and the report), timed from outside; its ``time:`` line
    gives the stages. Noisy data go to a copy of the file with the noisy array in the original's place and
    orientation (checked against the original's shape)."""
    import subprocess

    import scipy.io

    path, names = spec["data"][1], spec["data"][2]
    if level:
        stored = scipy.io.loadmat(path)
        u = data.u[0, :, 0, :].T  # (x, t), as PDE-FIND stores it
        if stored[names["u"]].shape != u.shape:
            raise RuntimeError(f"{path}: {names['u']} is {stored[names['u']].shape}, the noisy copy {u.shape}")
        stored[names["u"]] = u
        path = scratch / f"noisy-{level:g}.mat"
        scipy.io.savemat(path, {k: v for k, v in stored.items() if not k.startswith("__")})
    out = scratch / f"out-{level:g}"
    cmd = [sys.executable, "-m", "pdeconv", "discover", "fit", str(path), "--library", spec["library"],
           "--max-order", str(spec["max_order"]), "--out", str(out), "--no-progress",
           *(arg for role, name in names.items() for arg in ("--var", f"{role}={name}"))]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} exited {done.returncode}: {done.stderr.strip()[-500:]}")
    line = next(ln for ln in done.stdout.splitlines() if ln.startswith("time: "))
    stages = {m.group(1): float(m.group(2)) for m in re.finditer(r"([a-z][a-z ]*?) ([0-9.]+) s", line[6:])}
    equations = {e: v["terms"] for e, v in json.loads((out / "pde.json").read_text())["equations"].items()}
    return dict(command=shlex.join(["pdeconv", *cmd[3:]]), command_seconds=seconds, command_stages=stages,
                command_equations=equations)


# ------------------------------------------------------------------------------------------------- PySINDy


def as_pysindy(data: Dataset) -> list[np.ndarray]:
    """One array ``(*space, t, fields)`` per trajectory: the same numbers, axes moved."""
    u = data.u  # (N, T, C, *space)
    d = data.space_dims
    order = (*range(2, 2 + d), 0, 1)  # (T, C, *space) → (*space, T, C)
    return [np.ascontiguousarray(np.transpose(u[n], order)) for n in range(u.shape[0])]


def grids(data: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """PySINDy's ``spatial_grid`` (*space, d) and ``spatiotemporal_grid`` (*space, T, d + 1), coordinates in array
    order (y then x in 2-D), starting at 0."""
    T = data.u.shape[1]
    axes = [np.arange(n) * h for n, h in zip(data.space, data.spacing)]
    t = np.arange(T) * data.dt
    if data.space_dims == 1:
        return axes[0], np.stack(np.meshgrid(axes[0], t, indexing="ij"), axis=-1)
    spatial = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)
    st = np.stack(np.meshgrid(*axes, t, indexing="ij"), axis=-1)
    return spatial, st


def pysindy_setup(ps, spec: dict) -> tuple:
    if spec["library"] == "linear":
        return lambda: ps.PolynomialLibrary(degree=1, include_bias=False), False
    return lambda: ps.PolynomialLibrary(degree=2, include_bias=False), True


def run_pysindy(ps, data: Dataset, spec: dict, truth: dict, variant: str, K: int | None,
                thresholds: tuple[float, ...]) -> dict:
    x = as_pysindy(data)
    spatial, st = grids(data)
    functions, interaction = pysindy_setup(ps, spec)
    order = spec["max_order"]
    axes = "x" if data.space_dims == 1 else "yx"

    def library():
        if variant == "PDELibrary":
            return ps.PDELibrary(function_library=functions(), derivative_order=order, spatial_grid=spatial,
                                 include_interaction=interaction)
        np.random.seed(0)  # the weak library draws its subdomains from numpy's global generator
        return ps.WeakPDELibrary(function_library=functions(), derivative_order=order, spatiotemporal_grid=st,
                                 include_interaction=interaction, K=K)

    # the scale of the threshold: ‖u_t‖ of PySINDy's own target (finite differences in t, or the weak integrals)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lib = library()
        if variant == "PDELibrary":
            fd = ps.FiniteDifference(axis=-2)
            targets = [fd._differentiate(xi, data.dt) for xi in x]
        else:
            targets = [lib.convert_u_dot_integral(xi) for xi in x]
    C = data.u.shape[2]
    norms = np.sqrt(sum((np.asarray(t).reshape(-1, C) ** 2).sum(0) for t in targets))
    scale = float(np.sqrt(np.mean(norms**2)))

    grid, best, total = [], None, 0.0
    for tau in thresholds:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            model = ps.SINDy(feature_library=library(), optimizer=ps.STLSQ(threshold=tau * scale,
                                                                          normalize_columns=True))
            model.fit(x, t=data.dt)
            seconds = time.perf_counter() - t0
        total += seconds
        names = [pysindy_name(n, data.components, axes) for n in model.get_feature_names()]
        if len(set(names)) != len(names):
            raise RuntimeError(f"two PySINDy features map to one pdeconv name: {names}")
        coef = model.coefficients()
        equations = {e: {n: float(c) for n, c in zip(names, coef[i]) if c != 0.0}
                     for i, e in enumerate(data.components)}
        s = scores(equations, truth)
        row = dict(threshold=tau, seconds=seconds, equations=equations, **s)
        grid.append({k: row[k] for k in ("threshold", "seconds", "worst", "spurious", "score")})
        if best is None or row["score"] < best["score"]:
            best = row
    label = variant if K is None else f"{variant} K={K}"
    return dict(tool="pysindy", variant=label, K=K, threshold_scale=scale, grid_seconds=total, grid=grid,
                n_features=len(names), **best)


# ------------------------------------------------------------------------------------------------- table


def table(rows: list[dict]) -> str:
    head = ["case", "noise", "tool", "variant", "worst rel. error (term)", "largest spurious (term)", "fit s",
            "grid s", "threshold (×‖u_t‖)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join([":--"] * 4 + ["--:"] * 5) + "|"]
    for r in rows:
        spur = f"{r['spurious']:.1e}" + (f" ({r['spurious_term']})" if r["spurious_term"] else "")
        lines.append("| " + " | ".join([
            r["case"], f"{r['noise']:g}", r["tool"], r["variant"], f"{r['worst']:.1e} ({r['worst_term']})", spur,
            f"{r['seconds']:.2f}", f"{r['grid_seconds']:.1f}" if "grid_seconds" in r else "–",
            f"{r['threshold']:.2g}" if "threshold" in r else "–",
        ]) + " |")
    return "\n".join(lines)


def diagnostics_table(rows: list[dict]) -> str:
    """pdeconv's defaults against each diagnostic (``--forms``: each form forced; ``--no-refit``: the regression
    alone): worst error / largest spurious, fit seconds."""
    labels = list(dict.fromkeys(r["variant"] for r in rows if r["tool"] == "pdeconv (diagnostic)"))
    head = ["case", "noise", "auto picks", "auto", *labels]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join([":--"] * 3 + ["--:"] * (1 + len(labels))) + "|"]
    cell = lambda r: f"{r['worst']:.1e} / {r['spurious']:.1e}, {r['seconds']:.2f} s" if r else "–"  # noqa: E731
    keys = dict.fromkeys((r["case"], r["noise"]) for r in rows)
    for case, noise in keys:
        here = {r["variant"]: r for r in rows if (r["case"], r["noise"]) == (case, noise)}
        auto = next((r for v, r in here.items() if v.startswith("auto")), None)
        lines.append("| " + " | ".join([case, f"{noise:g}", auto["form"] if auto else "–", cell(auto),
                                         *(cell(here.get(label)) for label in labels)]) + " |")
    return "\n".join(lines)


def sources_digest() -> str:
    """SHA-256 (first 12 hex digits) of ``pdeconv.discover``'s sources as imported: the code revision says
    ``-dirty`` when the working tree has edits, this says which."""
    import hashlib

    import pdeconv.discover as package

    h = hashlib.sha256()
    for path in sorted(Path(package.__file__).parent.glob("*.py")):
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:12]


def comparison_table(records: list[dict]) -> str:
    """Per case × noise: pdeconv against PySINDy's best tuned variant (lowest max(worst, spurious)), the lowest
    worst error PySINDy reached at any threshold of any variant, and the time ratio of the two fits."""
    head = ["case", "noise", "pdeconv worst / spurious", "PySINDy's best variant", "its worst / spurious",
            "PySINDy's lowest worst error (any τ, any variant)", "fit s: pdeconv / PySINDy best", "time ratio"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join([":--", ":--", "--:", ":--"] + ["--:"] * 4) + "|"]
    for case, noise in dict.fromkeys((r["case"], r["noise"]) for r in records):
        here = [r for r in records if (r["case"], r["noise"]) == (case, noise)]
        ours = next(r for r in here if r["tool"] == "pdeconv")
        theirs = [r for r in here if r["tool"] == "pysindy"]
        best = min((r for r in theirs if r["K"] is None or r.get("reported")), key=lambda r: r["score"])
        lowest = min(g["worst"] for r in theirs for g in r["grid"])
        lines.append("| " + " | ".join([
            case, f"{noise:g}", f"{ours['worst']:.1e} / {ours['spurious']:.1e}", best["variant"],
            f"{best['worst']:.1e} / {best['spurious']:.1e}", f"{lowest:.1e}",
            f"{ours['seconds']:.2f} / {best['seconds']:.2f}", f"{ours['seconds'] / best['seconds']:.2f}",
        ]) + " |")
    return "\n".join(lines)


def command_table(records: list[dict]) -> str:
    """Real-file cases: the whole command's time and where it goes (``start``: Python's start and the imports,
    what the command's own stages do not cover), and pdeconv's fit time against PySINDy's weak fit at its best
    threshold (the better weak K, as reported)."""
    rows = [r for r in records if r["tool"] == "pdeconv" and "command_seconds" in r]
    stages = list(dict.fromkeys(k for r in rows for k in r["command_stages"]))
    head = ["case", "noise", "whole command s", "start", *stages, "fit s: pdeconv / PySINDy weak", "ratio"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join([":--", ":--"] + ["--:"] * (len(head) - 2)) + "|"]
    for r in rows:
        weak = next(w for w in records if (w["case"], w["noise"]) == (r["case"], r["noise"])
                    and w["tool"] == "pysindy" and w["K"] is not None and w.get("reported"))
        start = r["command_seconds"] - sum(r["command_stages"].values())
        lines.append("| " + " | ".join([
            r["case"], f"{r['noise']:g}", f"{r['command_seconds']:.2f}", f"{start:.2f}",
            *(f"{r['command_stages'][k]:.2f}" if k in r["command_stages"] else "–" for k in stages),
            f"{r['seconds']:.2f} / {weak['seconds']:.2f}", f"{r['seconds'] / weak['seconds']:.2f}",
        ]) + " |")
    return "\n".join(lines)


def print_tables(records: list[dict]) -> None:
    """The three tables of one run's records: every tool (the better weak K only), pdeconv against PySINDy's
    best, and (with ``--forms`` or ``--no-refit``) pdeconv's defaults against its diagnostics."""
    shown = [r for r in records
             if r["tool"] == "pdeconv" or r["tool"] == "pysindy" and (r["K"] is None or r.get("reported"))]
    print(table(shown))
    print()
    print(comparison_table(records))
    if any(r["tool"] == "pdeconv (diagnostic)" for r in records):
        print()
        print(diagnostics_table([r for r in records if r["tool"].startswith("pdeconv")]))
    if any("command_seconds" in r for r in records):
        print()
        print(command_table(records))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="one small case, noise 0, 3 thresholds (seconds; a smoke run)")
    p.add_argument("--only", nargs="+", choices=list(CASES), metavar="NAME", help=f"cases to run: {', '.join(CASES)}")
    p.add_argument("--noise", nargs="+", type=float, metavar="LEVEL", help="noise levels (default 0 0.01 0.05)")
    p.add_argument("--results", type=Path, default=RESULTS, help="JSON-lines file to append the rows to")
    p.add_argument("--forms", action="store_true",
                   help="also fit pdeconv with form=strong and form=weak forced (a diagnostic of auto's choice)")
    p.add_argument("--no-refit", action="store_true",
                   help="also fit pdeconv without its rollout refit (iterations=0): what the regression alone gives, "
                   "and what the refit costs")
    p.add_argument("--burgers-file", type=Path, default=PDEFIND, metavar="PATH",
                   help="PDE-FIND's burgers.mat (usol, t, x) for the burgers-pdefind case")
    p.add_argument("--ks-file", type=Path, metavar="PATH",
                   help="PDE-FIND's kuramoto_sivishinky.mat (uu, tt, x; PySINDy's examples/data) for the ks-pdefind "
                   "case, which runs only when this is given")
    p.add_argument("--real-files", action="store_true",
                   help="only the real-file cases (burgers-pdefind, and ks-pdefind with --ks-file)")
    p.add_argument("--weak-k", nargs="+", type=int, metavar="K", default=list(WEAK_K),
                   help=f"PySINDy WeakPDELibrary subdomain counts to run (default {' '.join(map(str, WEAK_K))})")
    p.add_argument("--noise-rng-seed", type=int, metavar="S",
                   help="draw every case's noise from numpy's default_rng(S) (the issue's measurements used 0) "
                   "instead of the per-case seeds")
    p.add_argument("--no-command", action="store_true",
                   help="do not time the whole `pdeconv discover fit` command on the real-file cases")
    p.add_argument("--summarize", metavar="DATE",
                   help="print the tables of the run recorded in --results with this date (its 'date' field); no fits")
    a = p.parse_args(argv)
    if a.summarize:
        records = [json.loads(line) for line in open(a.results) if line.strip()]
        records = [r for r in records if r.get("date") == a.summarize]
        if not records:
            print(f"error: no rows dated {a.summarize} in {a.results}", file=sys.stderr)
            return 2
        print(f"{records[0]['command']}, {records[0]['date']}, code {records[0]['code']}", file=sys.stderr)
        print_tables(records)
        return 0
    try:
        import pysindy as ps
    except ImportError:
        print(MISSING_PYSINDY, file=sys.stderr)
        return 2
    check_names()
    torch.set_num_threads(1)
    if a.quick:
        cases = {QUICK["name"]: QUICK}
        levels, thresholds, weak_k = (0.0,), QUICK_THRESHOLDS, (100,)
    else:
        names = a.only or (["burgers-pdefind", "ks-pdefind"] if a.real_files else list(CASES))
        if a.ks_file is None and "ks-pdefind" in names:
            if a.only:
                print("error: the ks-pdefind case needs --ks-file PATH", file=sys.stderr)
                return 2
            names.remove("ks-pdefind")
        cases = {n: CASES[n] for n in names}
        files = {"burgers-pdefind": a.burgers_file, "ks-pdefind": a.ks_file}
        for n in cases:
            if n in files:
                cases[n] = dict(cases[n], data=("load", str(files[n]), cases[n]["data"][2]))
        levels, thresholds, weak_k = tuple(a.noise) if a.noise else NOISE, THRESHOLDS, tuple(a.weak_k)
    if "burgers-pdefind" in cases and not a.burgers_file.exists():
        print(f"error: {a.burgers_file} not found (the PDE-FIND Burgers data); leave it out with --only",
              file=sys.stderr)
        return 2
    base = dict(
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        command=" ".join(shlex.quote(s) for s in ["python", "benchmarks/discover_vs_pysindy.py",
                                                  *(sys.argv[1:] if argv is None else argv)]),
        code=code_version(), discover_sources=sources_digest(), machine=machine(torch.device("cpu")), torch_threads=1,
        blas_threads={v: os.environ.get(v) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")},
        torch=torch.__version__, numpy=np.__version__, pysindy=ps.__version__, quick=a.quick,
        thresholds=list(thresholds),
    )
    records: list[dict] = []
    total = len(cases) * len(levels)
    step = 0
    for name, spec in cases.items():
        clean = clean_data(spec)
        truth = truth_of(spec)
        for level in levels:
            step += 1
            seed = a.noise_rng_seed if a.noise_rng_seed is not None else noise_seed(name, level)
            data = noisy(clean, level, seed)
            load_start = os.getloadavg()
            here = dict(case=name, noise=level, noise_seed=seed, shape=list(data.u.shape),
                        dt=data.dt, spacing=list(data.spacing), truth=truth, library=spec["library"],
                        max_order=spec["max_order"])
            r = run_pdeconv(data, spec, truth, spec.get("fit", {}))
            if spec["data"][0] == "load" and not a.no_command:
                with tempfile.TemporaryDirectory() as scratch:
                    r.update(run_command(data, spec, level, Path(scratch)))
            found = [dict(here, **r)]
            wanted = [d for flag in ("forms", "no_refit") if getattr(a, flag) for d in DIAGNOSTICS[flag]]
            diagnostic = [dict(here, **run_pdeconv(data, spec, truth, spec.get("fit", {}), d)) for d in wanted]
            strong = run_pysindy(ps, data, spec, truth, "PDELibrary", None, thresholds)
            found.append(dict(here, **strong))
            weak = [run_pysindy(ps, data, spec, truth, "WeakPDELibrary", k, thresholds) for k in weak_k]
            best_weak = min(weak, key=lambda w: w["score"])
            for w in weak:
                w["reported"] = w is best_weak
            load_end = os.getloadavg()
            note = (f"load average {load_start[0]:.2f} at the start of the case, {load_end[0]:.2f} at its end "
                    f"({os.cpu_count()} cores)")
            rows = [dict(base, load=note, **row) for row in found[:2] + [dict(here, **w) for w in weak] + diagnostic]
            records += rows
            a.results.parent.mkdir(parents=True, exist_ok=True)
            with open(a.results, "a") as f:
                for row in rows:
                    f.write(json.dumps(row) + "\n")
            print(f"[{step}/{total}] {name} noise {level:g}: pdeconv {r['seconds']:.1f} s ({r['form']}) worst "
                  f"{r['worst']:.1e} spurious {r['spurious']:.1e}; PDELibrary worst {strong['worst']:.1e} "
                  f"spurious {strong['spurious']:.1e}; weak {best_weak['variant']} worst {best_weak['worst']:.1e} "
                  f"spurious {best_weak['spurious']:.1e}", file=sys.stderr, flush=True)
    print_tables(records)
    print(f"appended {len(records)} rows to {a.results} (every tool, both weak K, any diagnostics)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
