"""Every PDE-ResNet by name: ``@register_model`` where a builder is defined, ``create(name, **kw)``,
``list_models()``, and registration with timm.

With timm installed, :func:`register_timm` (run on ``import pdeconv.models``) makes each model a timm
entrypoint, so ``timm.create_model("pde_resnet50", variant="seed")`` works; timm's own keywords
(``pretrained_cfg``, ``cache_dir``, ...) are dropped, and ``pretrained=True`` is refused: there are no
published weights (load torchvision's with :func:`pdeconv.models.load_torchvision_weights`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

__all__ = ["MODELS", "create", "list_models", "register_model", "register_timm"]

#: name → builder ``(*, variant, num_classes, bc, **kw) -> nn.Module``, filled by :func:`register_model`
MODELS: dict[str, Callable[..., nn.Module]] = {}

Builder = Callable[..., nn.Module]


def register_model(builder: Builder) -> Builder:
    """Decorator: file ``builder`` under its function name (as timm's ``@register_model`` does)."""
    if builder.__name__ in MODELS:
        raise ValueError(f"a model named {builder.__name__!r} is registered already")
    MODELS[builder.__name__] = builder
    return builder

# keywords timm.create_model passes to every entrypoint; they mean nothing for these models
_TIMM_KEYWORDS = ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")


def list_models() -> list[str]:
    """Names of all models, for :func:`create`."""
    return list(MODELS)


def create(name: str, **kwargs: Any) -> nn.Module:
    """Build model ``name`` (see :func:`list_models`) with keyword arguments for its builder."""
    builder = MODELS.get(name)
    if builder is None:
        raise ValueError(f"unknown model {name!r}; valid ones: {', '.join(MODELS)}")
    return builder(**kwargs)


def _timm_entrypoint(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    def entrypoint(pretrained: bool = False, **kwargs: Any) -> nn.Module:
        if pretrained:
            raise ValueError(f"{builder.__name__} has no pretrained weights; use pretrained=False")
        for key in _TIMM_KEYWORDS:
            kwargs.pop(key, None)
        return builder(**kwargs)

    entrypoint.__name__ = entrypoint.__qualname__ = builder.__name__
    entrypoint.__doc__ = builder.__doc__
    # timm files the entrypoint under its module and appends the name to that module's __all__:
    # pdeconv.models, which exports every builder already
    entrypoint.__module__ = "pdeconv.models"
    return entrypoint


def register_timm() -> list[str]:
    """Register every model with timm (names timm knows already are left alone); returns those added."""
    from timm.models import is_model, register_model

    added = [name for name in MODELS if not is_model(name)]
    for name in added:
        register_model(_timm_entrypoint(MODELS[name]))
    return added
