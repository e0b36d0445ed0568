"""What a model costs: parameters, forward FLOPs, activation memory of one training step.

* FLOPs: :class:`torch.utils.flop_counter.FlopCounterMode` on the forward pass only. A convolution counts
  ``2 · C_in · C_out · k_h · k_w · H_out · W_out / groups`` per sample (a multiply-add is 2 FLOPs), a linear
  layer ``2 · in · out``; elementwise work (BatchNorm, ReLU, the ``a(x, y) · u`` product) is not counted.
  The backward pass is not measured: FlopCounterMode over-counts the backward of grouped/depthwise
  convolutions by the group count, so a training step is taken as 3× the forward.
* Activation memory: the bytes of the distinct tensors autograd saves for the backward pass during one
  forward in training mode (``torch.autograd.graph.saved_tensors_hooks``), each storage counted once,
  parameters excluded. This is what a training step holds between forward and backward, device-independent
  (measured on CPU as well as on GPU); allocator overhead and the backward's own temporaries are not included.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from pdeconv.errors import PdeconvError

__all__ = ["Profile", "profile", "saved_activation_bytes"]


def _si(value: float, unit: str) -> str:
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.2f} {prefix}{unit}"
    return f"{value:.0f} {unit}"


@dataclass(frozen=True)
class Profile:
    """Cost of a model on inputs of ``input_size`` (N, C, H, W); see the module docstring for how measured."""

    params: int
    flops: int  # forward pass, whole batch
    activation_bytes: int  # saved for backward by one training-mode forward, whole batch
    input_size: tuple[int, ...]

    @property
    def train_flops(self) -> int:
        """FLOPs of one training step (forward + backward ≈ 3 × forward)."""
        return 3 * self.flops

    def __str__(self) -> str:
        size = "×".join(map(str, self.input_size))
        return (
            f"{_si(self.params, 'params')} · forward {_si(self.flops, 'FLOPs')} "
            f"(training step ≈ 3× = {_si(self.train_flops, 'FLOPs')}) · "
            f"activations {_si(self.activation_bytes, 'B')} at input {size}"
        )


def saved_activation_bytes(forward: Callable[[], Any], params: Iterable[Tensor] = ()) -> int:
    """Bytes of the distinct storages autograd saves for the backward while ``forward()`` runs.

    Each storage is counted once (views of one tensor share it); storages of ``params`` are left out. This is
    what a training step holds between its forward and its backward (see the module docstring).
    """
    skip = {p.untyped_storage().data_ptr() for p in params}
    saved: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in skip:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        forward()
    return sum(saved.values())


def profile(model: nn.Module, input_size: tuple[int, ...]) -> Profile:
    """Parameters, forward FLOPs and activation memory of ``model`` on a random input of ``input_size``.

    ``input_size`` is (N, C, H, W) or (C, H, W) for N = 1. The forward runs once in training mode with
    gradients on; the model's mode, BatchNorm statistics and other buffers are restored afterwards.
    """
    if len(input_size) == 3:
        input_size = (1, *input_size)
    if len(input_size) != 4 or min(input_size) < 1:
        raise PdeconvError(f"input_size must be (N, C, H, W) or (C, H, W) with positive sizes; got {input_size}")
    params = list(model.parameters())
    reference = params[0] if params else torch.empty(0)
    x = torch.randn(input_size, dtype=reference.dtype, device=reference.device)

    buffers = {name: b.clone() for name, b in model.named_buffers()}
    was_training = model.training
    model.train()
    try:
        with torch.enable_grad(), FlopCounterMode(display=False) as counter:
            activation_bytes = saved_activation_bytes(lambda: model(x), params)
    finally:
        model.train(was_training)
        with torch.no_grad():
            for name, b in model.named_buffers():
                if name in buffers and b.shape == buffers[name].shape:
                    b.copy_(buffers[name])
    return Profile(
        params=sum(p.numel() for p in params),
        flops=counter.get_total_flops(),
        activation_bytes=activation_bytes,
        input_size=tuple(input_size),
    )
