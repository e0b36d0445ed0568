"""ResNet blocks whose 3×3 operator is chosen by a :class:`VariantOptions`: one code path for every variant.

Both blocks keep torchvision's signature ``(inplanes, planes, stride, downsample, groups, base_width,
dilation, norm_layer)`` and attribute names, plus the keyword ``options``. The variant changes only the
spatial stage ``conv → bn → relu``:

* ``dw = m``: the 3×3 becomes :class:`~pdeconv.layers.DifferentialConv2d` (depthwise 3×3 ×m). In the
  Bottleneck the 1×1 after it is ``conv3`` itself (the essay's patch: ``conv2`` gives ``width·m`` channels,
  ``bn2`` normalises them, ``conv3`` mixes them); in the BasicBlock each 3×3 becomes depthwise ×m followed by
  its own 1×1 (``convK.pointwise``) back to ``planes``, and ``bnK`` follows as before.
* ``quasilinear``: the depthwise layer is :class:`~pdeconv.layers.QuasiLinear` (1×1 to 2C, product, step).
* ``varcoef = d``: the output of each spatial conv is multiplied by polynomial fields ``a(x, y)`` of degree d
  before its BatchNorm (``mix`` in the Bottleneck as in the essay; ``mix1``/``mix2`` in the BasicBlock).
* ``bc``: the boundary condition of every padded convolution of the block, set in one place: the block's last
  line, ``set_boundary(self, options.bc)`` (the networks set their stem's the same way).
* ``leapfrog`` (BasicBlock): a block that keeps its shape is ``step``, two :class:`~pdeconv.layers.Leapfrog`
  steps ``u ↦ 2u − u_prev + f_k(u)`` of ``f_k(u) = −K_kᵀ relu(BN_k(K_k u))`` from rest (h = 1; the
  :class:`~pdeconv.layers.SymmetricConv` K_k has the shape of the baseline's convK, BN_k of its bnK). No ReLU
  after it: the two steps are the whole block. Downsampling blocks stay as the baseline's.

With the ``seed`` options the Bottleneck has exactly the essay's state-dict keys and computes the same
function up to floating-point rounding (``tests/test_models.py`` checks it against a verbatim copy of the
essay's block).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from torch import Tensor, nn
from torchvision.models.resnet import conv1x1, conv3x3

from pdeconv.boundary import set_boundary
from pdeconv.errors import PdeconvError
from pdeconv.layers import DifferentialConv2d, Leapfrog, QuasiLinear, SymmetricConv, VariableCoefficients
from pdeconv.models.variants import VariantOptions

__all__ = ["BasicBlock", "Bottleneck", "spatial_operator", "coefficient_fields", "with_options", "init_weights"]

_BASELINE = VariantOptions()


def spatial_operator(
    in_channels: int,
    out_channels: int,
    options: VariantOptions,
    *,
    stride: int = 1,
    groups: int = 1,
    dilation: int = 1,
    pointwise: bool = True,
) -> tuple[nn.Module, int]:
    """The variant's 3×3 operator and its number of output channels.

    Full 3×3 conv ``in → out`` (baseline), or depthwise ×m (``options.dw``) with the 1×1 to ``out`` when
    ``pointwise`` (else ``in·m`` outputs, left for the caller's next 1×1 to mix). Zero padding: the block
    that holds the operator gives it the variant's boundary condition (one ``set_boundary`` over the block).
    """
    if options.dw is None:
        return conv3x3(in_channels, out_channels, stride, groups, dilation), out_channels
    if dilation != 1:
        raise PdeconvError("depthwise variants support no dilation; leave replace_stride_with_dilation unset")
    layer = QuasiLinear if options.quasilinear else DifferentialConv2d
    op = layer(
        in_channels,
        options.dw,
        order=options.order,
        stride=stride,
        mix=pointwise,
        out_channels=out_channels if pointwise else None,
    )
    return op, (out_channels if pointwise else in_channels * options.dw)


def coefficient_fields(channels: int, options: VariantOptions) -> nn.Module:
    """``u ↦ u · a(x, y)`` of the variant's degree (identity at init, or the essay's init), or ``nn.Identity``."""
    if options.varcoef is None:
        return nn.Identity()
    init = "default" if options.seed_compatible else "identity"
    return VariableCoefficients(channels, options.varcoef, seed_compatible=options.seed_compatible, init=init)


class BasicBlock(nn.Module):
    """ResNet-18/34 block: two spatial stages ``op → a(x, y)· → bn (→ relu)`` and the identity skip."""

    expansion: int = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        groups: int = 1,
        base_width: int = 64,
        dilation: int = 1,
        norm_layer: Callable[..., nn.Module] | None = None,
        *,
        options: VariantOptions = _BASELINE,
    ) -> None:
        super().__init__()
        norm_layer = norm_layer or nn.BatchNorm2d
        if groups != 1 or base_width != 64:
            raise PdeconvError("BasicBlock supports only groups=1 and width_per_group=64 (as torchvision's)")
        if dilation > 1:
            raise PdeconvError("BasicBlock supports no dilation (as torchvision's)")
        self.conv1, _ = spatial_operator(inplanes, planes, options, stride=stride)
        self.mix1 = coefficient_fields(planes, options)
        self.bn1 = norm_layer(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2, _ = spatial_operator(planes, planes, options)
        self.mix2 = coefficient_fields(planes, options)
        self.bn2 = norm_layer(planes)
        self.downsample = downsample
        self.stride = stride
        set_boundary(self, options.bc)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.mix1(self.conv1(x))))
        out = self.bn2(self.mix2(self.conv2(out)))
        identity = x if self.downsample is None else self.downsample(x)
        out += identity
        return self.relu(out)


class LeapfrogBlock(nn.Module):
    """A hyperbolic block: two leapfrog steps (h = 1, from rest) of ``u_tt = −K_kᵀ σ(BN_k(K_k u))``, k = 1, 2
    (:class:`~pdeconv.layers.Leapfrog` of two :class:`~pdeconv.layers.SymmetricConv`), in place of a
    :class:`BasicBlock` that keeps its input's shape: the same parameters (two 3×3 kernels and two BatchNorms),
    ``u ↦ u + 2·f₁(u) + f₂(u + f₁(u))``. With both BatchNorm scales zero (``zero_init_residual``) f ≡ 0 and the
    block is the identity, as a zero-initialised residual branch makes a :class:`BasicBlock`."""

    expansion: int = 1

    def __init__(self, planes: int, *, bc: str = "dirichlet", norm_layer: Callable[..., nn.Module] | None = None):
        super().__init__()
        norm_layer = norm_layer or nn.BatchNorm2d
        self.step = Leapfrog([SymmetricConv(planes, bias=False, bc=bc,
                                            activation=nn.Sequential(norm_layer(planes), nn.ReLU()))
                              for _ in range(2)], 1.0)

    def forward(self, x: Tensor) -> Tensor:
        return self.step(x)

    def zero_init_residual(self) -> None:
        """Zero each step's BatchNorm scale: f ≡ 0, the block starts as the identity."""
        for f in self.step.fs:
            nn.init.zeros_(f.activation[0].weight)


def basic_block(
    inplanes: int,
    planes: int,
    stride: int = 1,
    downsample: nn.Module | None = None,
    groups: int = 1,
    base_width: int = 64,
    dilation: int = 1,
    norm_layer: Callable[..., nn.Module] | None = None,
    *,
    options: VariantOptions = _BASELINE,
) -> nn.Module:
    """The block of a ResNet-18/34-style stage at this place: a :class:`LeapfrogBlock` where the variant takes
    leapfrog steps and the block keeps its input's shape (stride 1, no downsampling), else a :class:`BasicBlock`
    (torchvision's block signature)."""
    if options.leapfrog and stride == 1 and downsample is None and inplanes == planes:
        if groups != 1 or base_width != 64 or dilation > 1:
            raise PdeconvError("leapfrog blocks support only groups=1, width_per_group=64 and no dilation")
        return LeapfrogBlock(planes, bc=options.bc, norm_layer=norm_layer)
    return BasicBlock(inplanes, planes, stride, downsample, groups, base_width, dilation, norm_layer, options=options)


class Bottleneck(nn.Module):
    """ResNet-50/101/152 block (V1.5, stride in the 3×3): ``1×1 → op → a(x, y)· → 1×1``, identity skip."""

    expansion: int = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        groups: int = 1,
        base_width: int = 64,
        dilation: int = 1,
        norm_layer: Callable[..., nn.Module] | None = None,
        *,
        options: VariantOptions = _BASELINE,
    ) -> None:
        super().__init__()
        norm_layer = norm_layer or nn.BatchNorm2d
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = conv1x1(inplanes, width)
        self.bn1 = norm_layer(width)
        self.conv2, mid = spatial_operator(
            width, width, options, stride=stride, groups=groups, dilation=dilation, pointwise=False
        )
        self.bn2 = norm_layer(mid)
        self.mix = coefficient_fields(mid, options)
        self.conv3 = conv1x1(mid, planes * self.expansion)
        self.bn3 = norm_layer(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride
        set_boundary(self, options.bc)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.mix(self.conv2(out))))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        out += identity
        return self.relu(out)


def with_options(block: type[BasicBlock | Bottleneck], options: VariantOptions) -> Callable[..., nn.Module]:
    """``block`` with ``options`` bound, as torchvision's ``ResNet`` wants a block: a callable with ``expansion``
    (for :class:`BasicBlock`, :func:`basic_block`, which puts a :class:`LeapfrogBlock` where the variant asks)."""
    make = partial(basic_block if block is BasicBlock else block, options=options)
    make.expansion = block.expansion  # type: ignore[attr-defined]
    return make


def init_weights(model: nn.Module, *, convs: bool = True, zero_init_residual: bool = False) -> None:
    """torchvision's ResNet initialisation, extended to the PDE layers.

    Kaiming-normal (fan-out, ReLU gain) for every conv weight: ``nn.Conv2d`` (skipped with ``convs=False``,
    for a model whose ``nn.Conv2d`` torchvision's ``ResNet`` has initialised already), the free depthwise
    kernels of ``DifferentialConv2d`` (the essay's grouped ``conv2``) and, for ``seed_compatible`` fields,
    the weight of ``VariableCoefficients`` (the essay's ``mix`` is an ``nn.Conv2d``, so torchvision
    initialises it so); BatchNorm → (1, 0). Order-k kernels and identity-initialised fields keep their
    own init. ``zero_init_residual`` zeroes each block's last BatchNorm: every residual branch starts at 0.
    """
    for m in model.modules():
        if (
            (convs and isinstance(m, nn.Conv2d))
            or (isinstance(m, DifferentialConv2d) and m.order is None)
            or (isinstance(m, VariableCoefficients) and m.seed_compatible)
        ):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif convs and isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)
    if zero_init_residual:
        for m in model.modules():
            if isinstance(m, Bottleneck):
                nn.init.zeros_(m.bn3.weight)
            elif isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)
            elif isinstance(m, LeapfrogBlock):
                m.zero_init_residual()
