"""Every PDE-ResNet by name: ``@register_model`` where a builder is defined, ``create(name, **kw)``,
``list_models()``, and registration with timm.

With timm installed, :func:`register_timm` (run on ``import pdeconv.models``) makes each model a timm model
(:mod:`pdeconv.models.timm_models`): ``timm.create_model("pde_resnet50.seed")`` or
``timm.create_model("pde_resnet50", variant="seed")``, with a ``pretrained_cfg``, ``features_only`` and timm's
training options; ``pretrained=True`` is refused: there are no published weights (load torchvision's with
:func:`pdeconv.models.load_torchvision_weights`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from torch import nn

__all__ = ["MODELS", "OLDEST_TIMM", "create", "list_models", "register_model", "register_timm", "timm_too_old"]

#: the oldest timm release the timm integration is tested with (pyproject's ``timm`` extra says the same)
OLDEST_TIMM = "0.9.0"

#: name → builder ``(*, variant, num_classes, bc, **kw) -> nn.Module``, filled by :func:`register_model`
MODELS: dict[str, Callable[..., nn.Module]] = {}

Builder = Callable[..., nn.Module]


def register_model(builder: Builder) -> Builder:
    """Decorator: file ``builder`` under its function name (as timm's ``@register_model`` does)."""
    if builder.__name__ in MODELS:
        raise ValueError(f"a model named {builder.__name__!r} is registered already")
    MODELS[builder.__name__] = builder
    return builder



def list_models() -> list[str]:
    """Names of all models, for :func:`create`."""
    return list(MODELS)


def create(name: str, **kwargs: Any) -> nn.Module:
    """Build model ``name`` (see :func:`list_models`) with keyword arguments for its builder."""
    builder = MODELS.get(name)
    if builder is None:
        raise ValueError(f"unknown model {name!r}; valid ones: {', '.join(MODELS)}")
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


def register_timm() -> list[str]:
    """Register every model with timm (names timm knows already are left alone); returns those added.

    They are built by timm's own machinery (:mod:`pdeconv.models.timm_models`): pretrained configs per variant
    tag, ``features_only``, the options of timm's ``train.py``. A timm older than :data:`OLDEST_TIMM` is refused
    with an ``ImportError`` that says so.
    """
    too_old = timm_too_old()
    if too_old:
        raise ImportError(too_old)
    from timm.models import is_model

    from pdeconv.models import timm_models

    added = [name for name in MODELS if not is_model(name)]
    timm_models.register(added)
    return added
