"""Apply the essay's ideas to a ConvNet you already have (torchvision ResNet/VGG/MobileNet/ConvNeXt, timm).

``convert(model, bc="neumann", variable_coefficients=2)`` changes ``model`` in place:

* ``bc``: every padded convolution gets that boundary condition (:func:`pdeconv.boundary.set_boundary`,
  plus the ``bc`` of pdeconv's own differential layers);
* ``variable_coefficients=d``: every spatial convolution (kernel larger than 1×1, any stride or groups)
  is followed by ``u ↦ a(x, y) · u`` with per-channel polynomial fields of degree d
  (:class:`pdeconv.layers.VariableCoefficients`), evaluated on the convolution's *output* grid, so strided
  convolutions get fields at their own resolution. The convolution becomes a :class:`ModulatedConv2d`
  (its class is swapped, as ``torch.nn.utils.parametrize`` does), so it keeps its parameters, their names
  and its type: an original checkpoint still loads with ``strict=False``, and the only new state-dict keys
  are ``<conv>.varcoef.weight``. The fields start at ``a ≡ 1``, so the converted model computes exactly
  what the original did until it is trained.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cache

from torch import Tensor, nn

from pdeconv.boundary import padding_mode, set_boundary
from pdeconv.layers import VariableCoefficients

__all__ = ["ConvertReport", "ModulatedConv2d", "convert"]


class ModulatedConv2d(nn.Conv2d):
    """A convolution followed by variable coefficients: ``u ↦ a(x, y) · conv(u)`` on the output grid.

    Made by :func:`convert` from an existing ``nn.Conv2d`` (or subclass); ``varcoef`` holds the fields.
    """

    varcoef: VariableCoefficients

    def forward(self, input: Tensor) -> Tensor:
        return self.varcoef(super().forward(input))


@cache
def _modulated_class(cls: type[nn.Conv2d]) -> type[nn.Conv2d]:
    # a subclass (timm's Conv2dSame, ...) keeps its own forward: ModulatedConv2d's super() resolves to it
    if cls is nn.Conv2d:
        return ModulatedConv2d
    return type(f"Modulated{cls.__name__}", (ModulatedConv2d, cls), {})


@dataclass
class ConvertReport:
    """What :func:`convert` changed, by module name (``model.named_modules()``)."""

    boundary: list[str] = field(default_factory=list)  # convolutions given the boundary condition
    modulated: list[str] = field(default_factory=list)  # spatial convolutions now followed by a(x, y)·
    bc: str | None = None
    degree: int | None = None

    @property
    def count(self) -> int:
        """Number of distinct modules changed."""
        return len(set(self.boundary) | set(self.modulated))

    def __str__(self) -> str:
        lines = [f"converted {self.count} modules"]
        if self.bc is not None:
            lines.append(f"  boundary condition {self.bc!r}: {len(self.boundary)} convolutions")
        if self.degree is not None:
            lines.append(
                f"  variable coefficients (degree {self.degree}): {len(self.modulated)} convolutions, "
                f"new keys <name>.varcoef.weight"
            )
        return "\n".join(lines)


def convert(
    model: nn.Module,
    *,
    bc: str | None = None,
    variable_coefficients: int | None = None,
    only: Iterable[str] | Callable[[str, nn.Module], bool] | None = None,
) -> ConvertReport:
    """Give ``model`` (in place) the boundary condition ``bc`` and/or variable coefficients of that degree.

    ``only`` restricts the change to the named modules or to those with ``only(name, module)`` true.
    Returns a :class:`ConvertReport`; the model's output is unchanged until its new fields are trained
    (up to the boundary condition, which changes what the padding adds).
    """
    if bc is None and variable_coefficients is None:
        raise ValueError("convert: nothing to do; pass bc='neumann' (or another) and/or variable_coefficients=2")
    if variable_coefficients is not None and variable_coefficients < 0:
        raise ValueError(f"variable_coefficients is a polynomial degree ≥ 0; got {variable_coefficients}")
    if only is not None and not callable(only):
        names = set(only)
        missing = names - {name for name, _ in model.named_modules()}
        if missing:
            raise ValueError(f"convert(only=...): no modules named {sorted(missing)} in this model")
        only = lambda name, module, names=names: name in names  # noqa: E731
    selected: Callable[[str, nn.Module], bool] = only or (lambda name, module: True)
    report = ConvertReport(bc=bc, degree=variable_coefficients)

    if bc is not None:
        padding_mode(bc)  # ValueError listing the valid names

        def record(name: str, module: nn.Module) -> bool:
            if selected(name, module):
                report.boundary.append(name)
                return True
            return False

        set_boundary(model, bc, only=record)  # padded convs, and pdeconv's layers that carry a named bc

    if variable_coefficients is not None:
        spatial = [
            (name, m)
            for name, m in model.named_modules()
            if isinstance(m, nn.Conv2d)
            and not isinstance(m, ModulatedConv2d)
            and max(m.kernel_size) > 1
            and selected(name, m)
        ]
        for name, conv in spatial:
            conv.__class__ = _modulated_class(type(conv))
            conv.varcoef = VariableCoefficients(conv.out_channels, variable_coefficients, init="identity").to(
                device=conv.weight.device, dtype=conv.weight.dtype
            )
            report.modulated.append(name)
    return report
