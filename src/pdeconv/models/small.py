"""PDE-ResNets for small images (28×28 Fashion-MNIST, 32×32 CIFAR), every variant, any ``in_chans``.

* ``pde_resnet20/32/56``: He et al.'s CIFAR ResNets (arXiv 1512.03385, §4.2): a 3×3 stem to 16 channels,
  three stages of n BasicBlocks with 16, 32, 64 channels (×``widen_factor``) at full, 1/2 and 1/4
  resolution, global average pooling and a linear classifier; depth 6n + 2. Shortcuts that change shape use
  option A by default (subsample by the stride, zero-pad the new channels: no parameters, 0.27 M
  parameters for ResNet-20) or option B (``shortcut="B"``: 1×1 conv + BatchNorm, as torchvision does).
* ``pde_resnet18_small``: torchvision's ResNet-18 with a 3×3 stride-1 stem and no max-pool (the usual CIFAR
  adaptation), so the last stage sees 1/8 of the input instead of 1/32.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.resnet import conv1x1, conv3x3

from pdeconv.boundary import set_boundary
from pdeconv.errors import PdeconvError
from pdeconv.models.blocks import BasicBlock, basic_block, init_weights
from pdeconv.models.registry import register_model
from pdeconv.models.resnet import ClassifierMixin, PDEResNet, resolve_options
from pdeconv.models.variants import VariantOptions

__all__ = ["PadShortcut", "CifarResNet", "pde_resnet20", "pde_resnet32", "pde_resnet56", "pde_resnet18_small"]

_SHORTCUTS = ("A", "B")


class PadShortcut(nn.Module):
    """He et al.'s option-A shortcut: ``x[:, :, ::s, ::s]`` with ``out − in`` zero channels appended."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.extra, self.stride = out_channels - in_channels, stride

    def forward(self, x: Tensor) -> Tensor:
        return F.pad(x[:, :, :: self.stride, :: self.stride], (0, 0, 0, 0, 0, self.extra))

    def extra_repr(self) -> str:
        return f"stride={self.stride}, zero_channels={self.extra}"


class CifarResNet(ClassifierMixin, nn.Module):
    """He et al.'s CIFAR ResNet of depth 6n + 2 with variant blocks; torchvision's attribute names."""

    def __init__(
        self,
        n: int,
        *,
        options: VariantOptions | None = None,
        num_classes: int = 10,
        in_chans: int = 3,
        widen_factor: int = 1,
        shortcut: str = "A",
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        if shortcut not in _SHORTCUTS:
            raise PdeconvError(f"unknown shortcut {shortcut!r}; valid ones: A (zero-pad), B (1×1 conv)")
        if n < 1 or widen_factor < 1:
            raise PdeconvError(f"blocks per stage n and widen_factor must be ≥ 1; got {n}, {widen_factor}")
        self.variant = options = options or VariantOptions()
        widths = [16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = conv3x3(in_chans, widths[0])
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.Identity()  # none: the name keeps torchvision's layout (and timm's stem group)
        inplanes = widths[0]
        for i, planes in enumerate(widths):
            stride = 1 if i == 0 else 2
            blocks = []
            for j in range(n):
                downsample = None
                if j == 0 and (stride != 1 or inplanes != planes):
                    downsample = (
                        PadShortcut(inplanes, planes, stride)
                        if shortcut == "A"
                        else nn.Sequential(conv1x1(inplanes, planes, stride), nn.BatchNorm2d(planes))
                    )
                blocks.append(basic_block(inplanes, planes, stride if j == 0 else 1, downsample, options=options))
                inplanes = planes
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.global_pool = "avg"
        self.num_features = self.head_hidden_size = widths[-1]
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes)
        init_weights(self, zero_init_residual=zero_init_residual)
        set_boundary(self.conv1, options.bc)  # the stem; each block sets its own convs
        self.stage_names = ("layer1", "layer2", "layer3")
        self.drop_rate, self.grad_checkpointing = 0.0, False  # timm: dropout before fc, checkpointing
        self.feature_info = [{"num_chs": widths[0], "reduction": 1, "module": "relu"}] + [
            {"num_chs": w, "reduction": 2**i, "module": f"layer{i + 1}"} for i, w in enumerate(widths)]

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.maxpool(self._stem(x))
        if self.grad_checkpointing and self.training and not torch.jit.is_scripting():
            return self._stages(x)
        return self.layer3(self.layer2(self.layer1(x)))


def _cifar(
    n: int, variant: str | VariantOptions, bc: str | None, num_classes: int, in_chans: int, **kwargs: Any
) -> CifarResNet:
    options = resolve_options(variant, bc)
    return CifarResNet(n, options=options, num_classes=num_classes, in_chans=in_chans, **kwargs)


@register_model(small_images=True, feature_stride=4, feature_levels=4)
def pde_resnet20(
    *,
    variant: str | VariantOptions = "baseline",
    num_classes: int = 10,
    in_chans: int = 3,
    bc: str | None = None,
    **kwargs: Any,
) -> CifarResNet:
    """He et al.'s ResNet-20 (n = 3); ``widen_factor``, ``shortcut`` ("A" or "B") as :class:`CifarResNet`."""
    return _cifar(3, variant, bc, num_classes, in_chans, **kwargs)


@register_model(small_images=True, feature_stride=4, feature_levels=4)
def pde_resnet32(
    *,
    variant: str | VariantOptions = "baseline",
    num_classes: int = 10,
    in_chans: int = 3,
    bc: str | None = None,
    **kwargs: Any,
) -> CifarResNet:
    """He et al.'s ResNet-32 (n = 5); ``widen_factor``, ``shortcut`` ("A" or "B") as :class:`CifarResNet`."""
    return _cifar(5, variant, bc, num_classes, in_chans, **kwargs)


@register_model(small_images=True, feature_stride=4, feature_levels=4)
def pde_resnet56(
    *,
    variant: str | VariantOptions = "baseline",
    num_classes: int = 10,
    in_chans: int = 3,
    bc: str | None = None,
    **kwargs: Any,
) -> CifarResNet:
    """He et al.'s ResNet-56 (n = 9); ``widen_factor``, ``shortcut`` ("A" or "B") as :class:`CifarResNet`."""
    return _cifar(9, variant, bc, num_classes, in_chans, **kwargs)


@register_model(small_images=True, feature_stride=8, feature_levels=5)
def pde_resnet18_small(
    *,
    variant: str | VariantOptions = "baseline",
    num_classes: int = 10,
    in_chans: int = 3,
    bc: str | None = None,
    **kwargs: Any,
) -> PDEResNet:
    """ResNet-18 for small images: 3×3 stride-1 stem, no max-pool; other keywords as :class:`PDEResNet`."""
    options = resolve_options(variant, bc)
    return PDEResNet(
        BasicBlock, [2, 2, 2, 2], options=options, num_classes=num_classes, in_chans=in_chans, small_stem=True,
        **kwargs,
    )
