"""The input shapes pdeconv's convolution-like layers take: ``(N, C, H, W)``, or unbatched ``(C, H, W)`` as
``nn.Conv2d`` takes it (so a layer dropped in for a convolution accepts what the convolution accepted)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from pdeconv.errors import PdeconvError


def batched(layer: nn.Module, u: Tensor, channels: int, forward: Callable[[Tensor], Tensor]) -> Tensor:
    """``forward(u)`` for ``u`` of shape ``(N, C, H, W)``; an unbatched ``(C, H, W)`` goes through as a batch of one
    and comes back without the batch axis.

    ``ValueError`` naming the layer for any other rank or a channel count other than ``channels``.
    """
    if u.dim() not in (3, 4):
        raise PdeconvError(f"{type(layer).__name__}: expected input of shape (N, C, H, W) or (C, H, W), "
                         f"got {tuple(u.shape)}")
    if not torch.jit.is_tracing() and u.shape[-3] != channels:  # a trace records no Python checks (the conv's stays)
        raise PdeconvError(f"{type(layer).__name__}({channels}, ...): expected {channels} channels (axis -3 of "
                         f"(N, C, H, W) or (C, H, W)), got input of shape {tuple(u.shape)}")
    return forward(u.unsqueeze(0)).squeeze(0) if u.dim() == 3 else forward(u)
