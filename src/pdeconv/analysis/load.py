"""What to analyse: a training run or checkpoint, a pdeconv model by name, or a torchvision classifier.

Models are built on the CPU; weights come only from pdeconv checkpoints (read with ``weights_only=True`` by
:func:`pdeconv.engine.load_checkpoint`), never downloaded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from pdeconv import engine, models
from pdeconv.data import dataset_info

__all__ = ["load_model", "model_from_checkpoint"]


def model_from_checkpoint(path: str | Path) -> nn.Module:
    """Rebuild the model of a ``pdeconv train`` run (a run directory or its checkpoint file) with its weights.

    The checkpoint's ``config`` names the model and variant; classes and input channels come from the run's
    ``config.json`` next to it (the dataset actually used) or else from the dataset named in ``config``.
    """
    path = Path(path)
    if path.is_dir():
        if not (path / engine.CHECKPOINT).is_file():
            raise FileNotFoundError(
                f"{path} holds no {engine.CHECKPOINT}: give a run directory of pdeconv train"
            )
        path = path / engine.CHECKPOINT
    state = engine.load_checkpoint(path)
    config = state.get("config")
    if not isinstance(config, dict) or "model" not in config or not isinstance(state.get("model"), dict):
        raise ValueError(
            f"{path}: checkpoint has no model state dict and config; was it written by pdeconv train?"
        )
    name = config["model"]
    if name not in models.list_models():
        raise ValueError(
            f"{path}: model {name!r} is not a pdeconv model; build it in Python and call analyze_model(model)"
        )
    model = models.create(name, variant=config.get("variant", "baseline"), **_dataset_shape(path, config))
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


def _torchvision_model(name: str, num_classes: int | None) -> nn.Module:
    import torchvision

    valid = torchvision.models.list_models(module=torchvision.models)  # the classification models
    if name not in valid:
        raise ValueError(f"unknown torchvision classification model {name!r}; valid ones: {', '.join(valid)}")
    kwargs = {} if num_classes is None else {"num_classes": num_classes}
    return torchvision.models.get_model(name, weights=None, **kwargs)


def load_model(
    source: str | Path | None = None,
    *,
    torchvision: str | None = None,
    variant: str | None = None,
    in_chans: int | None = None,
    num_classes: int | None = None,
) -> nn.Module:
    """The model named by ``source`` (run directory, checkpoint or pdeconv model name) or ``torchvision``.

    pdeconv and torchvision models are randomly initialised (``variant``, ``in_chans``, ``num_classes`` go to
    :func:`pdeconv.models.create`; torchvision takes ``num_classes`` only and its weights are never fetched).
    ValueError / FileNotFoundError with one line for anything that is none of these.
    """
    for option, value in (("in_chans", in_chans), ("num_classes", num_classes)):
        if value is not None and value < 1:
            raise ValueError(f"{option} must be at least 1; got {value}")
    if (source is None) == (torchvision is None):
        raise ValueError(
            "give either a run directory, checkpoint or pdeconv model name, or --torchvision NAME"
        )
    if torchvision is not None:
        if variant is not None or in_chans is not None:
            raise ValueError(
                "--variant and --in-chans apply to pdeconv models; torchvision models take 3 channels"
            )
        return _torchvision_model(torchvision, num_classes).eval()
    path = Path(source)
    if path.exists():
        if variant is not None or in_chans is not None or num_classes is not None:
            raise ValueError(
                "--variant, --in-chans and --num-classes apply to model names; a run has its own"
            )
        return model_from_checkpoint(path)
    if str(source) not in models.list_models():
        raise FileNotFoundError(
            f"{source!r} is neither an existing run directory or checkpoint nor a pdeconv model name "
            f"({', '.join(models.list_models())})"
        )
    kwargs = {k: v for k, v in (("in_chans", in_chans), ("num_classes", num_classes)) if v is not None}
    return models.create(str(source), variant=variant or "baseline", **kwargs).eval()
