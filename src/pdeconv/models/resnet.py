"""PDE-ResNets at ImageNet size: torchvision's ``ResNet`` with the variant blocks and timm's interface.

``pde_resnet50(variant="seed")`` is torchvision's ResNet-50 with the essay's modified Bottleneck; its
state-dict keys are the essay's (``conv1, bn1, conv2, bn2, mix, conv3, bn3, downsample`` in each block,
torchvision's names outside). Layers a variant leaves unchanged keep torchvision's names and shapes, so
torchvision weights load with :func:`pdeconv.models.load_torchvision_weights`.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models.resnet import ResNet

from pdeconv.boundary import set_boundary
from pdeconv.models.blocks import BasicBlock, Bottleneck, init_weights, with_options
from pdeconv.models.registry import register_model
from pdeconv.models.variants import VariantOptions, get_variant

__all__ = [
    "ClassifierMixin",
    "PDEResNet",
    "resolve_options",
    "pde_resnet18",
    "pde_resnet34",
    "pde_resnet50",
    "pde_resnet101",
    "pde_resnet152",
]

_POOLS = {"avg": nn.AdaptiveAvgPool2d, "max": nn.AdaptiveMaxPool2d}


class ClassifierMixin:
    """timm's classifier interface over the ``avgpool`` and ``fc`` attributes of a torchvision-style ResNet.

    The class using it defines ``forward_features(x)`` → the last feature map (N, num_features, h, w);
    ``forward_head(x, pre_logits)`` → pooled features (``pre_logits=True``) or logits;
    ``reset_classifier(num_classes, global_pool)`` replaces ``fc`` (``num_classes=0``: no classifier) and
    optionally the pooling ("avg", "max", or "" for none, allowed only without a classifier).
    """

    avgpool: nn.Module
    fc: nn.Module
    num_features: int
    num_classes: int
    global_pool: str

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.avgpool(x)
        if self.global_pool:
            x = torch.flatten(x, 1)
        return x if pre_logits else self.fc(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        if global_pool is not None:
            if global_pool and global_pool not in _POOLS:
                raise ValueError(f"unknown global_pool {global_pool!r}; valid ones: avg, max, '' (none)")
            self.avgpool = _POOLS[global_pool](1) if global_pool else nn.Identity()
            self.global_pool = global_pool
        if not self.global_pool and num_classes > 0:
            raise ValueError("global_pool='' (no pooling) needs num_classes=0: the classifier wants pooled features")
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()


def resolve_options(variant: str | VariantOptions, bc: str | None) -> VariantOptions:
    """The variant's options with the boundary condition ``bc`` (if given) in place of the variant's own."""
    options = get_variant(variant)
    if bc is None or bc == options.bc:
        return options
    return replace(options, bc=bc, name=f"{options.name}[bc={bc}]")


class PDEResNet(ClassifierMixin, ResNet):
    """torchvision's ``ResNet`` whose blocks read ``options``; ``small_stem`` = 3×3 stride-1 stem, no max-pool.

    Extra keywords go to ``torchvision.models.ResNet`` (``zero_init_residual``, ``groups``,
    ``width_per_group``, ``norm_layer``, ...). ``model.variant`` holds the options.
    """

    def __init__(
        self,
        block: type[BasicBlock | Bottleneck],
        layers: list[int],
        *,
        options: VariantOptions | None = None,
        num_classes: int = 1000,
        in_chans: int = 3,
        small_stem: bool = False,
        zero_init_residual: bool = False,
        **kwargs: Any,
    ) -> None:
        options = options or VariantOptions()
        super().__init__(with_options(block, options), layers, num_classes=num_classes, **kwargs)
        if small_stem or in_chans != 3:
            # small images: a 3×3 stride-1 stem and no max-pool keep the resolution, as CIFAR ResNets do
            k, s = (3, 1) if small_stem else (7, 2)
            self.conv1 = nn.Conv2d(in_chans, 64, kernel_size=k, stride=s, padding=k // 2, bias=False)
            nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
        if small_stem:
            self.maxpool = nn.Identity()
        self.variant = options
        self.num_classes = num_classes
        self.num_features = 512 * block.expansion
        self.global_pool = "avg"
        init_weights(self, convs=False, zero_init_residual=zero_init_residual)  # torchvision did nn.Conv2d
        set_boundary(self.conv1, options.bc)  # the stem; each block sets its own convs

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def _resnet(
    block: type[BasicBlock | Bottleneck],
    layers: list[int],
    variant: str | VariantOptions,
    bc: str | None,
    **kwargs: Any,
) -> PDEResNet:
    return PDEResNet(block, layers, options=resolve_options(variant, bc), **kwargs)


@register_model
def pde_resnet18(
    *, variant: str | VariantOptions = "baseline", num_classes: int = 1000, bc: str | None = None, **kwargs: Any
) -> PDEResNet:
    """ResNet-18 (BasicBlock ×[2, 2, 2, 2]) with the given variant; ``bc`` overrides its boundary condition."""
    return _resnet(BasicBlock, [2, 2, 2, 2], variant, bc, num_classes=num_classes, **kwargs)


@register_model
def pde_resnet34(
    *, variant: str | VariantOptions = "baseline", num_classes: int = 1000, bc: str | None = None, **kwargs: Any
) -> PDEResNet:
    """ResNet-34 (BasicBlock ×[3, 4, 6, 3]) with the given variant; ``bc`` overrides its boundary condition."""
    return _resnet(BasicBlock, [3, 4, 6, 3], variant, bc, num_classes=num_classes, **kwargs)


@register_model
def pde_resnet50(
    *, variant: str | VariantOptions = "baseline", num_classes: int = 1000, bc: str | None = None, **kwargs: Any
) -> PDEResNet:
    """ResNet-50 (Bottleneck ×[3, 4, 6, 3]); ``variant="seed"`` is the essay's model (its state dict)."""
    return _resnet(Bottleneck, [3, 4, 6, 3], variant, bc, num_classes=num_classes, **kwargs)


@register_model
def pde_resnet101(
    *, variant: str | VariantOptions = "baseline", num_classes: int = 1000, bc: str | None = None, **kwargs: Any
) -> PDEResNet:
    """ResNet-101 (Bottleneck ×[3, 4, 23, 3]); ``variant="seed"`` is the essay's model (its state dict)."""
    return _resnet(Bottleneck, [3, 4, 23, 3], variant, bc, num_classes=num_classes, **kwargs)


@register_model
def pde_resnet152(
    *, variant: str | VariantOptions = "baseline", num_classes: int = 1000, bc: str | None = None, **kwargs: Any
) -> PDEResNet:
    """ResNet-152 (Bottleneck ×[3, 8, 36, 3]); ``variant="seed"`` is the essay's model (its state dict)."""
    return _resnet(Bottleneck, [3, 8, 36, 3], variant, bc, num_classes=num_classes, **kwargs)
