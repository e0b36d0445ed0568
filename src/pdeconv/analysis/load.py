"""What to analyse: a training run or checkpoint, a pdeconv model by name, or a torchvision classifier.

Models are built on the CPU; weights come only from pdeconv checkpoints (rebuilt by :func:`pdeconv.run.model_from_run`,
read with ``weights_only=True``), never downloaded.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from pdeconv import models, run, storage
from pdeconv.errors import PdeconvError
from pdeconv.storage import CheckpointError

__all__ = ["load_model"]


def _torchvision_model(name: str, num_classes: int | None) -> nn.Module:
    import torchvision

    valid = torchvision.models.list_models(module=torchvision.models)  # the classification models
    if name not in valid:
        raise PdeconvError(f"unknown torchvision classification model {name!r}; valid ones: {', '.join(valid)}")
    kwargs = {} if num_classes is None else {"num_classes": num_classes}
    return torchvision.models.get_model(name, weights=None, **kwargs)


def load_model(
    source: str | Path | None = None,
    *,
    torchvision: str | None = None,
    variant: str | None = None,
    in_chans: int | None = None,
    num_classes: int | None = None,
    weights: str | Path | None = None,
) -> nn.Module:
    """The model named by ``source`` (run directory, checkpoint or pdeconv model name) or ``torchvision``.

    pdeconv and torchvision models are randomly initialised (``variant``, ``in_chans``, ``num_classes`` go to
    :func:`pdeconv.models.create`; torchvision takes ``num_classes`` only and its weights are never fetched),
    unless ``weights`` names a state-dict file for them (read with ``weights_only=True``, loaded strictly).
    ValueError / FileNotFoundError with one line for anything that is none of these.
    """
    for option, value in (("in_chans", in_chans), ("num_classes", num_classes)):
        if value is not None and value < 1:
            raise PdeconvError(f"`{option}` must be at least 1; got {value}")
    if (source is None) == (torchvision is None):
        raise PdeconvError(
            "give either a run directory, checkpoint or pdeconv model name, or `torchvision` NAME"
        )
    if torchvision is not None:
        if variant is not None or in_chans is not None:
            raise PdeconvError(
                "`variant` and `in_chans` apply to pdeconv models; torchvision models take 3 channels"
            )
        return _with_weights(_torchvision_model(torchvision, num_classes), weights, torchvision).eval()
    path = Path(source)
    if path.exists():
        if variant is not None or in_chans is not None or num_classes is not None or weights is not None:
            raise PdeconvError(
                "`variant`, `in_chans`, `num_classes` and `weights` apply to model names; a run has its own"
            )
        try:
            return run.model_from_run(path)
        except CheckpointError as e:
            hint = _HINTS.get(e.kind)
            raise CheckpointError(f"{e}. {hint}" if hint else str(e), e.kind) from None
    if str(source) not in models.list_models():
        raise FileNotFoundError(
            f"{source!r} is neither an existing run directory or checkpoint nor a pdeconv model name "
            f"({', '.join(models.list_models())})"
        )
    kwargs = {k: v for k, v in (("in_chans", in_chans), ("num_classes", num_classes)) if v is not None}
    model = models.create(str(source), variant=variant or "baseline", **kwargs)
    return _with_weights(model, weights, str(source)).eval()


_HINTS = {
    "state_dict": "Analyse it as the model it belongs to: its pdeconv model name (with its `variant`) or "
                  "`torchvision` NAME, with `weights` FILE; or model.load_state_dict(...) then "
                  "pdeconv.analysis.analyze_model(model)",
    "objects": "Save model.state_dict() and give it as `weights` FILE with the model's name, or load the model "
               "yourself and call pdeconv.analysis.analyze_model(model)",
}


def _with_weights(model: nn.Module, weights: str | Path | None, name: str) -> nn.Module:
    if weights is None:
        return model
    state = storage.read_tensors(weights)
    if isinstance(state, dict) and isinstance(state.get("model"), dict) and "format" in state:
        state = state["model"]  # a pdeconv run checkpoint's weights
    if not isinstance(state, dict):
        raise PdeconvError(f"{weights}: not a state dict (tensors by name); save model.state_dict()")
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
        detail = lines[1] if len(lines) > 1 and lines[0].startswith("Error(s)") else lines[0]
        detail = detail if len(detail) <= 160 else detail[:157] + "..."
        raise PdeconvError(f"{weights}: these weights do not fit {name} ({detail}); check `variant`, `in_chans` and "
                         "`num_classes`") from None
    return model
