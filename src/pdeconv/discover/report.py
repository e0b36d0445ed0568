"""Write what a fit found: ``pde.json``, ``fields.npz`` (variable coefficients), ``report.md`` and PNG plots.

``pde.json``: ``{"equations": {"u": {"terms": {"u_x": c, ...}, "variable": [...]}, ...}, ...}`` in the sense
``u_t = Σ c · term`` (x along the last axis, the width; y along the height axis; z along the first space axis of
3-D data); a variable coefficient appears with the mean of its field and is listed under ``"variable"``; the fields
themselves are in ``fields.npz`` (``fields (C, J, *space)``, ``equations (C,)``, ``terms (J,)``, ``x (W,)``,
``y (H,)`` and ``z (D,)`` as the data have them).
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from pdeconv import storage
from pdeconv.discover.fit import Fit
from pdeconv.stencil import AXES

__all__ = ["format_equations", "pde_json", "strict_json", "variable_terms", "write_report"]


def finite_or_null(obj):
    """``obj`` with every NaN or infinite float (Python or NumPy, at any depth) replaced by ``None``, NumPy
    scalars and arrays as Python numbers and lists: what strict JSON can hold."""
    if isinstance(obj, dict):
        return {str(k): finite_or_null(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_null(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return finite_or_null(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def strict_json(obj, **kwargs) -> str:
    """``obj`` as strict JSON (RFC 8259): non-finite numbers become ``null``, never ``NaN``/``Infinity``."""
    return json.dumps(finite_or_null(obj), allow_nan=False, **kwargs)


def _number(c: float) -> str:
    return f"{c:.6g}"


def format_equations(equations: dict[str, dict[str, float]], variable: dict[str, list[str]] | None = None,
                     space_dims: int = 2) -> str:
    """``u_t = 0.6·u_x + 0.8·u_y − u*u_x``, one line per field; ``c(x,y)`` marks a variable coefficient (its mean;
    ``c(x)`` in 1-D, ``c(x,y,z)`` in 3-D)."""
    variable = variable or {}
    where = "(" + ",".join(("x", "y", "z")[:space_dims]) + ")"
    lines = []
    for field, terms in equations.items():
        parts = []
        for name, c in terms.items():
            coef = _number(abs(c)) + (where if name in variable.get(field, []) else "")
            body = coef if name == "1" else f"{coef}·{name}"
            parts.append(("−" if c < 0 else "+", body))
        if not parts:
            lines.append(f"{field}_t = 0")
            continue
        text = ("−" if parts[0][0] == "−" else "") + parts[0][1]
        text += "".join(f" {s} {b}" for s, b in parts[1:])
        lines.append(f"{field}_t = {text}")
    return "\n".join(lines)


def variable_terms(fit: Fit) -> dict[str, list[str]]:
    """Terms whose field kept a non-constant part, per equation."""
    m = fit.model
    if m.basis.shape[0] == 1:
        return {}
    varying = (m.mask[..., 1:] > 0).any(-1)
    return {e: [n for j, n in enumerate(m.names) if varying[i, j]] for i, e in enumerate(m.components)}


def pde_json(fit: Fit) -> dict:
    """The content of ``pde.json`` (see the module docstring)."""
    variable = variable_terms(fit)
    eqs = {}
    for e, terms in fit.equations.items():
        eqs[e] = {"terms": dict(terms)}
        if fit.settings.coefficients == "variable":
            eqs[e]["variable"] = variable.get(e, [])
    d = fit.data
    out = {
        "equations": eqs,
        "components": list(d.components),
        "grid": _grid(d),
        "options": fit.options,
        "explained_share": fit.explained,
    }
    if fit.failed:
        out["failed"] = fit.warning
    if d.note:
        out["axes"] = d.note
    if fit.settings.coefficients == "variable":
        out["fields"] = "fields.npz"
    if fit.error is not None:
        out["prediction_error"] = {"trajectories": fit.error_source, "relative_l2": [float(e) for e in fit.error]}
    return out


def _grid(d) -> dict:
    """``pde.json``'s grid: points and spacing per axis (2-D: ``H``, ``W``, ``dx``, ``dy``, as before 1-D/3-D)."""
    names = {1: ("W",), 2: ("H", "W"), 3: ("D", "H", "W")}[d.space_dims]
    grid = {"space_dims": d.space_dims} if d.space_dims != 2 else {}
    grid |= dict(zip(names, d.space, strict=True))
    grid |= {k: v for k, v in (("dx", d.dx), ("dy", d.dy), ("dz", d.dz)) if v is not None}
    return grid | {"dt": d.dt, "bc": d.bc}


def _coordinates(d) -> dict[str, np.ndarray]:
    """``x``, ``y``, ``z`` grid coordinates as the data have them."""
    return {name: np.arange(n) * h for name, n, h in zip(reversed(AXES[d.space_dims]), reversed(d.space),
                                                          reversed(d.spacing), strict=True)}


def _snapshots(fit: Fit, path: str) -> None:
    if fit.data.space_dims == 1:
        return _space_time(fit, path)
    truth = fit.data.u[fit.error_trajectory]
    pred = fit.predicted
    if fit.data.space_dims == 3:  # the middle z-slice
        truth, pred = truth[:, :, truth.shape[2] // 2], pred[:, :, pred.shape[2] // 2]
    T, C = truth.shape[:2]
    times = sorted({0, T // 2, T - 1})
    fig = Figure(figsize=(2.4 * len(times), 2.2 * 3 * C), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(3 * C, len(times), squeeze=False)
    for c in range(C):
        lim = np.abs(truth[:, c]).max()
        err = pred[:, c] - truth[:, c]
        elim = max(np.abs(err).max(), 1e-300)
        for k, t in enumerate(times):
            rows = [(truth[t, c], "true", lim, "RdBu_r"), (pred[t, c], "predicted", lim, "RdBu_r"),
                    (err[t], "error", elim, "PiYG")]
            for r, (img, label, v, cmap) in enumerate(rows):
                ax = axes[3 * c + r, k]
                ax.imshow(img, cmap=cmap, vmin=-v, vmax=v, origin="upper")
                ax.set_xticks([])
                ax.set_yticks([])
                where = ", middle z" if fit.data.space_dims == 3 else ""
                ax.set_title(f"{fit.data.components[c]} {label}, t = {t * fit.data.dt:.3g}{where}", fontsize=8)
    storage.write_figure(path, fig)


def _space_time(fit: Fit, path: str) -> None:
    """1-D data: true, predicted and error as x–t images (x across, time down), one row per field."""
    d = fit.data
    truth, pred = d.u[fit.error_trajectory], fit.predicted  # (T, C, W)
    T, C, W = truth.shape
    fig = Figure(figsize=(9, 2.6 * C), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(C, 3, squeeze=False)
    extent = (0, W * d.dx, (T - 1) * d.dt, 0)
    for c in range(C):
        lim = max(np.abs(truth[:, c]).max(), 1e-300)
        err = pred[:, c] - truth[:, c]
        elim = max(np.abs(err).max(), 1e-300)
        for k, (img, label, v, cmap) in enumerate([(truth[:, c], "true", lim, "RdBu_r"),
                                                   (pred[:, c], "predicted", lim, "RdBu_r"),
                                                   (err, "error", elim, "PiYG")]):
            ax = axes[c, k]
            ax.imshow(img, cmap=cmap, vmin=-v, vmax=v, aspect="auto", extent=extent, interpolation="nearest")
            ax.set_xlabel("x")
            ax.set_ylabel("t")
            ax.set_title(f"{d.components[c]} {label}", fontsize=9)
    storage.write_figure(path, fig)


def _error_plot(fit: Fit, path: str) -> None:
    t = np.arange(len(fit.error)) * fit.data.dt
    fig = Figure(figsize=(5, 3.2), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.semilogy(t[1:], np.maximum(fit.error[1:], 1e-16))
    ax.set_xlabel("time")
    ax.set_ylabel("relative L2 error")
    ax.set_title(f"prediction error ({fit.error_source} trajectories)")
    ax.grid(True, which="both", alpha=0.3)
    storage.write_figure(path, fig)


def _error_table(fit: Fit) -> list[str]:
    T = len(fit.error)
    steps = sorted({1, max(1, T // 10), T // 4, T // 2, T - 1} - {0})
    rows = ["| step | time | relative L2 error |", "|---:|---:|---:|"]
    rows += [f"| {k} | {k * fit.data.dt:.4g} | {fit.error[k]:.3e} |" for k in steps]
    return rows


def write_report(fit: Fit, out: str | os.PathLike, *, source: str | None = None) -> dict[str, str]:
    """Write ``pde.json``, ``report.md``, ``snapshots.png``, ``error.png`` (and ``fields.npz``) to ``out``.

    Returns ``{what: path}`` for the files written.
    """
    out = os.fspath(out)
    os.makedirs(out, exist_ok=True)
    paths = {"pde.json": os.path.join(out, "pde.json"), "report.md": os.path.join(out, "report.md")}
    storage.write_text(paths["pde.json"], strict_json(pde_json(fit), indent=2) + "\n")
    m, d = fit.model, fit.data
    if fit.settings.coefficients == "variable":
        paths["fields.npz"] = os.path.join(out, "fields.npz")
        np.savez_compressed(
            paths["fields.npz"], fields=fit.fields, equations=np.array(m.components), terms=np.array(m.names),
            **_coordinates(d),
        )
    if fit.error is not None:
        paths["snapshots.png"] = os.path.join(out, "snapshots.png")
        paths["error.png"] = os.path.join(out, "error.png")
        _snapshots(fit, paths["snapshots.png"])
        _error_plot(fit, paths["error.png"])
    N, T, C = d.u.shape[:3]
    names = ("W", "H×W", "D×H×W")[d.space_dims - 1]
    spacings = ", ".join(f"{k} = {v:.6g}" for k, v in (("dx", d.dx), ("dy", d.dy), ("dz", d.dz)) if v is not None)
    lines = [
        "# Discovered PDE",
        "",
        f"Data: {source or 'in memory'}: {N} trajectories × {T} frames of {C} field(s) {', '.join(d.components)} "
        f"on a {'×'.join(map(str, d.space))} grid ({names}), dt = {d.dt:.6g}, {spacings}, boundary {d.bc}. "
        f"Fitted on {len(fit.train)} trajectories, {len(fit.heldout)} held out.",
        "",
        "## Recovered equation",
        "",
        "```",
        format_equations(fit.equations, variable_terms(fit), d.space_dims),
        "```",
        "",
        ("x runs along the grid. " if d.space_dims == 1 else
         "x runs along the width (columns), y along the height (rows, downwards)"
         + (", z along the first axis" if d.space_dims == 3 else "") + "; `u_xy` is ∂x∂y u. ")
        + ("`(x,y)` marks a variable coefficient: the number is the mean of its field (all fields in `fields.npz`)."
           if fit.settings.coefficients == "variable" else ""),
        "",
        (f"It explains {fit.explained:.1%} of u_t on the training data (1 − ‖u_t − F(u)‖² / ‖u_t‖²; the trivial "
         "PDE u_t = 0 explains 0%)." if fit.settings.form != "weak" else
         f"Fitted in the weak form (test functions of half-width {fit.settings.time_support} frames and "
         f"{', '.join(map(str, fit.settings.support))} grid points along space). It explains {fit.explained:.1%} "
         "of the integrals −∫φ_t·u on the training data (1 − ‖b − Wc‖² / ‖b‖² over the test functions; the "
         "trivial PDE explains 0%)."),
        "",
        *([f"**Warning:** {fit.warning}.", ""] if fit.warning else []),
        "## Prediction",
        "",
    ]
    if fit.error is None:
        lines += ["No trajectory to predict.", ""]
    else:
        lines += [
            f"Rollout of the learned PDE (RK4, {fit.substeps} sub-step(s) per dt) from the first frame of the "
            f"{fit.error_source} trajectories, relative L2 error ‖û(t) − u(t)‖ / ‖u(t)‖ averaged over them:",
            "",
            *_error_table(fit),
            "",
            "![error over time](error.png)",
            "",
            "![true vs predicted](snapshots.png)",
            "",
        ]
    lines += [
        "## Fit",
        "",
        "| stage | rollout loss |",
        "|---|---:|",
        *[f"| {stage} | {loss:.4e} |" for stage, loss in fit.history],
        "",
        f"Options: `{strict_json(fit.options)}`; {fit.seconds:.1f} s.",
        "",
        f"Time per stage: {fit.stages.line()}.",
        "",
    ]
    with open(paths["report.md"], "w") as f:
        f.write("\n".join(lines))
    return paths
