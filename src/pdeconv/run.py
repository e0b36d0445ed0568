"""A run: how a model name, a variant, a preset and options become one trained model (floor 2).

This module is the one place that knows how the pieces meet; ``pdeconv train``, ``pdeconv compare``, the
benchmarks and ``pdeconv analyze`` all go through it:

* :data:`PRESETS`: named bundles of training settings (``quick``, ``fast``, ``full``);
* :func:`make_config`: preset, then explicit options, then the variant's training defaults → a
  :class:`~pdeconv.engine.TrainConfig`; :func:`variant_config` derives one (variant, seed) run from a shared
  base;
* :func:`build_model`: the model of a config, sized for the dataset; :func:`regularizer`: the loss term a
  config asks for (the hyperbolicity penalty);
* :func:`train`: build, attach, and hand over to the engine;
* :func:`model_from_run`: the trained model back from a run directory or checkpoint.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pdeconv import engine
from pdeconv.data import DatasetInfo, dataset_info

__all__ = [
    "PRESETS",
    "Preset",
    "build_model",
    "make_config",
    "model_from_run",
    "regularizer",
    "train",
    "variant_config",
]

_ESSAY_VARIANTS = "baseline,neumann,dw4,varcoef,seed,hyperbolic"


@dataclass(frozen=True)
class Preset:
    """A named bundle of experiment settings; explicit command-line options override its fields.

    ``variants`` and ``seeds`` are what ``pdeconv compare`` trains; the other fields (but ``description``) are
    :class:`~pdeconv.engine.TrainConfig` settings, shared by ``pdeconv compare`` and ``pdeconv train --preset``.
    """

    description: str
    variants: str = _ESSAY_VARIANTS
    seeds: int = 3
    model: str = "pde_resnet20"
    dataset: str = "fashion-mnist"
    epochs: int = 2
    batch_size: int = 128
    lr: float = 0.2
    schedule: str = "onecycle"
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0
    train_subset: int | None = None
    tta_flip: bool = False
    amp: str = "none"
    channels_last: bool = False

    def train_settings(self) -> dict[str, Any]:
        """The :class:`~pdeconv.engine.TrainConfig` keyword arguments of this preset, ``model`` included."""
        return {k: v for k, v in asdict(self).items() if k not in ("description", "variants", "seeds")}


PRESETS: dict[str, Preset] = {
    "quick": Preset(
        "about 10 minutes on a 2-core CPU with 2 free threads: ResNet-20, 2 epochs on 5,000 training images, "
        "3 seeds",
        batch_size=64,
        lr=0.1,
        train_subset=5_000,
    ),
    "fast": Preset(
        "one run reaches 93% on Fashion-MNIST in under 10 minutes on a 2-core CPU with native bf16: ResNet-20, "
        "10 epochs, one-cycle, label smoothing, flip TTA, bf16 where native, channels-last",
        epochs=10,
        lr=0.2,
        label_smoothing=0.1,
        tta_flip=True,
        amp="auto",
        channels_last=True,
    ),
    "full": Preset(
        "the serious run: ResNet-20, 30 epochs on all 60,000 images, cosine schedule, 3 seeds",
        epochs=30,
        lr=0.1,
        schedule="cosine",
        label_smoothing=0.1,
        tta_flip=True,
        amp="auto",
        channels_last=True,
    ),
}


def _preset(name: str | None) -> Preset | None:
    if name is None:
        return None
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; valid ones: {', '.join(PRESETS)}")
    return PRESETS[name]


def make_config(
    *,
    model: str | None = None,
    variant: str = "baseline",
    preset: str | None = None,
    penalty_weight: float | None = None,
    **options: Any,
) -> engine.TrainConfig:
    """The :class:`~pdeconv.engine.TrainConfig` of one run.

    Settings come from ``preset`` (if named), then ``options`` (any TrainConfig field, e.g. ``epochs=5``;
    these win). ``model`` defaults to the preset's, else ``pde_resnet20``. ``penalty_weight`` defaults to the
    variant's own (:func:`pdeconv.models.variant_penalty_weight`: 0.1 for ``hyperbolic``, else 0). Unknown
    model, variant or option names are a ``ValueError`` naming the valid ones.
    """
    from pdeconv.models import list_models, variant_penalty_weight

    settings = p.train_settings() if (p := _preset(preset)) else {}
    known = {f.name for f in fields(engine.TrainConfig)}
    unknown = set(options) - known
    if unknown:
        raise ValueError(f"unknown training settings {sorted(unknown)}; valid ones: {', '.join(sorted(known))}")
    settings.update(options)
    settings["model"] = model or settings.get("model", "pde_resnet20")
    if settings["model"] not in list_models():
        raise ValueError(f"unknown model {settings['model']!r}; valid ones: {', '.join(list_models())}")
    weight = variant_penalty_weight(variant) if penalty_weight is None else penalty_weight
    return engine.TrainConfig(variant=variant, penalty_weight=weight, **settings)


def variant_config(base: engine.TrainConfig, variant: str, seed: int, out: str | Path) -> engine.TrainConfig:
    """The run of ``variant`` with ``seed`` in directory ``out``: ``base``'s settings, the variant's penalty."""
    from pdeconv.models import variant_penalty_weight

    return replace(base, variant=variant, seed=seed, out=str(out), penalty_weight=variant_penalty_weight(variant))


def build_model(model: str, variant: str, info: DatasetInfo, **kwargs: Any) -> nn.Module:
    """``pdeconv.models.create(model, variant=variant)`` sized for the dataset ``info`` (classes, channels)."""
    from pdeconv.models import create

    return create(model, variant=variant, num_classes=info.num_classes, in_chans=info.in_chans, **kwargs)


def regularizer(config: engine.TrainConfig) -> Callable[[nn.Module], torch.Tensor] | None:
    """The loss term ``config`` adds with weight ``penalty_weight``: the hyperbolicity penalty, or ``None``."""
    if config.penalty_weight <= 0:
        return None
    from pdeconv.regularize import hyperbolicity_penalty

    return hyperbolicity_penalty


def train(
    config: engine.TrainConfig,
    *,
    loaders: tuple[Iterable, Iterable, DatasetInfo] | None = None,
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train the model ``config`` names (``config.model``, ``config.variant``) with its regularizer.

    Returns the engine's summary (:func:`pdeconv.engine.summarize`). ``loaders`` and ``on_epoch_end`` go to
    :func:`pdeconv.engine.train`.
    """
    return engine.train(
        config,
        lambda info: build_model(config.model, config.variant, info),
        loaders=loaders,
        regularizer=regularizer(config),
        on_epoch_end=on_epoch_end,
    )


def model_from_run(path: str | Path) -> nn.Module:
    """Rebuild the model of a ``pdeconv train`` run (a run directory or its checkpoint file) with its weights.

    The checkpoint's ``config`` names the model and variant; classes and input channels come from the run's
    ``config.json`` next to it (the dataset actually used) or else from the dataset named in ``config``.
    Checkpoints are read with ``weights_only=True``. Returns the model in eval mode.
    """
    from pdeconv.models import create, list_models

    path = Path(path)
    if path.is_dir():
        if not (path / engine.CHECKPOINT).is_file():
            raise FileNotFoundError(f"{path} holds no {engine.CHECKPOINT}: give a run directory of pdeconv train")
        path = path / engine.CHECKPOINT
    state = engine.load_checkpoint(path)
    config = state.get("config")
    if not isinstance(config, dict) or "model" not in config or not isinstance(state.get("model"), dict):
        raise ValueError(f"{path}: checkpoint has no model state dict and config; was it written by pdeconv train?")
    name = config["model"]
    if name not in list_models():
        raise ValueError(
            f"{path}: model {name!r} is not a pdeconv model; build it in Python and call analyze_model(model)"
        )
    model = create(name, variant=config.get("variant", "baseline"), **_dataset_shape(path, config))
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise ValueError(f"{path}: weights do not fit {name} ({first})") from None
    return model.eval()


def _dataset_shape(checkpoint: Path, config: dict[str, Any]) -> dict[str, int]:
    run_config = checkpoint.parent / engine.CONFIG
    if run_config.is_file():
        try:
            dataset = json.loads(run_config.read_text()).get("dataset")
        except (json.JSONDecodeError, AttributeError):
            raise ValueError(f"{run_config}: not a run's config (unreadable JSON object)") from None
        if isinstance(dataset, dict) and {"num_classes", "in_chans"} <= dataset.keys():
            return {"num_classes": dataset["num_classes"], "in_chans": dataset["in_chans"]}
    info = dataset_info(config.get("dataset", "fashion-mnist"))
    return {"num_classes": info.num_classes, "in_chans": info.in_chans}
