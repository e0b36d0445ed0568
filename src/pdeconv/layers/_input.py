"""The input shapes pdeconv's convolution-like layers take: ``(N, C, H, W)``, or unbatched ``(C, H, W)`` as
``nn.Conv2d`` takes it (so a layer dropped in for a convolution accepts what the convolution accepted)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def batched(layer: nn.Module, u: Tensor, channels: int) -> tuple[Tensor, bool]:
    """``u`` as ``(N, C, H, W)``, and whether it came unbatched (then the caller drops the batch axis again).

    ``ValueError`` naming the layer for any other rank or a channel count other than ``channels``.
    """
    if u.dim() not in (3, 4):
        raise ValueError(f"{type(layer).__name__}: expected input of shape (N, C, H, W) or (C, H, W), "
                         f"got {tuple(u.shape)}")
    if not torch.jit.is_tracing() and u.shape[-3] != channels:  # a trace records no Python checks (the conv's stays)
        raise ValueError(f"{type(layer).__name__}({channels}, ...): expected {channels} channels (axis -3 of "
                         f"(N, C, H, W) or (C, H, W)), got input of shape {tuple(u.shape)}")
    return (u.unsqueeze(0), True) if u.dim() == 3 else (u, False)
