"""PDE-ResNets at ImageNet size: torchvision's ``ResNet`` with the variant blocks and timm's interface.

``pde_resnet50(variant="seed")`` is torchvision's ResNet-50 with the essay's modified Bottleneck; its
state-dict keys are the essay's (``conv1, bn1, conv2, bn2, mix, conv3, bn3, downsample`` in each block,
torchvision's names outside). Layers a variant leaves unchanged keep torchvision's names and shapes, so
torchvision weights load with :func:`pdeconv.models.load_torchvision_weights`.
"""

# No ``from __future__ import annotations`` here: ``forward``'s annotations must be the classes themselves, for
# torch.fx writes the root's annotation into the traced code, and a string there ("Tensor") is a name
# TorchScript cannot resolve when the traced graph is scripted (timm's test_model_forward_fx_torchscript).
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint
from torchvision.models.resnet import ResNet

from pdeconv.boundary import boundary_condition, set_boundary
from pdeconv.errors import PdeconvError
from pdeconv.models.blocks import BasicBlock, Bottleneck, init_weights, with_options
from pdeconv.models.registry import register_model
from pdeconv.models.variants import VariantOptions, get_variant

__all__ = [
    "ClassifierMixin",
    "PDEResNet",
    "take_indices",
    "resolve_options",
    "pde_resnet18",
    "pde_resnet34",
    "pde_resnet50",
    "pde_resnet101",
    "pde_resnet152",
]

_POOLS = {"avg": nn.AdaptiveAvgPool2d, "max": nn.AdaptiveMaxPool2d}


def take_indices(count: int, indices: int | Sequence[int] | None) -> tuple[list[int], int]:
    """timm's convention for which of ``count`` feature levels to return: ``None`` all, an int n the last n, a
    sequence those indices (negative ones count from the end). Returns (sorted indices, the largest)."""
    if indices is None:
        chosen = list(range(count))
    elif isinstance(indices, int):
        if not 0 < indices <= count:
            raise PdeconvError(f"indices={indices}: take the last n of {count} feature levels, 0 < n ≤ {count}")
        chosen = list(range(count - indices, count))
    else:
        chosen = []
        for i in indices:
            if not -count <= i < count:
                raise PdeconvError(f"feature index {i} out of range: this model has {count} levels (0…{count - 1})")
            chosen.append(i % count)
        chosen = sorted(set(chosen))
    return chosen, max(chosen)


class ClassifierMixin:
    """timm's model interface over a torchvision-style ResNet (``conv1, bn1, relu[, maxpool], layer1…, avgpool,
    fc``), so the models work in timm's pipeline with or without timm installed.

    The class using it sets ``stage_names`` (``("layer1", …)``), ``feature_info`` (one dict per feature level:
    the stem's ``relu``, then each stage: ``num_chs``, ``reduction``, ``module``), ``num_features`` (channels of
    the last feature map), ``head_hidden_size`` (width of ``forward_head(x, pre_logits=True)``: here
    ``num_features``, there being no layer between pooling and classifier), ``num_classes`` and ``global_pool``.
    Provided: ``forward_features`` (the last feature map),
    ``forward_head(x, pre_logits)`` (pooled features or logits, after dropout ``drop_rate`` in training),
    ``forward_intermediates`` and ``prune_intermediate_layers`` (timm's feature API, levels as
    ``feature_info``), ``reset_classifier(num_classes, global_pool)`` (``num_classes=0``: no classifier; pooling
    "avg", "max", or "" for none, allowed only without a classifier), ``get_classifier``, ``group_matcher`` and
    ``set_grad_checkpointing`` (each block recomputed in the backward pass instead of storing activations).
    """

    # (no class-level annotations: TorchScript would read them, and they name Python-only types)

    def _stem(self, x: Tensor) -> Tensor:
        return self.relu(self.bn1(self.conv1(x)))

    @torch.jit.unused
    def _stage(self, name: str, x: Tensor) -> Tensor:
        stage = getattr(self, name)
        if self.grad_checkpointing and self.training:
            for block in stage:
                x = checkpoint(block, x, use_reentrant=False)
            return x
        return stage(x)

    @torch.jit.unused
    def _stages(self, x: Tensor) -> Tensor:
        for name in self.stage_names:
            x = self._stage(name, x)
        return x

    @torch.jit.unused
    def forward_intermediates(
        self,
        x: Tensor,
        indices: int | Sequence[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[Tensor] | tuple[Tensor, list[Tensor]]:
        """The feature maps of the levels ``indices`` (timm's convention, see :func:`take_indices`), level 0 the
        stem's output; also the last feature map unless ``intermediates_only``. ``norm`` does nothing (no final
        norm layer); ``stop_early`` stops after the last level wanted."""
        if output_fmt != "NCHW":
            raise PdeconvError(f"output_fmt must be 'NCHW' for these convolutional models; got {output_fmt!r}")
        wanted, last = take_indices(len(self.feature_info), indices)
        intermediates = []
        x = self._stem(x)
        if 0 in wanted:
            intermediates.append(x)
        x = self.maxpool(x)
        names = self.stage_names[:last] if stop_early else self.stage_names
        for level, name in enumerate(names, 1):
            x = self._stage(name, x)
            if level in wanted:
                intermediates.append(x)
        return intermediates if intermediates_only else (x, intermediates)

    @torch.jit.unused
    def prune_intermediate_layers(self, indices: int | Sequence[int] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        """Drop the stages after the last level in ``indices`` (and the classifier when ``prune_head`` or when
        stages were dropped); returns the levels kept, as timm's models do."""
        wanted, last = take_indices(len(self.feature_info), indices)
        for name in self.stage_names[last:]:
            setattr(self, name, nn.Sequential())
        if last < len(self.stage_names):
            self.num_features = self.head_hidden_size = self.feature_info[last]["num_chs"]
        if prune_head or last < len(self.stage_names):
            self.reset_classifier(0, "")
        return wanted

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.avgpool(x)
        if self.global_pool:
            x = torch.flatten(x, 1)
        if self.drop_rate:
            x = F.dropout(x, p=float(self.drop_rate), training=self.training)
        return x if pre_logits else self.fc(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    @torch.jit.ignore
    def get_classifier(self, name_only: bool = False) -> nn.Module | str:
        return "fc" if name_only else self.fc

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, str]:
        """Parameter groups for layer-wise learning-rate decay (timm's ``param_groups_layer_decay``)."""
        return {"stem": r"^conv1|bn1|maxpool", "blocks": r"^layer(\d+)" if coarse else r"^layer(\d+)\.(\d+)"}

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        if global_pool is not None:
            if global_pool and global_pool not in _POOLS:
                raise PdeconvError(f"unknown global_pool {global_pool!r}; valid ones: avg, max, '' (none)")
            self.avgpool = _POOLS[global_pool](1) if global_pool else nn.Identity()
            self.global_pool = global_pool
        if not self.global_pool and num_classes > 0:
            raise PdeconvError("global_pool='' (no pooling) needs num_classes=0: the classifier wants pooled features")
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()


def resolve_options(variant: str | VariantOptions, bc: str | None) -> VariantOptions:
    """The variant's options with the boundary condition ``bc`` (if given) in place of the variant's own."""
    options = get_variant(variant)
    bc = bc if bc is None else boundary_condition(bc)
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
        self.num_features = self.head_hidden_size = 512 * block.expansion
        self.global_pool = "avg"
        init_weights(self, convs=False, zero_init_residual=zero_init_residual)  # torchvision did nn.Conv2d
        set_boundary(self.conv1, options.bc)  # the stem; each block sets its own convs
        self.stage_names = ("layer1", "layer2", "layer3", "layer4")  # for forward_intermediates
        self.drop_rate, self.grad_checkpointing = 0.0, False  # timm: dropout before fc, checkpointing
        stem = 1 if small_stem else 2  # the stem's stride; the max-pool halves again, then layer2… each
        self.feature_info = [{"num_chs": 64, "reduction": stem, "module": "relu"}] + [
            {"num_chs": 64 * 2**i * block.expansion, "reduction": stem * (1 if small_stem else 2) * 2**i,
             "module": f"layer{i + 1}"} for i in range(4)]

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.maxpool(self._stem(x))
        if self.grad_checkpointing and self.training and not torch.jit.is_scripting():
            return self._stages(x)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def _resnet(
    block: type[BasicBlock | Bottleneck],
    layers: list[int],
    variant: str | VariantOptions,
    bc: str | None,
    **kwargs: Any,
) -> PDEResNet:
    return PDEResNet(block, layers, options=resolve_options(variant, bc), **kwargs)


@register_model(small_images=False, feature_stride=32, feature_levels=5)
def pde_resnet18(
    *, variant: str | VariantOptions = "baseline", num_classes: int = 1000, bc: str | None = None, **kwargs: Any
) -> PDEResNet:
    """ResNet-18 (BasicBlock ×[2, 2, 2, 2]) with the given variant; ``bc`` overrides its boundary condition."""
    return _resnet(BasicBlock, [2, 2, 2, 2], variant, bc, num_classes=num_classes, **kwargs)


@register_model(small_images=False, feature_stride=32, feature_levels=5)
def pde_resnet34(
    *, variant: str | VariantOptions = "baseline", num_classes: int = 1000, bc: str | None = None, **kwargs: Any
) -> PDEResNet:
    """ResNet-34 (BasicBlock ×[3, 4, 6, 3]) with the given variant; ``bc`` overrides its boundary condition."""
    return _resnet(BasicBlock, [3, 4, 6, 3], variant, bc, num_classes=num_classes, **kwargs)


@register_model(small_images=False, feature_stride=32, feature_levels=5)
def pde_resnet50(
    *, variant: str | VariantOptions = "baseline", num_classes: int = 1000, bc: str | None = None, **kwargs: Any
) -> PDEResNet:
    """ResNet-50 (Bottleneck ×[3, 4, 6, 3]); ``variant="seed"`` is the essay's model (its state dict)."""
    return _resnet(Bottleneck, [3, 4, 6, 3], variant, bc, num_classes=num_classes, **kwargs)


@register_model(small_images=False, feature_stride=32, feature_levels=5)
def pde_resnet101(
    *, variant: str | VariantOptions = "baseline", num_classes: int = 1000, bc: str | None = None, **kwargs: Any
) -> PDEResNet:
    """ResNet-101 (Bottleneck ×[3, 4, 23, 3]); ``variant="seed"`` is the essay's model (its state dict)."""
    return _resnet(Bottleneck, [3, 4, 23, 3], variant, bc, num_classes=num_classes, **kwargs)


@register_model(small_images=False, feature_stride=32, feature_levels=5)
def pde_resnet152(
    *, variant: str | VariantOptions = "baseline", num_classes: int = 1000, bc: str | None = None, **kwargs: Any
) -> PDEResNet:
    """ResNet-152 (Bottleneck ×[3, 8, 36, 3]); ``variant="seed"`` is the essay's model (its state dict)."""
    return _resnet(Bottleneck, [3, 8, 36, 3], variant, bc, num_classes=num_classes, **kwargs)
