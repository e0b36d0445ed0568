"""Small demonstrations of the essay's claims, each writing pictures to ``out`` in seconds.

* ``translation``: compounding a ∂x-like 3×3 conv with identity skips is forward Euler for the transport
  equation ``u_t + c·u_x = 0``; with the upwind stencil and ``c·Δt = 1`` pixel each layer shifts the image by
  exactly one pixel. With the essay's Sobel kernel (``8·∂x + 2·∂x∂y²``, scaled by 1/8) the mean still moves at
  ``c·Δt`` pixels per layer, but central differences disperse the image and forward Euler makes them grow.
* ``heat``: iterating the binomial (Gaussian) kernel ``1 + ¼∂x² + ¼∂y² + ...`` is forward Euler for the heat
  equation ``u_t = Δu`` with ``Δt = h²/4``; checked against the analytic solution at two resolutions.
* ``boundary``: the wave equation under dirichlet, neumann and periodic boundary conditions, side by side.

Conventions: images are (H, W), x along the width (pointing right), y along the height (pointing down).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from pdeconv import stencil, storage
from pdeconv.boundary import convolve
from pdeconv.errors import PdeconvError
from pdeconv.layers.steppers import runge_kutta_step
from pdeconv.runtime import check_out_dir

__all__ = ["DEMOS", "run", "translation", "heat", "boundary", "rotation", "dilation", "sample_image"]


@dataclass
class DemoResult:
    """What a demo wrote and measured: ``metrics`` holds the measured numbers (names per demo in its docstring),
    ``summary`` the same in words."""

    files: list[Path]
    summary: str
    metrics: dict[str, float] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------- pictures


def sample_image(size: int = 48) -> Tensor:
    """A real picture in [0, 1], (size, size), float64: a Fashion-MNIST item when the data set is on this
    machine, otherwise the word "PDE" drawn with Pillow's bundled font."""
    from PIL import Image, ImageDraw, ImageFont

    img = _fashion_mnist_item()
    if img is None:
        canvas = Image.new("L", (64, 32), 0)
        draw = ImageDraw.Draw(canvas)
        draw.text((6, 4), "PDE", fill=255, font=ImageFont.load_default(size=22))
        img = canvas
    img = img.resize((size, size) if img.size[0] == img.size[1] else (size, size // 2), Image.BILINEAR)
    a = torch.from_numpy(np.asarray(img, dtype=np.float64) / 255.0)
    out = torch.zeros(size, size, dtype=torch.float64)
    top = (size - a.shape[0]) // 2
    out[top:top + a.shape[0]] = a
    return out


def _fashion_mnist_item():
    """The first Fashion-MNIST test image (an ankle boot) as a PIL image, or None when the data is absent."""
    from PIL import Image

    from pdeconv.data import find_data, read_idx

    try:
        folder = find_data("fashion-mnist", download=False)
    except FileNotFoundError:
        return None
    path = next(p for p in (folder / "t10k-images-idx3-ubyte.gz", folder / "t10k-images-idx3-ubyte") if p.exists())
    return Image.fromarray(read_idx(path)[0])


def _to_uint8(frames: list[Tensor], lo: float, hi: float, scale: int) -> list[np.ndarray]:
    out = []
    for f in frames:
        a = ((f.clamp(lo, hi) - lo) / (hi - lo) * 255).round().to(torch.uint8).numpy()
        out.append(np.kron(a, np.ones((scale, scale), dtype=np.uint8)))
    return out


def _write_gif(path: Path, rows: list[list[Tensor]], lo: float, hi: float, scale: int = 3, ms: int = 80) -> Path:
    """Animate several sequences side by side (one per entry of ``rows``), separated by a white bar."""
    from PIL import Image

    frames = []
    for step in range(len(rows[0])):
        tiles = _to_uint8([r[step] for r in rows], lo, hi, scale)
        bar = np.full((tiles[0].shape[0], 2 * scale), 255, dtype=np.uint8)
        parts = [tiles[0]]
        for t in tiles[1:]:
            parts += [bar, t]
        frames.append(Image.fromarray(np.concatenate(parts, axis=1)))
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=ms, loop=0)
    return path


def _strip(path: Path, rows: dict[str, list[Tensor]], titles: list[str], cmap: str = "gray", vlim=None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_rows, n_cols = len(rows), len(titles)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(1.7 * n_cols, 1.8 * n_rows), squeeze=False)
    for i, (label, frames) in enumerate(rows.items()):
        for j, f in enumerate(frames):
            ax = axes[i, j]
            kw = {"vmin": vlim[0], "vmax": vlim[1]} if vlim else {}
            ax.imshow(f.numpy(), cmap=cmap, **kw)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(titles[j], fontsize=8)
        axes[i, 0].set_ylabel(label, fontsize=8)
    fig.tight_layout()
    storage.write_figure(path, fig)
    plt.close(fig)
    return path


def _animate(
    out: Path, name: str, rows: dict[str, list[Tensor]], lo: float, hi: float, *, label: str = "layer",
    cmap: str = "gray", scale: int = 3, ms: int = 80,
) -> list[Path]:
    """``out/NAME.gif`` (the sequences side by side) and ``out/NAME.png`` (four snapshots of each)."""
    out.mkdir(parents=True, exist_ok=True)
    last = len(next(iter(rows.values()))) - 1
    cols = sorted({0, last // 3, 2 * last // 3, last})
    return [
        _write_gif(out / f"{name}.gif", list(rows.values()), lo, hi, scale=scale, ms=ms),
        _strip(out / f"{name}.png", {k: [v[c] for c in cols] for k, v in rows.items()},
               [f"{label} {c}" for c in cols], cmap=cmap, vlim=(lo, hi)),
    ]


# ------------------------------------------------------------------------------------------- translation


def _measured_shift(u: Tensor, u0: Tensor) -> float:
    """Shift along x (pixels, positive = right) maximising the circular cross-correlation of u with u0,
    refined to sub-pixel accuracy by a parabola through the peak and its two neighbours."""
    corr = torch.fft.irfft(torch.fft.rfft(u.sum(0)) * torch.fft.rfft(u0.sum(0)).conj(), n=u.shape[-1])
    k = int(corr.argmax())
    left, mid, right = (float(corr[(k + d) % corr.numel()]) for d in (-1, 0, 1))
    denom = left - 2 * mid + right
    frac = 0.5 * (left - right) / denom if denom != 0 else 0.0
    shift = k + frac
    return shift - corr.numel() if shift > corr.numel() / 2 else shift


def _centroid_x(u: Tensor) -> float:
    x = torch.arange(u.shape[-1], dtype=u.dtype)
    return float((u.sum(0) * x).sum() / u.sum())


def translation(out: Path, size: int | None = None, steps: int | None = None) -> DemoResult:
    """Forward Euler for ``u_t + c·u_x = 0`` (transport to the right) with ``c·Δt`` pixels per layer.

    Metrics, for ``upwind`` and ``sobel``: ``*_shift`` and ``*_centroid`` (pixels per layer, by the
    cross-correlation peak and by the centre of mass), ``*_exact`` (c·Δt), ``*_error`` (relative L2 error against
    the exactly shifted picture), ``*_max`` (max |u| at the end).
    """
    size = size or 48
    steps = steps or size // 3
    img = sample_image(size)
    # a wide canvas (H × W with W > H) leaves room to travel right and for the dispersive tail on the left
    u0 = torch.zeros(size, size + 2 * steps, dtype=torch.float64)
    u0[:, steps // 2:steps // 2 + size] = img
    schemes = {
        # u ← u − (u − u[x−1]): the backward (upwind) difference with c·Δt = 1 is an exact one-pixel shift
        "upwind, cΔt=1": ("upwind", stencil.upwind_x("backward", dtype=torch.float64), 1.0),
        # u ← u − ½·(Sobel/8)·u: central differences, what a Sobel-like conv does
        "Sobel/8, cΔt=½": ("sobel", stencil.sobel_x(dtype=torch.float64) / 8, 0.5),
    }
    rows, lines, metrics = {}, [], {}
    for label, (key, kernel, courant) in schemes.items():
        u, frames = u0.clone(), [u0.clone()]
        for _ in range(steps):
            u = u - courant * convolve(u, kernel, "periodic")  # the residual block: identity + Δt·f(u)
            frames.append(u.clone())
        rows[label] = frames
        shift = _measured_shift(u, u0) / steps
        mean_shift = (_centroid_x(u) - _centroid_x(u0)) / steps
        exact = _shift_exactly(u0, courant * steps)
        err = float((u - exact).norm() / exact.norm())
        metrics |= {f"{key}_shift": shift, f"{key}_centroid": mean_shift, f"{key}_exact": courant,
                    f"{key}_error": err, f"{key}_max": float(u.abs().max())}
        lines.append(
            f"{label:16s} shift per layer: correlation peak {shift:+.3f} px, centroid {mean_shift:+.3f} px "
            f"(exact {courant:+.3f}); "
            f"max |u| {float(u.abs().max()):.3g} (start {float(u0.abs().max()):.3g}); "
            f"rel. L2 error vs the exactly shifted image {err:.2e}"
        )
    files = _animate(out, "translation", rows, -0.25, 1.25)
    return DemoResult(files, "\n".join(lines), metrics)


def _shift_exactly(u: Tensor, s: float) -> Tensor:
    """u shifted right by s pixels (any real s) on the periodic grid, by the Fourier shift theorem."""
    k = torch.fft.rfftfreq(u.shape[-1], dtype=u.dtype)
    return torch.fft.irfft(torch.fft.rfft(u) * torch.exp(-2j * math.pi * k * s), n=u.shape[-1])


# -------------------------------------------------------------------------------------------------- heat


def _heat_error(n: int, t_end: float) -> tuple[float, Tensor, Tensor]:
    """Iterate the 3×3 Gaussian on a periodic n×n grid of [0, 2π)² until ``t_end``; return the max error."""
    h = 2 * math.pi / n
    dt = h * h / 4  # the Gaussian kernel is 1 + (h²/4)·Δ + O(h⁴): one Euler step of Δt = h²/4
    steps = round(t_end / dt)
    x = torch.arange(n, dtype=torch.float64) * h
    y = x[:, None]
    u0 = torch.sin(x)[None, :] * torch.cos(2 * y) + 0.5 * torch.cos(3 * x)[None, :]  # (H=y, W=x)
    u = u0.clone()
    g = stencil.gaussian(dtype=torch.float64)
    for _ in range(steps):
        u = convolve(u, g, "periodic")
    t = steps * dt
    exact = math.exp(-5 * t) * torch.sin(x)[None, :] * torch.cos(2 * y) + 0.5 * math.exp(-9 * t) * torch.cos(
        3 * x
    )[None, :]
    return float((u - exact).abs().max()), u, exact


def heat(out: Path, size: int | None = None, steps: int | None = None) -> DemoResult:
    """Gaussian blur iterated = forward Euler for ``u_t = Δu``; the error shrinks as h² (Δt = h²/4).

    Metrics: ``error`` (max error on n×n), ``error_fine`` (on 2n×2n), ``order`` (observed, log2 of their ratio).
    """
    n = size or 32
    t_end = 0.1
    e1, u1, ex1 = _heat_error(n, t_end)
    e2, _, _ = _heat_error(2 * n, t_end)
    order = math.log2(e1 / e2)
    # a picture being blurred, to look at
    img = sample_image(48)
    frames = [img]
    for _ in range(steps or 24):
        frames.append(convolve(frames[-1], stencil.gaussian(dtype=torch.float64), "neumann"))
    files = [
        *_animate(out, "heat", {"Gaussian iterated": frames}, 0.0, 1.0, label="step"),
        _strip(out / "heat_check.png", {f"u_t = Δu, {n}×{n}": [u1, ex1, u1 - ex1]},
               ["Gaussian iterated", "analytic", "difference"], cmap="viridis"),
    ]
    summary = (
        f"heat equation at t={t_end}: max error {e1:.3e} on {n}×{n}, {e2:.3e} on {2 * n}×{2 * n}; "
        f"observed order {order:.2f} (expected 2: Δt = h²/4 ties the time error to h²)"
    )
    return DemoResult(files, summary, {"error": e1, "error_fine": e2, "order": order})


# ---------------------------------------------------------------------------------------------- boundary


def boundary(out: Path, size: int | None = None, steps: int | None = None) -> DemoResult:
    """Leapfrog for the wave equation ``u_tt = c²Δu`` under each boundary condition, side by side.

    A pulse travels into the left wall: dirichlet reflects it with its sign flipped, neumann with its sign
    kept (the wall is a mirror), periodic lets it through to the other side.

    Metrics: ``start_sum`` (Σu at the start) and, per boundary condition, ``BC_sum`` (Σu at the end),
    ``BC_left_min`` and ``BC_left_max`` (extremes on the left half, where the reflected pulse is).
    """
    n = size or 64
    steps = steps or int(1.2 * n)
    courant = 0.5  # c·Δt/h, stable for the 5-point Laplacian (≤ 1/√2)
    y, x = torch.meshgrid(torch.arange(n, dtype=torch.float64), torch.arange(n, dtype=torch.float64), indexing="ij")
    u0 = torch.exp(-((x - n * 0.3) ** 2 + (y - n / 2) ** 2) / (2 * (n / 20) ** 2))
    lap = stencil.laplacian(dtype=torch.float64)
    rows, lines, metrics = {}, [], {"start_sum": float(u0.sum())}
    for bc in ("dirichlet", "neumann", "periodic"):
        prev, u, frames = u0.clone(), u0.clone(), [u0.clone()]
        for _ in range(steps):
            prev, u = u, 2 * u - prev + courant**2 * convolve(u, lap, bc)
            frames.append(u.clone())
        rows[bc] = frames
        left = u[:, : n // 2]
        metrics |= {f"{bc}_sum": float(u.sum()), f"{bc}_left_min": float(left.min()),
                    f"{bc}_left_max": float(left.max())}
        lines.append(
            f"{bc:10s} after {steps} steps: Σu = {float(u.sum()):+9.2f} (start {float(u0.sum()):.2f}); "
            f"left half min {float(left.min()):+.3f}, max {float(left.max()):+.3f}"
        )
    files = _animate(out, "boundary", rows, -0.5, 0.5, label="step", cmap="RdBu_r", scale=2, ms=60)
    return DemoResult(files, "\n".join(lines), metrics)


# ------------------------------------------------------------------------------------ rotation, dilation


class _Advection(torch.nn.Module):
    """``f(u) = −v·∇u = a_x(x, y)·∂x u + a_y(x, y)·∂y u`` built from stencils and fixed coefficient fields.

    ``∂x, ∂y``: fourth-order central stencils (5×5) scaled to the grid spacing of coordinates in [−1, 1];
    ``a_x, a_y``: degree-1 :class:`~pdeconv.layers.VariableCoefficients` fields (``−v``) with fixed weights.
    """

    def __init__(self, velocity: tuple[tuple[float, float, float], tuple[float, float, float]], n: int) -> None:
        super().__init__()
        from pdeconv.layers import VariableCoefficients

        h = 2.0 / n  # pixel centres span [−1, 1]
        self.register_buffer("dx", stencil.finite_difference((0, 1), accuracy=4, h=h, dtype=torch.float64))
        self.register_buffer("dy", stencil.finite_difference((1, 0), accuracy=4, h=h, dtype=torch.float64))
        self.ax, self.ay = (VariableCoefficients(1, degree=1).double() for _ in range(2))
        for layer, coef in ((self.ax, velocity[0]), (self.ay, velocity[1])):  # coefficients of 1, x, y
            layer.weight.data.copy_(-torch.tensor(coef, dtype=torch.float64).view(1, 3, 1, 1))
            layer.requires_grad_(False)

    def forward(self, u: Tensor) -> Tensor:
        return self.ax(convolve(u, self.dx, "dirichlet")) + self.ay(convolve(u, self.dy, "dirichlet"))


@torch.no_grad()
def _evolve(f: Callable[[Tensor], Tensor], u0: Tensor, steps: int, dt: float) -> tuple[Tensor, list[Tensor]]:
    """``steps`` layers from u0, each one classical Runge–Kutta step (four residual stages); the final state and
    every layer's picture."""
    u, frames = u0, [u0[0, 0]]
    for _ in range(steps):
        u = runge_kutta_step(f, u, dt, "rk4")
        frames.append(u[0, 0])
    return u, frames


def _disc_image(size: int) -> Tensor:
    """The sample picture, shrunk into the central disc (so rotating or growing it stays on the grid), smoothed."""
    inner = size // 2 + (size // 2) % 2
    img = torch.nn.functional.interpolate(sample_image(48)[None, None], size=(inner, inner), mode="area")[0, 0]
    u = torch.zeros(size, size, dtype=torch.float64)
    o = (size - inner) // 2
    u[o:o + inner, o:o + inner] = img
    # two passes of heat flow (the Gaussian kernel): central differences disperse sharp edges, and the
    # lagging wiggles would bias the measured angle
    for _ in range(2):
        u = convolve(u, stencil.gaussian(dtype=torch.float64), "dirichlet")
    return u[None, None]


def _rotate(u: Tensor, angle: float) -> Tensor:
    """u rotated by ``angle`` radians as the flow v = (−y, x) carries it (bilinear resampling)."""
    c, s = math.cos(angle), math.sin(angle)
    # the value now at (x, y) came from R(−angle)·(x, y)
    theta = torch.tensor([[[c, s, 0.0], [-s, c, 0.0]]], dtype=u.dtype)
    grid = torch.nn.functional.affine_grid(theta, list(u.shape), align_corners=False)
    return torch.nn.functional.grid_sample(u, grid, align_corners=False)


def _best_angle(u: Tensor, u0: Tensor, guess: float) -> float:
    """The rotation of u0 that best matches u (least squares), within ``guess`` ± 0.5 rad (about ±29°), where the
    misfit has one minimum; to 1e-8 rad."""
    from scipy.optimize import minimize_scalar

    misfit = lambda angle: float((_rotate(u0, angle) - u).square().sum())  # noqa: E731
    return float(minimize_scalar(misfit, bounds=(guess - 0.5, guess + 0.5), method="bounded",
                                 options={"xatol": 1e-8}).x)


def rotation(out: Path, size: int | None = None, steps: int | None = None) -> DemoResult:
    """Advection with velocity v = (−y, x): a quarter turn of the picture, built from stencils + fields.

    With y pointing down the rows, v = (−y, x) turns the picture clockwise on screen. Metrics: ``angle``
    (degrees, the best-fitting rotation of the start picture), ``exact_angle`` (90), ``corr_rotated`` and
    ``corr_original`` (correlation of the result with the exactly rotated and with the start picture).
    """
    n = size or 48
    steps = steps or 40
    dt = (math.pi / 2) / steps
    f = _Advection(((0.0, 0.0, -1.0), (0.0, 1.0, 0.0)), n)  # v_x = −y, v_y = x
    u0 = _disc_image(n)
    u, frames = _evolve(f, u0, steps, dt)
    with torch.no_grad():
        angle = _best_angle(u, u0, math.pi / 2)
        exact = _rotate(u0, math.pi / 2)
    corr = lambda a, b: float((a * b).sum() / (a.norm() * b.norm()))  # noqa: E731
    summary = (
        f"rotation: {steps} layers, measured {math.degrees(angle) / steps:.4f}° per layer "
        f"(exact {math.degrees(dt):.4f}°), total {math.degrees(angle):.2f}° (exact 90°); "
        f"correlation with the rotated picture {corr(u, exact):.3f}, with the original {corr(u, u0):.3f}"
    )
    files = _animate(out, "rotation", {"u_t = y·u_x − x·u_y": frames}, -0.1, 1.0)
    metrics = {"angle": math.degrees(angle), "exact_angle": 90.0, "corr_rotated": corr(u, exact),
               "corr_original": corr(u, u0)}
    return DemoResult(files, summary, metrics)


def _rms_radius(u: Tensor) -> float:
    n = u.shape[-1]
    c = (2 * torch.arange(n, dtype=u.dtype) + 1) / n - 1
    r2 = c[:, None] ** 2 + c[None, :] ** 2
    w = u[0, 0].clamp(min=0)
    return math.sqrt(float((w * r2).sum() / w.sum()))


def dilation(out: Path, size: int | None = None, steps: int | None = None) -> DemoResult:
    """Advection with velocity v = (x, y): the picture grows by e^Δt per layer (u(t, r) = u₀(r·e^(−t))).

    Metrics: ``scale`` (growth of the RMS radius), ``exact_scale``, ``scale_per_layer``, ``exact_per_layer``.
    """
    n = size or 48
    steps = steps or 20
    total = 1.4  # overall scale factor
    dt = math.log(total) / steps
    f = _Advection(((0.0, 1.0, 0.0), (0.0, 0.0, 1.0)), n)  # v_x = x, v_y = y
    u0 = _disc_image(n)
    u, frames = _evolve(f, u0, steps, dt)
    scale = _rms_radius(u) / _rms_radius(u0)
    summary = (
        f"dilation: {steps} layers, measured scale {scale ** (1 / steps):.5f} per layer "
        f"(exact e^Δt = {math.exp(dt):.5f}), total {scale:.4f} (exact {total:.4f}, "
        f"error {abs(scale / total - 1):.2%})"
    )
    files = _animate(out, "dilation", {"u_t = −x·u_x − y·u_y": frames}, -0.1, 1.0)
    metrics = {"scale": scale, "exact_scale": total, "scale_per_layer": scale ** (1 / steps),
               "exact_per_layer": math.exp(dt)}
    return DemoResult(files, summary, metrics)


# -------------------------------------------------------------------------------------------------- entry

DEMOS: dict[str, Callable[..., DemoResult]] = {
    "translation": translation,
    "heat": heat,
    "boundary": boundary,
    "rotation": rotation,
    "dilation": dilation,
}


def run(name: str, out: str | Path = "runs/demo", size: int | None = None, steps: int | None = None) -> DemoResult:
    """Run demo ``name``, print what it measured and where its files are."""
    if name not in DEMOS:
        raise PdeconvError(f"unknown demo {name!r}; valid ones: {', '.join(sorted(DEMOS))}")
    if size is not None and size < 8:
        raise PdeconvError(f"`size` must be at least 8 pixels; got {size}")
    if steps is not None and steps < 1:
        raise PdeconvError(f"`steps` must be at least 1; got {steps}")
    check_out_dir(out)
    result = DEMOS[name](Path(out), size=size, steps=steps)
    print(result.summary)
    for f in result.files:
        print(f"wrote {f}")
    return result
