"""Autotuning: the fastest exact way to compute a layer, measured on the machine that runs it — opted into.

Several pdeconv layers can compute the same function in more than one exact way (a depthwise ×m convolution and its
1×1 as two convolutions or as one dense one; a grouped convolution on NCHW or channels-last memory; a boundary
condition as a padding copy or inside the convolution). Which is fastest depends on the CPU or GPU, its kernels, the
shapes and the dtype, so it can be measured, as ``torch.backends.cudnn.benchmark`` chooses cuDNN algorithms: with
autotuning on, the first time a layer meets a new *key* (layer configuration, input shape, dtype under autocast,
device, memory format, whether gradients are wanted), each candidate path runs forward (and backward, when gradients
are wanted) on detached copies of the real inputs, a few times, and the fastest median wins. The choice is cached
for the process. Nothing the candidates compute reaches the model: no parameter gradient, no state.

All paths compute the same products and differ only in the order of summation, so results agree to floating-point
rounding. For reproducibility (a resumed run on the same machine continues exactly) the choices are recorded by
the training engine and restored with :func:`restore`.

Like ``cudnn.benchmark``, it is **off for a library user**: a layer built and called in one's own code takes its
reference path (the plain formulation), with no measuring and no global state touched. Training scripts turn it
on — :func:`pdeconv.engine.train` (so ``pdeconv train`` and ``pdeconv compare``) and the benchmarks call
:func:`enable` — as timm's ``train.py`` turns on ``cudnn.benchmark``. The switch:

* ``enable()``: measure at first use, unless the environment chose a mode (below);
* ``set_mode("measure")``: measure at first use;
* ``set_mode("reference")`` (the default): always each layer's reference path;
* ``set_mode(name)``: force the path ``name`` wherever a layer has it, the reference path elsewhere.

``PDECONV_AUTOTUNE`` in the environment (read at import; ``PDECONV_PATHS``, its former name, is read too) sets the
mode for the whole process, and then :func:`enable` leaves it alone: e.g. ``PDECONV_AUTOTUNE=reference pdeconv
train ...`` trains on the reference paths.

Under ``torch.compile``/``torch.export`` or a dispatch mode (``FlopCounterMode``) nothing is measured: layers take
their cached choice, else the reference path. Under ``torch.compile`` sizes may be symbolic (dynamic shapes, as
after a last batch of another size), so it takes the latest choice made in eager mode for the layer's
configuration at any input size. Saved-tensor hooks of the caller (a memory count) do not see the
candidates.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor

__all__ = ["Candidate", "choose", "chosen", "clear", "enable", "is_channels_last", "mode", "restore", "set_mode",
           "using"]

#: A candidate path: a function of the inputs (tensors) that returns the output.
Candidate = Callable[..., Tensor]

_FROM_ENVIRONMENT = os.environ.get("PDECONV_AUTOTUNE") or os.environ.get("PDECONV_PATHS") or None
_MODE = _FROM_ENVIRONMENT or "reference"
_CHOICES: dict[str, str] = {}
_ANY_SIZE: dict[str, str] = {}  # the latest choice per configuration at any input size (for torch.compile)
_REPEATS = 3  # timed calls per candidate after a warm-up call, median taken: a convention (cost against noise)


def is_channels_last(x: Tensor) -> bool:
    """Whether ``x`` is a 4-D tensor in channels-last memory, ``(N, H, W, C)`` order, and not also plain
    contiguous (a tensor with C = 1 or H = W = 1 is both; it counts as contiguous)."""
    return x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def mode() -> str:
    """The current mode: ``"measure"``, ``"reference"`` or a forced path name."""
    return _MODE


def set_mode(value: str) -> None:
    """Set how layers choose their path (see the module docstring); clears nothing."""
    global _MODE
    if not isinstance(value, str) or not value:
        raise ValueError(f"path mode must be 'measure', 'reference' or a path name; got {value!r}")
    _MODE = value


def enable() -> None:
    """Turn autotuning on (``set_mode("measure")``) for this process, unless ``PDECONV_AUTOTUNE`` (or
    ``PDECONV_PATHS``) set a mode: what a training script calls, as it would set ``cudnn.benchmark = True``."""
    if _FROM_ENVIRONMENT is None:
        set_mode("measure")


@contextmanager
def using(value: str):
    """``with paths.using("reference"): ...``: the mode inside the block, restored afterwards."""
    previous = _MODE
    set_mode(value)
    try:
        yield
    finally:
        set_mode(previous)


def chosen() -> dict[str, str]:
    """The choices made so far in this process, ``{key: path}`` (a copy; JSON-serialisable)."""
    return dict(_CHOICES)


def restore(choices: Mapping[str, str]) -> None:
    """Take ``choices`` (from :func:`chosen`, e.g. of a run being resumed) as if they had been measured here."""
    _store({str(k): str(v) for k, v in choices.items()})


def clear() -> None:
    """Forget every choice: the next call of each layer measures again."""
    _CHOICES.clear()
    _ANY_SIZE.clear()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn: Candidate, inputs: Sequence[Tensor], grad: bool, device: torch.device) -> float:
    """Median seconds of ``fn`` on detached copies of ``inputs`` (forward, and backward when ``grad``)."""
    copies = [t.detach().requires_grad_(grad and t.is_floating_point()) for t in inputs]
    times = []
    # identity hooks shadow any saved-tensor hooks of the caller (a memory count must not see the candidates)
    with torch.autograd.graph.saved_tensors_hooks(lambda t: t, lambda t: t):
        for i in range(_REPEATS + 1):
            seconds = _run_once(fn, copies, grad, device)
            if i:  # the first call warms caches and allocations up
                times.append(seconds)
    return statistics.median(times)


def _run_once(fn: Candidate, copies: Sequence[Tensor], grad: bool, device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    with torch.set_grad_enabled(grad):
        out = fn(*copies)
        if grad:
            wanted = [t for t in copies if t.requires_grad]
            torch.autograd.grad(out, wanted, torch.ones_like(out), allow_unused=True)
    _sync(device)
    return time.perf_counter() - start


def _observed() -> bool:
    """Whether the call is traced or counted (torch.compile, torch.export, torch.jit.trace, a dispatch mode such
    as ``FlopCounterMode``): then nothing is measured, so the observer sees only the layer's own work."""
    if torch.compiler.is_compiling() or torch.compiler.is_exporting() or torch.jit.is_tracing():
        return True
    try:
        from torch.utils._python_dispatch import _get_current_dispatch_mode
    except ImportError:  # pragma: no cover - older torch
        return False
    return _get_current_dispatch_mode() is not None


def _key(kind: str, config: tuple, inputs: Sequence[Tensor], grad: bool, *, shape: bool = True) -> str:
    """``kind|config...|shape|dtype|device|layout|train-or-eval``; without the shape when ``shape`` is false."""
    x = inputs[0]
    dtype = torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else x.dtype
    layout = "channels_last" if is_channels_last(x) else "contiguous"
    sizes = ["x".join(map(str, x.shape))] if shape else []
    parts = [kind, *map(str, config), *sizes, str(dtype).removeprefix("torch."), x.device.type, layout]
    return "|".join(parts + (["train"] if grad else ["eval"]))


def _without_shape(key: str) -> str:
    parts = key.split("|")
    return "|".join(parts[:-5] + parts[-4:])


def _store(choices: Mapping[str, str]) -> None:
    """Record ``{key: path}``, and each as the latest choice for its configuration at any input size."""
    _CHOICES.update(choices)
    _ANY_SIZE.update({_without_shape(k): v for k, v in choices.items()})


def choose(kind: str, config: tuple, candidates: Mapping[str, Candidate], inputs: Sequence[Tensor],
           reference: str) -> str:
    """The name of the path to use for this call; measures at the first call of a new key.

    ``kind`` and ``config`` identify the layer configuration (e.g. ``("differential", (C, m, stride, ...))``);
    ``candidates`` are the exact paths that apply, ``reference`` the plain one among them; ``inputs`` the
    tensors the candidates take (the real input first, then the parameters they differentiate).
    """
    if reference not in candidates:
        raise ValueError(f"{kind}: the reference path {reference!r} is not among {sorted(candidates)}")
    if _MODE == "reference":
        return reference
    if _MODE != "measure":
        return _MODE if _MODE in candidates else reference
    grad = torch.is_grad_enabled() and any(t.requires_grad for t in inputs)
    if torch.compiler.is_compiling() or torch.compiler.is_exporting():  # sizes may be symbolic: no size in key
        choice = _ANY_SIZE.get(_key(kind, config, inputs, grad, shape=False))
        return choice if choice in candidates else reference
    key = _key(kind, config, inputs, grad)
    choice = _CHOICES.get(key)
    if choice in candidates:
        return choice
    if len(candidates) == 1 or _observed():
        return reference
    device = inputs[0].device
    seconds = {name: _time(fn, inputs, grad, device) for name, fn in candidates.items()}
    _store({key: min(seconds, key=seconds.get)})
    return _CHOICES[key]
