"""Boundary conditions ↔ padding: "padding is a boundary condition".

A k×k convolution at the edge of the image reads ``r = k // 2`` samples outside it; what padding puts
there is the boundary condition of the PDE the network solves. One table, used everywhere:

=============  ================  ====================================================================
name           padding mode      meaning (ghost samples u[-1], u[-2], ... left of u[0])
=============  ================  ====================================================================
``dirichlet``  ``zeros``         u = 0 outside: homogeneous Dirichlet (PyTorch's default).
``neumann``    ``reflect``       u[-j] = u[j]: the mirror about the boundary *sample*, so the central
                                 difference (u[1] − u[-1]) / 2h = 0 there: ∂u/∂n = 0 at the boundary
                                 node. The essay's choice; waves bounce back instead of draining away.
``periodic``   ``circular``      u[-j] = u[W − j]: the image is a torus.
``replicate``  ``replicate``     u[-j] = u[0]: ∂u/∂n = 0 at the cell face half a sample outside (a
                                 first-order Neumann condition; also the "edge" mode of image libraries).
=============  ================  ====================================================================

Reflect and replicate padding break the exact adjoint of a convolution (see ``layers.steppers``): only
``dirichlet`` and ``periodic`` keep ``⟨K u, v⟩ = ⟨u, Kᵀ v⟩`` with Kᵀ the flipped kernel.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["BOUNDARY_CONDITIONS", "padding_mode", "pad", "convolve", "set_boundary", "boundary_of"]

#: boundary condition → ``nn.Conv2d(padding_mode=...)``
BOUNDARY_CONDITIONS: dict[str, str] = {
    "dirichlet": "zeros",
    "neumann": "reflect",
    "periodic": "circular",
    "replicate": "replicate",
}
_F_PAD_MODE = {"zeros": "constant", "reflect": "reflect", "circular": "circular", "replicate": "replicate"}
_BC_OF_MODE = {mode: bc for bc, mode in BOUNDARY_CONDITIONS.items()}


def padding_mode(bc: str) -> str:
    """The ``nn.Conv2d`` padding mode implementing boundary condition ``bc``; ``ValueError`` if unknown."""
    try:
        return BOUNDARY_CONDITIONS[bc]
    except (KeyError, TypeError):
        valid = ", ".join(BOUNDARY_CONDITIONS)
        raise ValueError(f"unknown boundary condition {bc!r}; valid ones: {valid}") from None


def boundary_of(conv: nn.Conv2d) -> str:
    """The boundary condition a convolution implements (its padding mode, named by PDE meaning)."""
    return _BC_OF_MODE[conv.padding_mode]


def _as_lrtb(width: int | tuple[int, ...]) -> tuple[int, int, int, int]:
    if isinstance(width, int):
        return (width, width, width, width)
    w = tuple(int(v) for v in width)
    if len(w) == 2:  # (height pad, width pad), like nn.Conv2d's padding
        return (w[1], w[1], w[0], w[0])
    if len(w) == 4:
        return w  # (left, right, top, bottom), like F.pad
    raise ValueError(f"width must be an int, (pad_h, pad_w) or (left, right, top, bottom); got {width!r}")


def _check_reflect(x: Tensor, lrtb: tuple[int, int, int, int], where: str = "") -> None:
    h, w = x.shape[-2:]
    if max(lrtb[0], lrtb[1]) >= w or max(lrtb[2], lrtb[3]) >= h:
        raise ValueError(
            f"{where}neumann (reflect) padding of {max(lrtb)} needs inputs larger than the padding, but the "
            f"input is {h}×{w} (H×W). Use a larger input, fewer downsampling steps, or bc='replicate'."
        )


def pad(x: Tensor, width: int | tuple[int, ...], bc: str = "dirichlet") -> Tensor:
    """Pad the last two axes of ``x`` (..., H, W) by ``width`` under boundary condition ``bc``.

    ``width`` is an int, ``(pad_h, pad_w)``, or ``(left, right, top, bottom)`` as in ``F.pad``.
    """
    mode = _F_PAD_MODE[padding_mode(bc)]
    lrtb = _as_lrtb(width)
    if mode == "reflect":
        _check_reflect(x, lrtb)
    if mode == "constant":
        return F.pad(x, lrtb)
    if x.dim() < 3:  # F.pad's non-constant modes want a channel axis
        return F.pad(x.unsqueeze(0), lrtb, mode=mode).squeeze(0)
    return F.pad(x, lrtb, mode=mode)


def convolve(u: Tensor, kernel: Tensor, bc: str = "dirichlet", stride: int = 1, groups: int = 1) -> Tensor:
    """``K ⋆ u`` (cross-correlation, as ``conv2d``) with the boundary condition ``bc``; same size for stride 1.

    ``u`` is (N, C, H, W) or (H, W); ``kernel`` is (k, k), applied to every channel alone, or a conv weight
    (C_out, C_in/groups, k, k).
    """
    squeeze = u.dim() == 2
    if squeeze:
        u = u[None, None]
    kernel = kernel.to(dtype=u.dtype, device=u.device)
    if kernel.dim() == 2:
        c = u.shape[1]
        kernel = kernel.expand(c, 1, *kernel.shape)
        groups = c
    kh, kw = kernel.shape[-2:]
    u = pad(u, (kw // 2, kw // 2, kh // 2, kh // 2), bc)
    out = F.conv2d(u, kernel, stride=stride, groups=groups)
    return out[0, 0] if squeeze else out


def _reflect_guard(module: nn.Conv2d, args: tuple) -> None:
    # Forward pre-hook on convs switched to neumann: turn PyTorch's cryptic reflect error into a clear one.
    p = module._reversed_padding_repeated_twice
    _check_reflect(args[0], tuple(p), where=f"Conv2d({module.in_channels}, {module.out_channels}): ")


def set_boundary(
    model: nn.Module,
    bc: str,
    *,
    only: Iterable[str] | Callable[[str, nn.Module], bool] | None = None,
) -> int:
    """Switch every ``nn.Conv2d`` with non-zero padding in ``model`` to boundary condition ``bc``.

    Works on any model (torchvision, timm, pdeconv). Modules that carry their boundary condition by name in
    a string attribute ``bc`` (pdeconv's ``DifferentialConv2d``, ...) get ``bc`` set instead. ``only``
    restricts the change to the named modules (an iterable of names from ``model.named_modules()``) or to
    those for which ``only(name, module)`` is true. Returns how many modules were changed. Weights are
    untouched.
    """
    mode = padding_mode(bc)
    if only is not None and not callable(only):
        names = set(only)
        known = {n for n, _ in model.named_modules()}
        missing = names - known
        if missing:
            raise ValueError(f"set_boundary(only=...): no modules named {sorted(missing)} in this model")
        only = lambda name, m, names=names: name in names  # noqa: E731
    changed = 0
    for name, m in model.named_modules():
        named_bc = isinstance(getattr(m, "bc", None), str) and m.bc in BOUNDARY_CONDITIONS
        padded_conv = isinstance(m, nn.Conv2d) and any(m._reversed_padding_repeated_twice)
        if not (named_bc or padded_conv) or (only is not None and not only(name, m)):
            continue
        if named_bc:
            m.bc = bc  # pdeconv's own layers (DifferentialConv2d, ...) pad through pad() by name
            changed += 1
            continue
        m.padding_mode = mode
        guards = [k for k, hook in m._forward_pre_hooks.items() if hook is _reflect_guard]
        if mode == "reflect" and not guards:
            m.register_forward_pre_hook(_reflect_guard)
        elif mode != "reflect":
            for k in guards:
                del m._forward_pre_hooks[k]
        changed += 1
    return changed
