"""Load torchvision ResNet weights into a PDE-ResNet: every tensor whose name and shape match is copied.

A variant changes only some layers of each block and keeps torchvision's names for the rest, so a
torchvision state dict (e.g. ``ResNet50_Weights.IMAGENET1K_V2.get_state_dict()``, or one read with
``torch.load(path, weights_only=True)``) initialises everything the variant did not change; the report
says which tensors of the model are new (absent from the checkpoint or of another shape) and therefore
keep their fresh initialisation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from torch import Tensor, nn

__all__ = ["LoadReport", "load_torchvision_weights"]


@dataclass
class LoadReport:
    """What :func:`load_torchvision_weights` did, by state-dict key."""

    loaded: list[str] = field(default_factory=list)  # copied from the checkpoint
    new: list[str] = field(default_factory=list)  # in the model, not loaded (absent or reshaped)
    reshaped: list[str] = field(default_factory=list)  # in both with different shapes (also in ``new``)
    unused: list[str] = field(default_factory=list)  # in the checkpoint only

    def __str__(self) -> str:
        lines = [f"loaded {len(self.loaded)} tensors; {len(self.new)} new; {len(self.unused)} unused"]
        for title, keys in (("new", self.new), ("reshaped", self.reshaped), ("unused", self.unused)):
            if keys:
                shown = ", ".join(keys[:8]) + (f", ... (+{len(keys) - 8})" if len(keys) > 8 else "")
                lines.append(f"  {title}: {shown}")
        return "\n".join(lines)


def load_torchvision_weights(model: nn.Module, state_dict: Mapping[str, Tensor]) -> LoadReport:
    """Copy every tensor of ``state_dict`` whose key and shape match ``model``'s; report the rest."""
    own = model.state_dict()
    report = LoadReport()
    matching = {}
    for key, value in state_dict.items():
        if key not in own:
            report.unused.append(key)
        elif own[key].shape != value.shape:
            report.reshaped.append(key)
        else:
            matching[key] = value
    model.load_state_dict(matching, strict=False)
    report.loaded = list(matching)
    report.new = [key for key in own if key not in matching]
    return report
