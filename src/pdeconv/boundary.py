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

Speed: zero padding is fused into the convolution; the others are a padding copy first. :func:`pad` has two
ways for them on 4-D inputs, both in the input's memory format: PyTorch's ``F.pad`` (whose circular mode returns
NCHW for a channels-last input: made channels-last again, or every layer after it would run in NCHW), and the
``ring`` way, a zero padding whose ghost rows and columns are copied in place, with a backward that adds them back
onto their sources in place (PyTorch's circular backward goes through full-size temporaries).
:mod:`pdeconv.autotune` measures which is faster for each shape (``set_boundary`` routes ``nn.Conv2d`` through
:func:`pad` too).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable
from functools import cache
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from pdeconv import autotune
from pdeconv.errors import PdeconvError

__all__ = [
    "BOUNDARY_CONDITIONS", "BoundaryConditioned", "BoundaryConv2d", "boundary_condition", "padding_mode", "pad",
    "convolve",
    "convolve_along", "set_boundary", "boundary_of",
]

#: boundary condition → ``nn.Conv2d(padding_mode=...)``
BOUNDARY_CONDITIONS: dict[str, str] = {
    "dirichlet": "zeros",
    "neumann": "reflect",
    "periodic": "circular",
    "replicate": "replicate",
}
_F_PAD_MODE = {"zeros": "constant", "reflect": "reflect", "circular": "circular", "replicate": "replicate"}
_BC_OF_MODE = {mode: bc for bc, mode in BOUNDARY_CONDITIONS.items()}


def boundary_condition(bc: str) -> str:
    """The boundary condition named ``bc``, in any case (``"Neumann"`` is ``"neumann"``); ``ValueError`` if
    unknown."""
    name = bc.lower() if isinstance(bc, str) else bc
    if name not in BOUNDARY_CONDITIONS:
        valid = ", ".join(BOUNDARY_CONDITIONS)
        raise PdeconvError(f"unknown boundary condition {bc!r}; valid ones: {valid} (in any case)")
    return name


def padding_mode(bc: str) -> str:
    """The ``nn.Conv2d`` padding mode implementing boundary condition ``bc`` (any case); ``ValueError`` if
    unknown."""
    return BOUNDARY_CONDITIONS[boundary_condition(bc)]


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
    raise PdeconvError(f"width must be an int, (pad_h, pad_w) or (left, right, top, bottom); got {width!r}")


def _check_reflect(x: Tensor, lrtb: tuple[int, int, int, int], where: str = "") -> None:
    h, w = x.shape[-2:]
    if max(lrtb[0], lrtb[1]) >= w or max(lrtb[2], lrtb[3]) >= h:
        raise PdeconvError(
            f"{where}neumann (reflect) padding of {max(lrtb)} needs inputs larger than the padding, but the "
            f"input is {h}×{w} (H×W). Use a larger input, fewer downsampling steps, or bc='replicate'."
        )


def _source(j: int, n: int, mode: str) -> int:
    """The sample a ghost at index ``j`` (< 0 or ≥ n) of an axis of length n copies, under a padding mode."""
    if mode == "reflect":
        return -j if j < 0 else 2 * (n - 1) - j
    if mode == "circular":
        return j % n
    return min(max(j, 0), n - 1)  # replicate


def _ghosts(before: int, after: int, n: int) -> list[int]:
    return [*range(-before, 0), *range(n, n + after)]


class _RingPad(torch.autograd.Function):
    """``F.pad(x, lrtb, mode)`` for the reflect, circular and replicate modes as a zero padding (which keeps x's
    memory format: PyTorch's circular padding returns NCHW for channels-last input, and every layer after it then
    runs in NCHW) whose ghost rows, then columns, are copied in place from the samples they mirror; the backward
    adds each ghost's gradient back onto its source (PyTorch's own goes through full-size temporaries)."""

    @staticmethod
    def forward(ctx, x: Tensor, lrtb: tuple[int, int, int, int], mode: str) -> Tensor:
        left, right, top, bottom = lrtb
        H, W = x.shape[-2:]
        ctx.lrtb, ctx.mode, ctx.size = lrtb, mode, (H, W)
        ctx.memory_format = torch.channels_last if autotune.is_channels_last(x) else torch.contiguous_format
        out = F.pad(x, lrtb)
        for j in _ghosts(top, bottom, H):  # rows first (interior columns), from interior rows
            out[..., top + j, left:left + W] = out[..., top + _source(j, H, mode), left:left + W]
        for j in _ghosts(left, right, W):  # then columns over every row: the corners come from the ghost rows
            out[..., :, left + j] = out[..., :, left + _source(j, W, mode)]
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, g: Tensor):
        left, right, top, bottom = ctx.lrtb
        (H, W), mode = ctx.size, ctx.mode
        grad = g[..., top:top + H, left:left + W].clone(memory_format=ctx.memory_format)
        columns = [(j, _source(j, W, mode)) for j in _ghosts(left, right, W)]
        for j, source in columns:  # ghost columns, interior rows
            grad[..., :, source] += g[..., top:top + H, left + j]
        for i in _ghosts(top, bottom, H):  # ghost rows, their own ghost columns (the corners) folded in first
            row = g[..., top + i, left:left + W].clone()
            for j, source in columns:
                row[..., source] += g[..., top + i, left + j]
            grad[..., _source(i, H, mode), :] += row
        return grad, None, None


def _ring_pad(x: Tensor, lrtb: tuple[int, int, int, int], mode: str) -> Tensor:
    return _RingPad.apply(x, lrtb, mode)


def _aten_pad(x: Tensor, lrtb: tuple[int, int, int, int], mode: str) -> Tensor:
    """``F.pad``, in x's memory format (its circular mode returns NCHW for a channels-last x)."""
    out = F.pad(x, lrtb, mode=mode)
    return out.contiguous(memory_format=torch.channels_last) if autotune.is_channels_last(x) else out


def pad(x: Tensor, width: int | tuple[int, ...], bc: str = "dirichlet", *, dims: int = 2) -> Tensor:
    """Pad the last two axes of ``x`` (..., H, W) by ``width`` under boundary condition ``bc``.

    ``width`` is an int, ``(pad_h, pad_w)``, or ``(left, right, top, bottom)`` as in ``F.pad``. ``dims`` = 1 or
    3 pads the last axis (..., W) or the last three (..., D, H, W) instead, by an int ``width`` on every side.
    """
    bc = boundary_condition(bc)
    mode = _F_PAD_MODE[BOUNDARY_CONDITIONS[bc]]
    if dims != 2:
        return _pad_axes(x, width, mode, dims)
    lrtb = _as_lrtb(width)
    if mode == "reflect":
        _check_reflect(x, lrtb)
    if mode == "constant":
        return F.pad(x, lrtb)
    if x.dim() < 3:  # F.pad's non-constant modes want a channel axis
        return F.pad(x.unsqueeze(0), lrtb, mode=mode).squeeze(0)
    if x.dim() == 4 and (mode != "circular" or (max(lrtb[:2]) <= x.shape[-1] and max(lrtb[2:]) <= x.shape[-2])):
        ways = {"aten": lambda t: _aten_pad(t, lrtb, mode), "ring": lambda t: _ring_pad(t, lrtb, mode)}
        way = autotune.choose("pad", (bc, lrtb), ways, [x], reference="aten")
        return ways[way](x)
    return F.pad(x, lrtb, mode=mode)


def _pad_axes(x: Tensor, width: int | tuple[int, ...], mode: str, dims: int) -> Tensor:
    if dims not in (1, 3) or not isinstance(width, int):
        raise PdeconvError(f"dims must be 1, 2 or 3, and width an int when dims is not 2; got {dims} and {width!r}")
    if x.dim() < dims:
        raise PdeconvError(f"x must have at least {dims} axes to pad {dims}; got shape {tuple(x.shape)}")
    space = tuple(x.shape[x.dim() - dims:])
    if mode == "reflect" and width >= min(space):
        raise PdeconvError(
            f"neumann (reflect) padding of {width} needs inputs larger than the padding, but the input is "
            f"{'×'.join(map(str, space))}. Use a larger input, a smaller filter, or bc='replicate'."
        )
    if mode == "constant":
        return F.pad(x, (width,) * 2 * dims)
    lead = x.shape[:x.dim() - dims]
    batched = x.reshape(-1, 1, *space)  # F.pad's other modes want (N, C, *space)
    return F.pad(batched, (width,) * 2 * dims, mode=mode).reshape(*lead, *(n + 2 * width for n in space))


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


def convolve_along(x: Tensor, taps: Tensor, axis: int, bc: str | None = None, *, stride: int = 1) -> Tensor:
    """A 1-D filter ``taps`` (odd length ``2r + 1``) along one ``axis`` of ``x``, as a cross-correlation:
    ``out[i] = Σ_k taps[k] · x[c_i + k − r]`` with centres ``c_i``.

    With a boundary condition ``bc`` the axis is padded by ``r`` under it and ``c_i = i·stride`` (same size for
    stride 1); with ``bc=None`` only the shifts that fit are taken, ``c_i = r + i·stride``. Other axes untouched.
    """
    taps = taps.to(dtype=x.dtype, device=x.device).reshape(1, 1, -1)
    if taps.shape[-1] % 2 == 0:
        raise PdeconvError(f"taps must have an odd length 2r + 1; got {taps.shape[-1]}")
    moved = x.movedim(axis, -1)
    flat = moved.reshape(-1, 1, moved.shape[-1])
    if bc is not None:
        flat = pad(flat, taps.shape[-1] // 2, bc, dims=1)
    out = F.conv1d(flat, taps, stride=stride)
    return out.reshape(*moved.shape[:-1], out.shape[-1]).movedim(-1, axis)


class BoundaryConditioned:
    """Mixin of pdeconv's layers that impose a boundary condition by name (``self.bc``) rather than by an
    ``nn.Conv2d``'s padding: :func:`set_boundary` changes them through :meth:`set_bc`, and only them (with
    PyTorch's convolutions), so a layer that cannot take a condition refuses it instead of being changed blindly."""

    bc: str

    def set_bc(self, bc: str) -> None:
        """Impose ``bc`` (any name :func:`boundary_condition` takes); a layer that cannot takes some refuses them."""
        self.bc = boundary_condition(bc)


class BoundaryConv2d(nn.Conv2d):
    """An ``nn.Conv2d`` whose non-zero padding goes through :func:`pad` (the boundary condition's fast ways, and a
    clear error for inputs too small to reflect). :func:`set_boundary` gives convolutions this class (a subclass
    of their own, so their parameters, state-dict keys and ``isinstance`` checks stay what they were)."""

    def _conv_forward(self, input: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:  # noqa: UP045
        if torch.jit.is_scripting():  # TorchScript: PyTorch's own padding (the fast ways are Python)
            if self.padding_mode == "zeros":
                return F.conv2d(input, weight, bias, self.stride, self.padding, self.dilation, self.groups)
            padded = F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            return F.conv2d(padded, weight, bias, self.stride, [0, 0], self.dilation, self.groups)
        return self._pdeconv_conv(input, weight, bias)

    @torch.jit.unused
    def _pdeconv_conv(self, input: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        if self.padding_mode == "zeros":
            return F.conv2d(input, weight, bias, self.stride, self.padding, self.dilation, self.groups)
        p = tuple(self._reversed_padding_repeated_twice)
        if self.padding_mode == "reflect":
            try:
                _check_reflect(input, p, where=f"Conv2d({self.in_channels}, {self.out_channels}): ")
            except ValueError as e:
                raise PdeconvError(_too_small(self, e)) from None
        padded = pad(input, p, _BC_OF_MODE[self.padding_mode])
        return F.conv2d(padded, weight, bias, self.stride, 0, self.dilation, self.groups)


#: convolution → (its name in the model set_boundary switched, that model): for errors that name the layer
_OWNERS: weakref.WeakKeyDictionary[nn.Module, tuple[str, weakref.ref]] = weakref.WeakKeyDictionary()
_searching = False  # true while _smallest_input tries sizes (its own failures are expected, not explained)


def _too_small(conv: nn.Conv2d, error: ValueError) -> str:
    """``error`` of a reflect-padded ``conv`` on a too small input, with the module's name and the smallest
    square input its model takes (found by trying sizes), where set_boundary recorded them."""
    owner = _OWNERS.get(conv)
    model = owner[1]() if owner else None
    if _searching or model is None:
        return str(error)
    name, smallest = owner[0], _smallest_input(model)
    size = f" The smallest input this model takes with bc='neumann' is {smallest}×{smallest}." if smallest else ""
    return f"{name}: {error}{size}"


def _smallest_input(model: nn.Module, limit: int = 4096) -> int | None:
    """The smallest n for which ``model`` runs on a (1, C, n, n) input without a reflect padding error (C: its
    first convolution's input channels); None where that is not found (another error, or n > ``limit``)."""
    global _searching
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if first is None:
        return None
    modes = {m: m.training for m in model.modules()}
    device = first.weight.device

    def runs(n: int) -> bool:
        try:
            model(torch.zeros(1, first.in_channels, n, n, device=device, dtype=first.weight.dtype))
        except ValueError as e:
            if "padding" in str(e) and "needs inputs larger" in str(e):
                return False
            raise
        return True

    _searching = True
    try:
        model.eval()
        with torch.no_grad():
            low, high = 1, 2  # runs(low) false; grow high until it runs, then bisect
            while not runs(high):
                low, high = high, 2 * high
                if high > limit:
                    return None
            while high - low > 1:
                middle = (low + high) // 2
                low, high = (low, middle) if runs(middle) else (middle, high)
            return high
    except Exception:  # noqa: BLE001  (the model fails for another reason: say only what is known)
        return None
    finally:
        _searching = False
        for m, training in modes.items():
            m.training = training


@cache
def _boundary_class(cls: type[nn.Conv2d]) -> type[nn.Conv2d]:
    if issubclass(cls, BoundaryConv2d):
        return cls
    if cls is nn.Conv2d:
        return BoundaryConv2d
    return type(f"Boundary{cls.__name__}", (BoundaryConv2d, cls), {})


def set_boundary(
    model: nn.Module,
    bc: str,
    *,
    only: Iterable[str] | Callable[[str, nn.Module], bool] | None = None,
) -> int:
    """Switch every ``nn.Conv2d`` with non-zero padding in ``model`` to boundary condition ``bc``.

    Works on any model (torchvision, timm, pdeconv). pdeconv's layers that impose their condition by name
    (:class:`BoundaryConditioned`: ``DifferentialConv2d``, ``SymmetricHyperbolic2d``) get it through their
    ``set_bc``, which refuses a condition the layer cannot take; no other module is touched. ``only``
    restricts the change to the named modules (an iterable of names from ``model.named_modules()``) or to
    those for which ``only(name, module)`` is true. Returns how many modules were changed. Weights are
    untouched.
    """
    bc = boundary_condition(bc)
    mode = BOUNDARY_CONDITIONS[bc]
    if only is not None and not callable(only):
        names = set(only)
        known = {n for n, _ in model.named_modules()}
        missing = names - known
        if missing:
            raise PdeconvError(f"set_boundary(only=...): no modules named {sorted(missing)} in this model")
        only = lambda name, m, names=names: name in names  # noqa: E731
    changed = 0
    for name, m in model.named_modules():
        named_bc = isinstance(m, BoundaryConditioned)
        padded_conv = isinstance(m, nn.Conv2d) and any(m._reversed_padding_repeated_twice)
        if not (named_bc or padded_conv) or (only is not None and not only(name, m)):
            continue
        if named_bc:
            m.set_bc(bc)  # pdeconv's own layers (DifferentialConv2d, ...) pad through pad() by name
            changed += 1
            continue
        m.padding_mode = mode
        if mode != "zeros" and type(m)._conv_forward is not BoundaryConv2d._conv_forward:
            m.__class__ = _boundary_class(type(m))  # padding through pad(): its fast ways and clear errors
        if mode == "reflect" and name:  # a too small input's error names the layer and the smallest input
            _OWNERS[m] = (name, weakref.ref(model))
        changed += 1
    return changed
