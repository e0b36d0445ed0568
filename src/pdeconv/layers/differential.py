"""The essay's differential convolution: ``C --(3×3, groups=C)--> C·m --(1×1)--> C_out``.

Each input channel ``c`` is hit by ``m`` learned 3×3 kernels, i.e. ``m`` differential operators of order ≤ 2
(up to higher-order terms, see :mod:`pdeconv.stencil`): output channel ``c·m + j`` is ``K_{c·m+j} ⋆ u_c``,
as ``nn.Conv2d(C, C·m, 3, groups=C)`` orders them. An optional 1×1 conv then takes linear combinations.
Padding 1 is the boundary condition ``bc`` (:mod:`pdeconv.boundary`).

The layer is linear, and with the 1×1 it is one dense operator: ``pointwise(depthwise(u)) = conv2d(u, W)`` with
``W[o, c] = Σ_j P[o, c·m + j] · K[c·m + j]`` (:meth:`DifferentialConv2d.folded_weight`): in the dictionary, a
C_out × C·m matrix of constants times a diagonal of m operators per channel is a C_out × C matrix of
differential operators. The parameters stay the depthwise kernels and the 1×1 weight either way.

Paths (:mod:`pdeconv.autotune` measures them at first use and takes the fastest, on the machine running):

* ``reference``: the grouped convolution on the input as it is stored, then the 1×1;
* ``channels_last``: the grouped convolution on channels-last memory (oneDNN's grouped kernels with several
  outputs per group are slow on NCHW CPU tensors), then the 1×1;
* ``repeated``: each input channel repeated m times and the ``groups = C·m`` depthwise kernel (stride 1,
  m > 1); its backward rebuilds the copy instead of keeping it;
* ``folded`` (with the 1×1): one dense convolution with :meth:`~DifferentialConv2d.folded_weight`; autograd
  takes the gradient through the fold to the same parameters.

Every path computes the same products; they add them in other orders (other kernels), so results agree to
floating-point rounding, not bit for bit (``tests/test_differential.py`` bounds the difference).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pdeconv import autotune, boundary
from pdeconv.errors import PdeconvError
from pdeconv.layers._input import batched
from pdeconv.stencil import basis, moments, multi_indices, operator_name

__all__ = ["DifferentialConv2d", "PATHS", "depthwise_conv", "fold"]

#: the paths a DifferentialConv2d may take (``folded`` needs the 1×1, ``repeated`` stride 1 and m > 1)
PATHS = ("reference", "channels_last", "repeated", "folded")


def _repeat(u: Tensor, m: int) -> Tensor:
    """``u`` with channel c repeated m times as channels ``c·m … c·m + m − 1``, in u's memory format."""
    N, C, H, W = u.shape
    if autotune.is_channels_last(u):
        nhwc = u.permute(0, 2, 3, 1).unsqueeze(-1).expand(N, H, W, C, m)
        return nhwc.reshape(N, H, W, C * m).permute(0, 3, 1, 2)
    return u.unsqueeze(2).expand(N, C, m, H, W).reshape(N, C * m, H, W)


def _sum_repeats(g: Tensor, m: int) -> Tensor:
    """The adjoint of :func:`_repeat`: sum the m copies of each channel, in g's memory format."""
    if autotune.is_channels_last(g):
        return g.permute(0, 2, 3, 1).unflatten(3, (-1, m)).sum(-1).permute(0, 3, 1, 2)
    return g.unflatten(1, (-1, m)).sum(2)


class _RepeatedDepthwise(torch.autograd.Function):
    """``conv2d(repeat(u), K, groups=C·m)``; saves u, not the m-fold copy, and rebuilds the copy in backward."""

    @staticmethod
    def forward(ctx, u: Tensor, kernel: Tensor, padding: int, multiplier: int) -> Tensor:
        ctx.save_for_backward(u, kernel)
        ctx.padding, ctx.multiplier = padding, multiplier
        return F.conv2d(_repeat(u, multiplier), kernel, padding=padding, groups=kernel.shape[0])

    @staticmethod
    def backward(ctx, grad: Tensor):
        u, kernel = ctx.saved_tensors
        need_u, need_kernel = ctx.needs_input_grad[:2]
        p = ctx.padding
        grad_r, grad_kernel, _ = torch.ops.aten.convolution_backward(
            grad, _repeat(u, ctx.multiplier), kernel, None, [1, 1], [p, p], [1, 1], False, [0, 0],
            kernel.shape[0], [need_u, need_kernel, False],
        )
        grad_u = _sum_repeats(grad_r, ctx.multiplier) if need_u else None
        return grad_u, grad_kernel, None, None


def depthwise_conv(
    u: Tensor, kernel: Tensor, *, groups: int, stride: int = 1, padding: int = 0, path: str = "reference"
) -> Tensor:
    """``F.conv2d(u, kernel, stride=stride, padding=padding, groups=groups)`` for ``kernel`` (groups·m, 1, k, k).

    Output channel ``c·m + j`` is ``kernel[c·m + j] ⋆ u_c``. ``path`` as in the module docstring:
    ``reference`` (u as stored), ``channels_last`` (u converted, output channels-last) or ``repeated`` (stride
    1, m > 1: a depthwise conv of the m-fold repeated input; the backward rebuilds the copy, so the saved
    activations are those of the plain path). Under autocast the inputs are cast as ``conv2d`` casts them.
    """
    if path == "reference":
        return F.conv2d(u, kernel, stride=stride, padding=padding, groups=groups)
    if path == "channels_last":
        u = u.contiguous(memory_format=torch.channels_last)
        return F.conv2d(u, kernel, stride=stride, padding=padding, groups=groups)
    if path != "repeated":
        raise PdeconvError(f"depthwise_conv: unknown path {path!r}; valid ones: reference, channels_last, repeated")
    multiplier = kernel.shape[0] // groups
    if stride != 1 or multiplier < 2:
        raise PdeconvError(f"depthwise_conv: the repeated path needs stride 1 and m > 1; got stride {stride}, "
                         f"m = {multiplier}; valid paths here: reference, channels_last")
    if torch.is_autocast_enabled(u.device.type):  # conv2d's autocast rule: float32 (and float16) → the autocast dtype
        dtype = torch.get_autocast_dtype(u.device.type)
        u, kernel = (t.to(dtype) if t.dtype in (torch.float32, torch.float16) else t for t in (u, kernel))
    saves = torch.is_grad_enabled() and (u.requires_grad or kernel.requires_grad)
    if not saves or torch.compiler.is_compiling() or torch.compiler.is_exporting():
        # nothing is saved for a backward (or the compiler plans memory itself): the plain repeat
        return F.conv2d(_repeat(u, multiplier), kernel, padding=padding, groups=kernel.shape[0])
    with torch.autocast(u.device.type, enabled=False):  # the backward must see the forward's dtypes
        return _RepeatedDepthwise.apply(u, kernel, padding, multiplier)


def fold(kernel: Tensor, pointwise: Tensor, channels: int) -> Tensor:
    """The dense weight of a depthwise ×m conv followed by a 1×1: ``W[o, c] = Σ_j P[o, c·m + j] · K[c·m + j]``.

    ``kernel`` is (C·m, 1, k, k) for ``channels`` = C inputs, ``pointwise`` (C_out, C·m, 1, 1); returns
    (C_out, C, k, k). Differentiable (the gradient reaches both factors).
    """
    cm, _, kh, kw = kernel.shape
    m = cm // channels
    P = pointwise.reshape(pointwise.shape[0], channels, m)
    return torch.einsum("ocj,cjpq->ocpq", P, kernel.reshape(channels, m, kh, kw))


class DifferentialConv2d(boundary.BoundaryConditioned, nn.Module):
    """Depthwise 3×3 differential operators (``multiplier`` per channel), then an optional 1×1 mix.

    ``order=None``: free kernels, the parameter ``weight`` of shape ``(C·m, 1, 3, 3)`` with ``nn.Conv2d``'s
    init, so with ``mix=False`` the layer is ``nn.Conv2d(C, C·m, 3, stride, 1, groups=C, bias=False)``
    (same state-dict key and output).

    ``order=k`` (0 ≤ k ≤ 4): kernel ``K_i = Σ_n coefficients[i, n] · B_n`` with ``B = stencil.basis(k)``,
    the kernels whose only nonzero moment is one operator of total order ≤ k (k = 2: 1, ∂x, ∂y, ∂x², ∂x∂y,
    ∂y²), so ``coefficients`` are operator coefficients (h = 1) and K is that operator by construction.
    Init: the orthogonal projection of an ``nn.Conv2d``-initialised kernel onto span(B), times ``√(9/n)``,
    so that ``E‖K‖²`` (the output variance on white noise) equals the free init's.
    ``mix=True`` adds ``pointwise = nn.Conv2d(C·m, out_channels or C, 1, bias=False)``.
    """

    def __init__(
        self,
        channels: int,
        multiplier: int = 4,
        order: int | None = None,
        bc: str = "dirichlet",
        stride: int = 1,
        mix: bool = True,
        out_channels: int | None = None,
    ) -> None:
        super().__init__()
        bc = boundary.boundary_condition(bc)
        if channels < 1 or multiplier < 1 or stride < 1:
            raise PdeconvError(f"channels, multiplier, stride must be ≥ 1; got {channels}, {multiplier}, {stride}")
        if order is not None and not 0 <= order <= 4:
            raise PdeconvError(f"order must be None (free kernels) or 0..4 (3×3 holds up to ∂x²∂y²); got {order}")
        if out_channels is not None and not mix:
            raise PdeconvError("out_channels needs mix=True; without the 1×1 conv there are channels·multiplier "
                               "outputs")
        self.channels, self.multiplier, self.order = channels, multiplier, order
        self.bc, self.stride = bc, stride
        self.out_channels = (out_channels or channels) if mix else channels * multiplier
        if order is None:
            self.weight = nn.Parameter(torch.empty(channels * multiplier, 1, 3, 3))
        else:
            self.register_buffer("basis", basis(order, 3, dtype=torch.get_default_dtype()), persistent=False)
            self.coefficients = nn.Parameter(torch.empty(channels * multiplier, len(self.basis)))
        self._reset_depthwise()  # before the 1×1 conv draws its init: the RNG order of the essay's two convs
        self.pointwise = nn.Conv2d(channels * multiplier, self.out_channels, 1, bias=False) if mix else None
        self.path: str | None = None  # a forced path (set_path), else measured (pdeconv.autotune)

    def reset_parameters(self) -> None:
        self._reset_depthwise()
        if self.pointwise is not None:
            self.pointwise.reset_parameters()

    def _reset_depthwise(self) -> None:
        device = (self.weight if self.order is None else self.coefficients).device
        free = torch.empty(self.channels * self.multiplier, 1, 3, 3, device=device)
        nn.init.kaiming_uniform_(free, a=math.sqrt(5))  # nn.Conv2d's init
        with torch.no_grad():
            if self.order is None:
                self.weight.copy_(free)
            else:
                B = basis(self.order, 3, dtype=torch.float64).flatten(1)
                least_squares = torch.linalg.pinv(B.T).T.to(free)  # (9, n): kernel ↦ its coefficients
                self.coefficients.copy_(free.flatten(1) @ least_squares * math.sqrt(9 / len(B)))

    @property
    def kernel(self) -> Tensor:
        """The effective depthwise weight ``(C·m, 1, 3, 3)`` in both modes (differentiable)."""
        if self.order is None:
            return self.weight
        return torch.einsum("kn,nij->kij", self.coefficients, self.basis).unsqueeze(1)

    def operators(self) -> dict[str, Tensor]:
        """Operator coefficients ``{name: (C, m)}``, e.g. ``"∂x²"``, of order ≤ 2 (``order=None``) or ≤ ``order``.

        For ``order=None`` these are the free kernels' moments (h = 1), higher moments left out; otherwise the
        ``coefficients`` themselves. Differentiable.
        """
        shape = (self.channels, self.multiplier)
        if self.order is not None:
            names = map(operator_name, multi_indices(self.order, size=3))
            return {name: c.reshape(shape) for name, c in zip(names, self.coefficients.unbind(1))}
        M = moments(self.weight[:, 0])
        return {operator_name((a, b)): M[:, a, b].reshape(shape) for a, b in multi_indices(2)}

    def folded_weight(self) -> Tensor:
        """The layer as one dense 3×3 convolution weight ``(out_channels, channels, 3, 3)``: :func:`fold` of the
        depthwise kernels and the 1×1 (the C_out × C matrix of differential operators). Needs ``mix=True``."""
        if self.pointwise is None:
            raise PdeconvError("folded_weight needs the 1×1 (mix=True): without it the layer is C → C·m, not dense")
        return fold(self.kernel, self.pointwise.weight, self.channels)

    def available_paths(self) -> tuple[str, ...]:
        """The exact paths this layer can take (see the module docstring)."""
        names = ["reference", "channels_last"]
        if self.stride == 1 and self.multiplier > 1:
            names.append("repeated")
        if self.pointwise is not None:
            names.append("folded")
        return tuple(names)

    def set_path(self, path: str | None) -> None:
        """Force this layer's path (``None``: choose as :mod:`pdeconv.autotune` says); ``ValueError`` for a
        path the layer cannot take."""
        if path is not None and path not in self.available_paths():
            raise PdeconvError(
                f"DifferentialConv2d({self.extra_repr()}): path {path!r} does not apply to this layer; valid ones: "
                f"{', '.join(self.available_paths())}"
                + (" (folded needs the 1×1, mix=True)" if path == "folded" else "")
            )
        self.path = path

    def forward(self, u: Tensor) -> Tensor:
        return batched(self, u, self.channels, self._forward)

    def _path_table(self) -> dict[str, Callable[..., Tensor]]:
        """The exact paths of this layer as functions of ``(input, kernel[, 1×1 weight])``, built once per
        boundary condition (``set_boundary`` may change it) and kept on the layer, not rebuilt every call."""
        cached = self.__dict__.get("_paths")
        if cached is not None and cached[0] == self.bc:
            return cached[1]
        padding = 1 if self.bc == "dirichlet" else 0  # zero padding inside conv2d; the others pad first
        stride, groups = self.stride, self.channels

        def separate(path: str) -> Callable[..., Tensor]:
            def run(x: Tensor, k: Tensor, *pointwise: Tensor) -> Tensor:
                out = depthwise_conv(x, k, groups=groups, stride=stride, padding=padding, path=path)
                return F.conv2d(out, pointwise[0]) if pointwise else out

            return run

        table = {name: separate(name) for name in self.available_paths() if name != "folded"}
        if self.pointwise is not None:
            table["folded"] = lambda x, k, p: F.conv2d(x, fold(k, p, groups), stride=stride, padding=padding)
        self.__dict__["_paths"] = (self.bc, table)
        return table

    def __getstate__(self) -> dict:
        state = super().__getstate__().copy()
        state.pop("_paths", None)  # closures: rebuilt on first use (pickling, deepcopy)
        return state

    def _forward(self, u: Tensor) -> Tensor:
        if self.bc != "dirichlet":
            u = boundary.pad(u, 1, self.bc)
        candidates = self._path_table()
        inputs = [u, self.kernel] + ([self.pointwise.weight] if self.pointwise is not None else [])
        config = (self.channels, self.multiplier, self.out_channels, self.stride, self.bc)
        path = self.path or autotune.choose("DifferentialConv2d", config, candidates, inputs, reference="reference")
        return candidates[path](*inputs)

    def extra_repr(self) -> str:
        return (
            f"{self.channels}, multiplier={self.multiplier}, order={self.order}, bc={self.bc!r}, "
            f"stride={self.stride}, out_channels={self.out_channels}"
        )
