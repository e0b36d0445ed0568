"""The PDE-ResNets as timm models (imported only when timm is installed, by :func:`~pdeconv.models.register_timm`).

Each ``pde_*`` builder becomes a timm entrypoint built by timm's own ``build_model_with_cfg``, so the model has a
``pretrained_cfg`` (alias ``default_cfg``) that ``timm.data.resolve_data_config`` reads, and
``features_only=True`` / ``out_indices`` give timm's feature extractor over ``model.feature_info``.

Variants are pretrained tags: ``timm.create_model("pde_resnet50.seed")`` is ``variant="seed"``; every registered
variant name is a tag (``timm.list_models("pde_*", include_tags=True)``), ``baseline`` the default. Compound and
parameterised variants (``seed+neumann``, ``dw=2``) go in ``variant=`` as before; ``bc=`` too. No tag has
weights: ``pretrained=True`` is an error.

Configurations: the ImageNet family at 224² with ImageNet's mean and std; the small-image family at CIFAR-10's
32² and statistics, or, with ``in_chans=1``, at Fashion-MNIST's 28² and statistics (another ``in_chans``: 32²,
with the mean of the RGB statistics per channel). ``pool_size`` is the last feature map at that input.

timm's ``train.py`` options: ``drop_rate`` (dropout before the classifier) and ``global_pool`` (avg, max) are
honoured; ``drop_path_rate``, ``drop_block_rate``, ``bn_momentum``, ``bn_eps`` are not implemented by these
models and refused when set.
"""

from __future__ import annotations

import statistics
from typing import Any

from timm.models import build_model_with_cfg, generate_default_cfgs, register_model, register_notrace_module
from torch import nn

from pdeconv.boundary import BoundaryConv2d
from pdeconv.errors import PdeconvError
from pdeconv.layers import DifferentialConv2d, QuasiLinear, SymmetricConv, VariableCoefficients
from pdeconv.models.registry import CONFIGS, MODELS
from pdeconv.models.variants import VARIANTS
from pdeconv.normalization import STATS

__all__: list[str] = []  # timm appends each entrypoint it registers

_REFUSED = ("drop_path_rate", "drop_block_rate", "bn_momentum", "bn_eps")

# pdeconv's layers choose their computation at run time (measured paths, boundary padding): torch.fx traces
# them as single calls, as timm does with its own such layers
for _layer in (DifferentialConv2d, QuasiLinear, VariableCoefficients, SymmetricConv, BoundaryConv2d):
    register_notrace_module(_layer)


def _input(name: str, in_chans: int) -> dict[str, Any]:
    """input_size, pool_size, mean and std of model ``name`` for ``in_chans`` input channels."""
    config = CONFIGS[name]  # beside the model's builder
    stride = config.feature_stride
    if config.small_images:
        (dataset, size), crop = ("fashion-mnist", 28) if in_chans == 1 else ("cifar10", 32), 1.0
    else:
        dataset, size, crop = "imagenet", 224, 0.875
    mean, std = STATS[dataset]
    if len(mean) != in_chans:  # another channel count: each channel gets the mean of the statistics
        mean, std = (statistics.fmean(mean),) * in_chans, (statistics.fmean(std),) * in_chans
    return {"input_size": (in_chans, size, size), "pool_size": (size // stride, size // stride), "crop_pct": crop,
            "mean": mean, "std": std}


def _cfg(name: str) -> dict[str, Any]:
    small = CONFIGS[name].small_images
    return {"url": "", "num_classes": 10 if small else 1000, "interpolation": "bilinear", "first_conv": "conv1",
            "classifier": "fc", "license": "apache-2.0", **_input(name, 3)}


def _tag(cfg: Any) -> str | None:
    if isinstance(cfg, str):
        return cfg
    if isinstance(cfg, dict):
        return cfg.get("tag")
    return getattr(cfg, "tag", None)


def _entrypoint(name: str) -> Any:
    builder = MODELS[name]

    def entrypoint(pretrained: bool = False, **kwargs: Any) -> nn.Module:
        if pretrained:
            raise PdeconvError(f"{name} has no pretrained weights; use pretrained=False (pdeconv trains its own: "
                             "pdeconv train, or timm's train.py)")
        kwargs.pop("cache_dir", None)
        cfg = kwargs.pop("pretrained_cfg", None)
        overlay = dict(kwargs.pop("pretrained_cfg_overlay", None) or {})
        tag = _tag(cfg)
        if tag is not None:
            if tag not in VARIANTS:
                raise PdeconvError(f"unknown tag {tag!r} of {name}; the tags are the variants: {', '.join(VARIANTS)} "
                                 "(others, like 'seed+neumann' or 'dw=2', go in variant=...)")
            if kwargs.get("variant", tag) != tag:
                raise PdeconvError(f"{name}.{tag} and variant={kwargs['variant']!r} disagree; give one of them")
            kwargs["variant"] = tag
        variant = kwargs.setdefault("variant", "baseline")
        if cfg is None and isinstance(variant, str):
            if variant in VARIANTS:
                cfg = variant  # the pretrained config of that tag
            else:
                overlay.setdefault("tag", variant)
        for key in _REFUSED:
            if kwargs.pop(key, None):
                raise PdeconvError(f"{name}: {key} is not implemented by pdeconv's models; leave it unset or 0")
        drop_rate = kwargs.pop("drop_rate", None) or 0.0
        global_pool = kwargs.pop("global_pool", None)
        device, dtype = kwargs.pop("device", None), kwargs.pop("dtype", None)
        in_chans = kwargs.get("in_chans", 3)
        overlay = {**_input(name, in_chans), **overlay}
        features = kwargs.get("features_only", False)
        kwargs.pop("variant")  # build_model_with_cfg has a parameter of that name (timm's word for the model name)
        # every level by default; the caller's feature_cfg (feature_cls="fx", out_indices, ...) on top
        feature_cfg = {"out_indices": tuple(range(CONFIGS[name].feature_levels)), **(kwargs.pop("feature_cfg", None)
                                                                                     or {})}
        model = build_model_with_cfg(lambda **kw: builder(variant=variant, **kw), name, False, pretrained_cfg=cfg,
                                     pretrained_cfg_overlay=overlay, feature_cfg=feature_cfg, **kwargs)
        if not features:
            model.drop_rate = drop_rate
            if global_pool is not None:
                model.reset_classifier(model.num_classes, global_pool)
        if device is not None or dtype is not None:
            model = model.to(device=device, dtype=dtype)
        return model

    entrypoint.__name__ = entrypoint.__qualname__ = name
    entrypoint.__doc__ = builder.__doc__
    entrypoint.__module__ = __name__
    return entrypoint


#: the pretrained configurations timm reads: one per model and variant tag, ``baseline`` first (the default)
default_cfgs = generate_default_cfgs({f"{name}.{tag}": _cfg(name) for name in MODELS for tag in VARIANTS})


def register(names: list[str]) -> None:
    """Register the entrypoints of ``names`` with timm."""
    for name in names:
        register_model(_entrypoint(name))
