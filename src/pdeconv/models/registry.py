"""Every PDE-ResNet by name: ``@register_model(...)`` where a builder is defined, with what its inputs are
(:class:`InputConfig`, beside the builder, so a new model cannot inherit another's), ``create(name, **kw)``,
``list_models()``.

With timm installed, :func:`pdeconv.models.register_timm` (run on ``import pdeconv.models``) makes each model a
timm model
(:mod:`pdeconv.models.timm_models`): ``timm.create_model("pde_resnet50.seed")`` or
``timm.create_model("pde_resnet50", variant="seed")``, with a ``pretrained_cfg``, ``features_only`` and timm's
training options; ``pretrained=True`` is refused: there are no published weights (load torchvision's with
:func:`pdeconv.models.load_torchvision_weights`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from pdeconv.errors import PdeconvError

__all__ = ["CONFIGS", "MODELS", "OLDEST_TIMM", "InputConfig", "create", "list_models", "register_model",
           "timm_too_old"]

#: the oldest timm release the timm integration is tested with (pyproject's ``timm`` extra says the same)
OLDEST_TIMM = "0.9.0"

#: name → builder ``(*, variant, num_classes, bc, **kw) -> nn.Module``, filled by :func:`register_model`
MODELS: dict[str, Callable[..., nn.Module]] = {}

Builder = Callable[..., nn.Module]


@dataclass(frozen=True)
class InputConfig:
    """What a model's inputs are, for the configurations timm reads (``pretrained_cfg``, ``feature_info``):
    ``small_images`` (28–32 px: Fashion-MNIST's or CIFAR's statistics, no crop) or ImageNet's (224 px, crop
    0.875); ``feature_stride``, the stride of its last feature map; ``feature_levels``, its number of feature
    maps (the stem, then each stage)."""

    small_images: bool
    feature_stride: int
    feature_levels: int


#: name → :class:`InputConfig`, filled by :func:`register_model` beside each builder
CONFIGS: dict[str, InputConfig] = {}


def register_model(*, small_images: bool, feature_stride: int, feature_levels: int) -> Callable[[Builder], Builder]:
    """Decorator: file the builder under its function name (as timm's ``@register_model`` does), with its
    :class:`InputConfig`; e.g. ``@register_model(small_images=True, feature_stride=4, feature_levels=4)``."""
    config = InputConfig(small_images, feature_stride, feature_levels)

    def register(builder: Builder) -> Builder:
        if builder.__name__ in MODELS:
            raise PdeconvError(f"a model named {builder.__name__!r} is registered already")
        MODELS[builder.__name__], CONFIGS[builder.__name__] = builder, config
        return builder

    return register



def list_models() -> list[str]:
    """Names of all models, for :func:`create`."""
    return list(MODELS)


def create(name: str, **kwargs: Any) -> nn.Module:
    """Build model ``name`` (see :func:`list_models`) with keyword arguments for its builder."""
    builder = MODELS.get(name)
    if builder is None:
        raise PdeconvError(f"unknown model {name!r}; valid ones: {', '.join(MODELS)}")
    return builder(**kwargs)


def _release(version: str) -> tuple[int, ...]:
    """(major, minor, patch) of a version string such as ``1.0.29.dev0``; missing parts count as 0."""
    numbers = re.match(r"(\d+)(?:\.(\d+))?(?:\.(\d+))?", version)
    return tuple(int(n or 0) for n in numbers.groups()) if numbers else (0, 0, 0)


def timm_too_old() -> str | None:
    """Why the installed timm cannot take pdeconv's models, as a sentence saying what to do; None where it can."""
    import timm

    version = getattr(timm, "__version__", "unknown")
    if _release(version) >= _release(OLDEST_TIMM):
        return None
    return (f"timm {version} is older than {OLDEST_TIMM}, the oldest timm pdeconv's models are tested with; "
            f"upgrade it (pip install -U 'timm>={OLDEST_TIMM}') to use the pde_* models with timm")
