"""Benchmark ``pdeconv discover``: recover PDE-Net's PDEs from simulated data on the CPU.

Settings (``SETTINGS`` below; ``docs/discover.md`` says what each copies from the papers):

* ``burgers``: PDE-Net 2.0's 2-D Burgers, ν = 0.05, 32×32 observed from 128², δt = 0.01, noise 0.001;
* ``convdiff``: PDE-Net's convection–diffusion with constant coefficients, 50×50, δt = 0.015, noise 0.001;
* ``convdiff-variable``: PDE-Net's variable-coefficient convection–diffusion, 50×50 from 200², δt = 0.015,
  noise 0.001, coefficients as Fourier fields of degree 6.

For each: relative error of every true coefficient (constants: |ĉ − c| / |c|; fields: ‖ĉ(x,y) − c(x,y)‖₂ /
‖c(x,y)‖₂ over the grid), the largest spurious coefficient (max |ĉ| of a term the true PDE lacks), the relative
L2 prediction error after 100 and 400 δt from noise-free held-out initial conditions (fresh seeds), and the
wall time of the fit. Prints a table and appends one JSON line to ``benchmarks/results/discover.jsonl``.

    python benchmarks/discover.py            # the full benchmark (minutes)
    python benchmarks/discover.py --quick    # a tiny smoke run (seconds)
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time

import numpy as np
import torch
from _common import code_version, machine

from pdeconv.discover import fit, simulate, true_equations
from pdeconv.discover.refit import prediction_error

#: name → (simulation options, fit options). Test trajectories use the same simulation with other seeds.
SETTINGS: dict[str, tuple[dict, dict]] = {
    "burgers": (
        dict(pde="burgers", noise=1e-3, trajectories=8, steps=20, seed=1),
        dict(library="nonlinear", iterations=50),
    ),
    "convdiff": (
        dict(pde="convdiff", noise=1e-3, trajectories=8, steps=20, seed=1),
        dict(library="linear", iterations=50),
    ),
    "convdiff-variable": (
        dict(pde="convdiff-variable", noise=1e-3, trajectories=16, steps=20, seed=1),
        dict(library="linear", coefficients="variable", degree=6, iterations=50),
    ),
}
TEST = dict(trajectories=4, seed=1000, horizons=(100, 400))
#: --quick: tiny grids and few iterations, to check that the script runs (numbers meaningless)
QUICK = dict(sim=dict(grid=16, zoom=2, trajectories=3, steps=6), fit=dict(iterations=2, kernel_size=7, degree=2),
             horizons=(4, 8))


def _grid(data) -> tuple[np.ndarray, np.ndarray]:
    H, W = data.u.shape[-2:]
    return np.meshgrid(np.arange(W) * data.dx, np.arange(H) * data.dy)


def coefficient_errors(result, pde: str) -> tuple[dict[str, float], float]:
    """Relative error of each true coefficient (1.0 if the term was dropped) and the largest spurious |ĉ|."""
    X, Y = _grid(result.data)
    fields = result.fields
    names, comps = result.model.names, list(result.model.components)
    errors, spurious = {}, 0.0
    truth = true_equations(pde)
    for e, terms in truth.items():
        for term, c in terms.items():
            true = c(X, Y) if callable(c) else np.full(X.shape, float(c))
            if term not in names or not (result.model.mask[comps.index(e), names.index(term)] > 0).any():
                errors[f"{e}:{term}"] = 1.0
                continue
            got = fields[comps.index(e), names.index(term)]
            errors[f"{e}:{term}"] = float(np.linalg.norm(got - true) / np.linalg.norm(true))
    for i, e in enumerate(comps):
        for j, term in enumerate(names):
            if term not in truth.get(e, {}):
                spurious = max(spurious, float(np.abs(fields[i, j]).max()))
    return errors, spurious


def run(name: str, sim: dict, options: dict, horizons: tuple[int, ...], progress: bool) -> dict:
    pde = sim["pde"]
    kw = {k: v for k, v in sim.items() if k != "pde"}
    t0 = time.perf_counter()
    data = simulate(pde, progress=progress, **kw)
    t_sim = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = fit(data, progress=progress, **options)
    t_fit = time.perf_counter() - t0
    errors, spurious = coefficient_errors(result, pde)
    test_kw = dict(kw, noise=0.0, steps=max(horizons), trajectories=TEST["trajectories"], seed=TEST["seed"])
    test = simulate(pde, progress=progress, **test_kw)
    err, _ = prediction_error(result.model, torch.from_numpy(test.u), test.dt, result.substeps)
    return dict(
        setting=name, pde=pde, simulate=sim, fit=result.options, equations=result.equations,
        coefficient_error=errors, worst_coefficient_error=max(errors.values()), largest_spurious=spurious,
        prediction_error={str(h): float(err[h]) for h in horizons}, fit_seconds=t_fit, simulate_seconds=t_sim,
        history=result.history, substeps=result.substeps,
    )


def table(results: list[dict]) -> str:
    horizons = list(results[0]["prediction_error"])
    head = ["setting", "term", "rel. error", "largest spurious"] + [f"pred. error @{h}" for h in horizons] + ["fit s"]
    rows = [head, ["---"] * len(head)]
    for r in results:
        for i, (term, e) in enumerate(r["coefficient_error"].items()):
            first = i == 0
            rows.append([
                r["setting"] if first else "", term, f"{e:.2e}",
                f"{r['largest_spurious']:.1e}" if first else "",
                *[f"{r['prediction_error'][h]:.2e}" if first else "" for h in horizons],
                f"{r['fit_seconds']:.0f}" if first else "",
            ])
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="a tiny smoke run (seconds; numbers meaningless)")
    p.add_argument("--only", choices=list(SETTINGS), action="append", help="run only these settings")
    p.add_argument("--results", default=os.path.join(os.path.dirname(__file__), "results", "discover.jsonl"),
                   help="JSON-lines file to append to (default: benchmarks/results/discover.jsonl)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    a = p.parse_args(argv)
    results = []
    for name in a.only or list(SETTINGS):
        sim, options = SETTINGS[name]
        horizons = TEST["horizons"]
        if a.quick:
            sim, horizons = dict(sim, **QUICK["sim"]), QUICK["horizons"]
            options = dict(options, **{k: v for k, v in QUICK["fit"].items() if k != "degree" or "degree" in options})
        print(f"== {name}", flush=True)
        r = run(name, sim, options, horizons, progress=not a.no_progress)
        print(f"   fit {r['fit_seconds']:.1f} s: {r['equations']}", flush=True)
        results.append(r)
    print(table(results))
    record = dict(
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        command=" ".join(["python", "benchmarks/discover.py", *(sys.argv[1:] if argv is None else argv)]),
        code=code_version(),
        machine={**machine(torch.device("cpu")), "fit_threads": 1},
        torch=torch.__version__, numpy=np.__version__, quick=a.quick, results=results,
    )
    os.makedirs(os.path.dirname(os.path.abspath(a.results)), exist_ok=True)
    with open(a.results, "a") as f:
        f.write(json.dumps(record) + "\n")
    print(f"appended to {a.results}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
