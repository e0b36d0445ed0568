"""Similarity warps of image batches: rotate, scale and shift each image on its own canvas (floor 0).

Conventions (tested on non-square canvases): pixel coordinates are ``(x, y)`` with x the column index (pointing
right) and y the row index (pointing down); the canvas centre is ``c = ((W − 1)/2, (H − 1)/2)``. The warp of
one image moves the content at ``p`` to

    p' = c + s · R(θ) · (p − c) + t,     R(θ) = [[cos θ, sin θ], [−sin θ, cos θ]]  acting on (x, y),

that is: turned **counter-clockwise as seen on screen** by ``θ`` degrees about the centre, scaled by ``s``, then
moved ``t = (dx, dy)`` pixels (right, down). Each output pixel samples the input bilinearly at the inverse image
of its centre; what falls outside the canvas is cut, and what comes in from outside is 0 (black).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from pdeconv.errors import PdeconvError

__all__ = ["draw_similarities", "similarity_warp"]


def similarity_warp(images: Tensor, angle: Tensor, scale: Tensor, shift: Tensor) -> Tensor:
    """``images`` (N, C, H, W) warped by per-image ``angle`` (N,) in degrees, ``scale`` (N,) and ``shift`` (N, 2)
    as ``(dx, dy)`` pixels, by the map in the module docstring; bilinear, zero outside.

    A uint8 batch comes back as uint8 (rounded to nearest, computed in float64 so that the rounding does not
    depend on the CPU's kernels); a floating batch comes back in its own dtype.
    """
    if images.ndim != 4:
        raise PdeconvError(f"similarity_warp needs images of shape (N, C, H, W), got {tuple(images.shape)}")
    n, _, h, w = images.shape
    angle, scale, shift = (torch.as_tensor(a, dtype=torch.float64) for a in (angle, scale, shift))
    if angle.shape != (n,) or scale.shape != (n,) or shift.shape != (n, 2):
        raise PdeconvError(f"similarity_warp needs angle ({n},), scale ({n},) and shift ({n}, 2); got "
                         f"{tuple(angle.shape)}, {tuple(scale.shape)}, {tuple(shift.shape)}")
    if bool((scale <= 0).any()):
        raise PdeconvError("similarity_warp needs positive scales")
    rad = angle * (math.pi / 180)
    cos, sin = torch.cos(rad), torch.sin(rad)
    # The inverse map in pixel units: p = c + A (p' − c − t) with A = R(θ)ᵀ / s.
    inverse = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2) / scale[:, None, None]
    # affine_grid (align_corners=True) works in n = D⁻¹ (p − c) with D = diag((W − 1)/2, (H − 1)/2), so its
    # matrix is D⁻¹ A D and its offset −D⁻¹ A t.
    half = torch.tensor([max(w - 1, 1) / 2, max(h - 1, 1) / 2], dtype=torch.float64)
    matrix = inverse * half[None, None, :] / half[None, :, None]
    offset = -(inverse @ shift[:, :, None])[..., 0] / half
    theta = torch.cat([matrix, offset[:, :, None]], -1)
    work = torch.float64 if images.dtype == torch.uint8 else images.dtype
    grid = F.affine_grid(theta.to(work), list(images.shape), align_corners=True)
    out = F.grid_sample(images.to(work), grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    if images.dtype == torch.uint8:
        return out.round_().clamp_(0, 255).to(torch.uint8)
    return out


def draw_similarities(
    seed: int,
    split: int,
    n: int,
    *,
    angles: tuple[float, float] = (-180.0, 180.0),
    scales: tuple[float, float] = (0.7, 1.0),
    max_shift: float = 6.0,
) -> dict[str, np.ndarray]:
    """Per-image warp parameters ``{"angle" (n,), "scale" (n,), "shift" (n, 2)}``, uniform in ``[angles)``,
    ``[scales)`` and ``[−max_shift, max_shift)`` for each of dx, dy.

    Image i's draw comes from its own stream ``SeedSequence([seed, split, i])``: it depends on nothing but the
    seed, the split and its index (not on n, nor on the other images).
    """
    draws = np.empty((n, 4))
    for i in range(n):
        draws[i] = np.random.default_rng([seed, split, i]).random(4)
    return {
        "angle": angles[0] + (angles[1] - angles[0]) * draws[:, 0],
        "scale": scales[0] + (scales[1] - scales[0]) * draws[:, 1],
        "shift": max_shift * (2 * draws[:, 2:] - 1),
    }
