"""A run: how a model name, a variant, a preset and options become one trained model (floor 2).

This module is the one place that knows how the pieces meet; ``pdeconv train``, ``pdeconv compare``, the
benchmarks and ``pdeconv analyze`` all go through it:

* :data:`PRESETS`: named bundles of training settings (``quick``, ``fast``, ``full``);
* :func:`make_config`: preset, then explicit options, then the variant's training defaults → a
  :class:`~pdeconv.engine.TrainConfig`; :func:`variant_config` derives one (variant, seed) run from a shared
  base;
* :func:`build_model`: the model of a config, sized for the dataset; :func:`share_initial_weights`: a variant
  starts from the baseline's weights in every layer the two share (paired seeds); :func:`regularizer`: the
  loss term a config asks for (the hyperbolicity penalty);
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
from pdeconv.errors import PdeconvError

__all__ = [
    "PRESETS",
    "Preset",
    "build_model",
    "describe_config",
    "make_config",
    "model_from_run",
    "regularizer",
    "share_initial_weights",
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
        "ResNet-20 in 4 variants × 3 paired seeds, 2 epochs on a fixed 24,000-image subset, one-cycle, label "
        "smoothing, flip TTA, bf16 where measured faster, channels-last; the baseline reaches about 89%. 8 minutes "
        "on machine epyc of BENCHMARKS.md (2-core AMD EPYC with AVX-512 BF16, idle); other machines differ several "
        "times over: compare prints this machine's estimate after the first epoch",
        variants="baseline,neumann,seed,hyperbolic",
        epochs=2,
        batch_size=64,
        lr=0.2,
        label_smoothing=0.1,
        train_subset=24_000,
        tta_flip=True,
        amp="auto",
        channels_last=True,
    ),
    "fast": Preset(
        "ResNet-20 to 93% on Fashion-MNIST: 10 epochs, one-cycle, label smoothing, flip TTA, bf16 where measured "
        "faster, channels-last; 6–8 minutes on machines epyc and dev-intel of BENCHMARKS.md (2 cores with native "
        "bf16, idle); train prints this machine's estimate after the first epoch",
        epochs=10,
        lr=0.2,
        label_smoothing=0.1,
        tta_flip=True,
        amp="auto",
        channels_last=True,
    ),
    "full": Preset(
        "the serious run: ResNet-20, 30 epochs on all 60,000 images, cosine schedule, 3 seeds (one run: 22 minutes "
        "on machine dev-intel of BENCHMARKS.md; compare prints this machine's estimate after the first epoch)",
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
        raise PdeconvError(f"unknown preset {name!r}; valid ones: {', '.join(PRESETS)}")
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
    these win), then the variant's own training settings (:func:`pdeconv.models.variant_training`: the
    penalty 0.1 for ``hyperbolic``, ``lr`` for ``seed+lr=0.4``). ``penalty_weight`` given here wins over the
    variant's; an ``lr`` option that differs from the variant's own is an error (two rates asked for one run).
    ``model`` defaults to the preset's, else ``pde_resnet20``. Unknown model, variant or option names are a
    ``PdeconvError`` naming the valid ones.
    """
    from pdeconv.models import list_models, variant_training

    settings = p.train_settings() if (p := _preset(preset)) else {}
    known = {f.name for f in fields(engine.TrainConfig)}
    unknown = set(options) - known
    if unknown:
        raise PdeconvError(f"unknown training settings {sorted(unknown)}; valid ones: {', '.join(sorted(known))}")
    settings.update(options)
    settings["model"] = model or settings.get("model", "pde_resnet20")
    if settings["model"] not in list_models():
        raise PdeconvError(f"unknown model {settings['model']!r}; valid ones: {', '.join(list_models())}")
    own = variant_training(variant)
    if "lr" in own and "lr" in options and options["lr"] != own["lr"]:
        raise PdeconvError(f"`lr` is {options['lr']:g} but variant {variant!r} sets its own, {own['lr']:g}; give "
                           "one of them")
    settings.update(own)
    if penalty_weight is not None:
        settings["penalty_weight"] = penalty_weight
    settings.setdefault("penalty_weight", 0.0)
    return engine.TrainConfig(variant=variant, **settings)


def describe_config(config: engine.TrainConfig) -> str:
    """The training settings of ``config`` in one line, as printed at the start of a run or an experiment."""
    data = ("all training images" if config.train_subset is None
            else f"a fixed subset of {config.train_subset:,} training images")
    if config.val_split is not None:
        data = ("all training images but " if config.train_subset is None else data + " from those left after ") \
            + f"{config.val_split:,} held out for validation"
    parts = [
        f"{config.model} on {config.dataset} ({data})",
        f"{config.epochs} epoch{'' if config.epochs == 1 else 's'}",
        f"batch {config.batch_size}",
        f"{config.optimizer} lr {config.lr:g} ({config.schedule})",
        f"weight decay {config.weight_decay:g}",
    ]
    if config.label_smoothing:
        parts.append(f"label smoothing {config.label_smoothing:g}")
    if config.penalty_weight:
        parts.append(f"hyperbolicity penalty {config.penalty_weight:g}")
    parts.append(f"amp {config.amp}")
    parts += [name for name, on in (("channels-last", config.channels_last), ("flip TTA", config.tta_flip),
                                    ("compiled", config.compile)) if on]
    return ", ".join(parts)


def variant_config(base: engine.TrainConfig, variant: str, seed: int, out: str | Path) -> engine.TrainConfig:
    """The run of ``variant`` with ``seed`` in directory ``out``: ``base``'s settings with the variant's own
    training settings (its penalty weight, 0 if it has none; its learning rate, if it sets one)."""
    from pdeconv.models import variant_training

    own = {"penalty_weight": 0.0, **variant_training(variant)}
    return replace(base, variant=variant, seed=seed, out=str(out), **own)


def build_model(model: str, variant: str, info: DatasetInfo, **kwargs: Any) -> nn.Module:
    """``pdeconv.models.create(model, variant=variant)`` sized for the dataset ``info`` (classes, channels)."""
    from pdeconv.models import create

    return create(model, variant=variant, num_classes=info.num_classes, in_chans=info.in_chans, **kwargs)


def share_initial_weights(model: nn.Module, reference: nn.Module) -> list[str]:
    """Copy ``reference``'s parameters and buffers into ``model`` wherever the two share a layer; return the
    names copied.

    A layer is shared when the module has the same name in both models, one module's class is a subclass of the
    other's (``BoundaryConv2d`` is an ``nn.Conv2d``) and the tensor has the same name and shape. Modules of
    other kinds at the same name (a ``DifferentialConv2d`` where the baseline has an ``nn.Conv2d``) keep their
    own initialisation.
    """
    theirs = dict(reference.named_modules())
    copied = []
    with torch.no_grad():
        for name, module in model.named_modules():
            other = theirs.get(name)
            if other is None or not (isinstance(module, type(other)) or isinstance(other, type(module))):
                continue
            source = dict(other.named_parameters(recurse=False)) | dict(other.named_buffers(recurse=False))
            mine = dict(module.named_parameters(recurse=False)) | dict(module.named_buffers(recurse=False))
            for key, tensor in mine.items():
                if key in source and source[key].shape == tensor.shape and source[key].dtype == tensor.dtype:
                    tensor.copy_(source[key])
                    copied.append(f"{name}.{key}" if name else key)
    return copied


def _paired_model(config: engine.TrainConfig, info: DatasetInfo) -> nn.Module:
    """The run's model; a variant other than ``baseline`` takes the initial weights the baseline run of the same
    seed starts from, in every layer they share (both are built from the same random state)."""
    state = torch.get_rng_state()
    model = build_model(config.model, config.variant, info)
    if config.variant != "baseline":
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(state)
            share_initial_weights(model, build_model(config.model, "baseline", info))
    return model


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

    Seed s pairs runs: every variant sees the same data order and augmentation draws (the data pipeline's own
    generators, seeded by s) and starts from the baseline's initial weights of seed s in every layer it shares
    with the baseline (:func:`share_initial_weights`), so differences between variants are the variants'.
    Returns the engine's summary (:func:`pdeconv.engine.summarize`). ``loaders`` and ``on_epoch_end`` go to
    :func:`pdeconv.engine.train`.
    """
    return engine.train(
        config,
        lambda info: _paired_model(config, info),
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
        raise PdeconvError(f"{path}: checkpoint has no model state dict and config; was it written by pdeconv train?")
    name = config["model"]
    if name not in list_models():
        raise PdeconvError(
            f"{path}: model {name!r} is not a pdeconv model; build it in Python and call analyze_model(model)"
        )
    model = create(name, variant=config.get("variant", "baseline"), **_dataset_shape(path, config))
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise PdeconvError(f"{path}: weights do not fit {name} ({first})") from None
    return model.eval()


def _dataset_shape(checkpoint: Path, config: dict[str, Any]) -> dict[str, int]:
    run_config = checkpoint.parent / engine.CONFIG
    if run_config.is_file():
        try:
            dataset = json.loads(run_config.read_text()).get("dataset")
        except (json.JSONDecodeError, AttributeError):
            raise PdeconvError(f"{run_config}: not a run's config (unreadable JSON object)") from None
        if isinstance(dataset, dict) and {"num_classes", "in_chans"} <= dataset.keys():
            return {"num_classes": dataset["num_classes"], "in_chans": dataset["in_chans"]}
    info = dataset_info(config.get("dataset", "fashion-mnist"))
    return {"num_classes": info.num_classes, "in_chans": info.in_chans}
