"""The files of ``pdeconv analyze``: ``analysis.json``, ``summary.md`` and PNG figures.

Figures (matplotlib ``Figure`` objects rendered by Agg; no pyplot state is touched):

* ``order_spectrum.png``: each spatial convolution's order spectrum as a stacked bar, in module (depth) order;
* ``first_order_<layer>.png``: heat maps of ``A_∂x`` and ``A_∂y`` (rows: output channel, columns: input
  channel) of one layer, by default the first C→C 3×3 convolution, else the first depthwise 3×3 one;
* ``coefficient_fields.png``: one panel per VariableCoefficients layer tiling the fields ``a_c(x, y)`` of its
  first 16 channels, each tile x to the right and y down over [−1, 1]², one colour scale for all.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from pdeconv import storage
from pdeconv.analysis.operators import (
    ORDERS,
    Analysis,
    CoefficientFields,
    first_order_matrices,
    variant_summary,
)
from pdeconv.runtime import check_out_dir

__all__ = [
    "default_layer",
    "write_report",
    "plot_order_spectrum",
    "plot_first_order",
    "plot_coefficient_fields",
]

_ORDER_COLOURS = ("#4c72b0", "#55a868", "#c44e52", "#8172b2")
_MAX_FIELD_CHANNELS = 16


def _file_stem(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name) or "model"


def default_layer(analysis: Analysis) -> str | None:
    """The first C→C 3×3 convolution, else the first depthwise 3×3 one (a differential layer: each channel's own
    operators, a block-diagonal matrix), else the first spatial convolution; None if there is none."""
    for wanted in (lambda e: e.in_channels == e.out_channels, lambda e: e.groups == e.in_channels > 1):
        for e in analysis.layers:
            if e.kernel_size == 3 and wanted(e):
                return e.name
    return analysis.layers[0].name if analysis.layers else None


def plot_order_spectrum(analysis: Analysis, path: Path) -> None:
    """Stacked bars: the share of each layer's kernel energy at total order 0, 1, 2, ≥ 3, over depth."""
    n = len(analysis.layers)
    fig = Figure(figsize=(max(6.0, 0.28 * n + 2), 4.5), layout="constrained")
    ax = fig.subplots()
    bottom = [0.0] * n
    for order, colour in zip(ORDERS, _ORDER_COLOURS):
        share = [e.order_spectrum[order] for e in analysis.layers]
        ax.bar(range(n), share, bottom=bottom, color=colour, label=f"order {order}", width=0.85)
        bottom = [b + s for b, s in zip(bottom, share)]
    ax.set_xticks(range(n), [e.name for e in analysis.layers], rotation=90, fontsize=7)
    ax.set_xlim(-0.6, n - 0.4)
    ax.set_ylim(0, 1)
    ax.set_ylabel(f"share of kernel energy (moments at h = {analysis.h:g})")
    ax.set_title(f"{analysis.model}: order spectrum of the spatial convolutions")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    storage.write_figure(path, fig, dpi=120)


def plot_first_order(matrices: dict[str, Tensor], layer: str, path: Path) -> None:
    """Heat maps of the first-order matrices ``{"∂x": A, "∂y": B}`` (C_out × C_in), one colour scale."""
    vmax = max(float(A.abs().max()) for A in matrices.values()) or 1.0
    fig = Figure(figsize=(10, 4.6), layout="constrained")
    axes = fig.subplots(1, len(matrices))
    for ax, (op, A) in zip(axes, matrices.items()):
        im = ax.imshow(
            A.float().numpy(), cmap="RdBu_r", vmin=-vmax, vmax=vmax, interpolation="nearest", aspect="auto"
        )
        ax.set_title(f"{layer}: A_{op}")
        ax.set_xlabel("input channel")
        ax.set_ylabel("output channel")
    fig.colorbar(im, ax=list(axes), shrink=0.9, label="coefficient")
    storage.write_figure(path, fig, dpi=120)


def _montage(fields: Tensor, n: int) -> Tensor:
    """The first ``n`` fields ``(C, H, W)`` tiled row by row, separated by one-pixel NaN (blank) lines."""
    _, H, W = fields.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    canvas = torch.full((rows * (H + 1) - 1, cols * (W + 1) - 1), math.nan)
    for c in range(n):
        i, j = divmod(c, cols)
        canvas[i * (H + 1) : i * (H + 1) + H, j * (W + 1) : j * (W + 1) + W] = fields[c]
    return canvas


def plot_coefficient_fields(layers: list[CoefficientFields], path: Path) -> None:
    """One panel per VariableCoefficients layer: its first channels' fields a_c(x, y) as tiles.

    Each tile spans the layer's grid over [−1, 1]², x to the right and y down (row i is y_i, as in the
    image); one colour scale for all panels.
    """
    cols = min(4, len(layers))
    rows = math.ceil(len(layers) / cols)
    lo = min(f.field_range[0] for f in layers)
    hi = max(f.field_range[1] for f in layers)
    fig = Figure(figsize=(3.2 * cols + 1, 3.2 * rows + 0.5), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[len(layers) :]:
        ax.set_axis_off()
    for ax, f in zip(axes, layers):
        n = min(f.channels, _MAX_FIELD_CHANNELS)
        im = ax.imshow(
            _montage(f.fields, n).numpy(), cmap="viridis", vmin=lo, vmax=hi, interpolation="nearest"
        )
        ax.set_title(f"{f.name} (channels 0–{n - 1} of {f.channels})", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, ax=list(axes), shrink=0.8, label="a(x, y)")
    H, W = layers[0].resolution
    fig.suptitle(f"coefficient fields on {H}×{W} grids; each tile: x → right, y ↓ down over [−1, 1]²")
    storage.write_figure(path, fig, dpi=120)


def _summary_markdown(analysis: Analysis, figures: list[Path]) -> str:
    lines = [
        f"# PDE analysis of {analysis.model}",
        "",
        f"Moments at grid spacing h = {analysis.h:g} (1 = kernel offsets in pixels); "
        "order spectrum = share of each layer's kernel energy Σ M[a, b]² at total order a + b. "
        "Definitions: `pdeconv.analysis.operators` and docs/analysis.md.",
        "",
        "## Summary",
        "",
        "| quantity | value |",
        "|---|---|",
    ]
    summary = variant_summary(analysis)
    for key, value in summary.items():
        lines.append(f"| {key} | {'–' if value is None else f'{value:.4g}'} |")
    lines += ["", "## Spatial convolutions", "", analysis.summary_table() or "(none)", ""]
    depthwise = [e for e in analysis.layers if e.depthwise is not None]
    if depthwise:
        lines += ["## Depthwise spans (independent order-≤2 operators per input channel)", ""]
        for e in depthwise:
            dims = e.depthwise.span_dims
            counts = ", ".join(f"{d}: {dims.count(d)}" for d in sorted(set(dims)))
            lines.append(f"- `{e.name}` (×{e.depthwise.multiplier}): span dimension → channels {{{counts}}}")
        lines.append("")
    if analysis.coefficient_fields:
        lines += [
            "## Variable coefficients",
            "",
            "Spatial variation: mean over channels of the std of a_c(x, y) over the grid; relative: of "
            "std / rms (0 = constant coefficients, 1 = fields of mean zero); sign-changing: the share of channels "
            "whose field takes both signs, reversing its operator in part of the image.",
            "",
            "| layer | channels | monomials | field min | field max | spatial variation | relative | sign-changing |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for f in analysis.coefficient_fields:
            lines.append(
                f"| {f.name} | {f.channels} | {', '.join(f.monomials)} | {f.field_range[0]:.3g} | "
                f"{f.field_range[1]:.3g} | {f.spatial_variation:.3g} | {f.relative_variation:.3g} | "
                f"{f.sign_changing:.0%} |"
            )
        channels = sum(f.channels for f in analysis.coefficient_fields)
        changing = round(summary["field_sign_changing"] * channels)
        share = f"{changing} of {channels} fields ({changing / channels:.1%})"
        lines += ["", f"Over all layers {share} take both signs.", ""]
    lines += ["## Figures", ""] + [f"![{p.stem}]({p.name})" for p in figures]
    return "\n".join(lines) + "\n"


def write_report(
    analysis: Analysis, model: nn.Module, out: str | Path, *, layer: str | None = None
) -> list[Path]:
    """Write ``analysis.json``, ``summary.md`` and the figures to ``out``; returns the paths written.

    ``layer``: whose first-order matrices to draw (default :func:`default_layer`); ``model`` must be the
    analysed one (its weights give those matrices).
    """
    out = Path(out)
    check_out_dir(out)
    layer = layer if layer is not None else default_layer(analysis)
    if layer is not None:
        analysis.layer(layer)  # ValueError listing the valid names, before anything is written
    out.mkdir(parents=True, exist_ok=True)
    figures = []
    if analysis.layers:
        figures.append(out / "order_spectrum.png")
        plot_order_spectrum(analysis, figures[-1])
    if layer is not None:
        figures.append(out / f"first_order_{_file_stem(layer)}.png")
        plot_first_order(first_order_matrices(model, layer, h=analysis.h), layer, figures[-1])
    if analysis.coefficient_fields:
        figures.append(out / "coefficient_fields.png")
        plot_coefficient_fields(analysis.coefficient_fields, figures[-1])
    analysis.to_json(out / "analysis.json")
    (out / "summary.md").write_text(_summary_markdown(analysis, figures), encoding="utf-8")
    return [out / "analysis.json", out / "summary.md", *figures]
