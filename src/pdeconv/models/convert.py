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

import copy
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cache

import torch
from torch import Tensor, nn

from pdeconv.boundary import boundary_condition, boundary_of, set_boundary
from pdeconv.errors import PdeconvError
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
    """What :func:`convert` changed, by module name (``model.named_modules()``), and what it found done already."""

    boundary: list[str] = field(default_factory=list)  # modules given the boundary condition
    modulated: list[str] = field(default_factory=list)  # spatial convolutions now followed by a(x, y)·
    bc: str | None = None
    degree: int | None = None
    had_boundary: list[str] = field(default_factory=list)  # selected modules that had ``bc`` already
    had_fields: list[str] = field(default_factory=list)  # spatial convolutions that had fields already

    @property
    def count(self) -> int:
        """Number of distinct modules changed."""
        return len(set(self.boundary) | set(self.modulated))

    def __str__(self) -> str:
        lines = [f"converted {self.count} modules"]
        if self.bc is not None:
            lines.append(f"  boundary condition {self.bc!r}: {len(self.boundary)} convolutions"
                         + (f" ({len(self.had_boundary)} had it already)" if self.had_boundary else ""))
        if self.degree is not None:
            lines.append(
                f"  variable coefficients (degree {self.degree}): {len(self.modulated)} convolutions, "
                f"new keys <name>.varcoef.weight"
                + (f" ({len(self.had_fields)} had fields already, left as they were)" if self.had_fields else "")
            )
        return "\n".join(lines)


def _bc_of(module: nn.Module) -> str | None:
    if isinstance(getattr(module, "bc", None), str):
        return module.bc
    if isinstance(module, nn.Conv2d):
        return boundary_of(module)
    return None


def convert(
    model: nn.Module,
    *,
    bc: str | None = None,
    variable_coefficients: int | None = None,
    only: Iterable[str] | Callable[[str, nn.Module], bool] | None = None,
    input_size: tuple[int, ...] | None = None,
) -> ConvertReport:
    """Give ``model`` (in place) the boundary condition ``bc`` and/or variable coefficients of that degree.

    ``only`` restricts the change to the named modules or to those with ``only(name, module)`` true.
    ``input_size`` (N, C, H, W): check at once, with one forward pass of zeros, that inputs of this size get
    through (reflect padding needs every padded layer's input larger than its padding); ``ValueError`` naming
    the first layer that is too small otherwise.

    Returns a :class:`ConvertReport`. Variable coefficients start at a ≡ 1, so they leave the model's output
    unchanged until trained; a boundary condition changes it at once (near the border: other padding values).
    """
    if bc is None and variable_coefficients is None:
        raise PdeconvError("convert: nothing to do; pass bc='neumann' (or another) and/or variable_coefficients=2")
    if variable_coefficients is not None and variable_coefficients < 0:
        raise PdeconvError(f"variable_coefficients is a polynomial degree ≥ 0; got {variable_coefficients}")
    if only is not None and not callable(only):
        names = set(only)
        missing = names - {name for name, _ in model.named_modules()}
        if missing:
            raise PdeconvError(f"convert(only=...): no modules named {sorted(missing)} in this model")
        only = lambda name, module, names=names: name in names  # noqa: E731
    selected: Callable[[str, nn.Module], bool] = only or (lambda name, module: True)
    if input_size is not None:  # try it on a copy first: a model that cannot take the size is left as it was
        trial = copy.deepcopy(model)
        convert(trial, bc=bc, variable_coefficients=variable_coefficients, only=selected)
        _check_input_size(trial, tuple(input_size))
    report = ConvertReport(bc=bc, degree=variable_coefficients)

    if bc is not None:
        bc = boundary_condition(bc)  # any case; ValueError listing the valid names
        before = {name: _bc_of(m) for name, m in model.named_modules()}

        def record(name: str, module: nn.Module) -> bool:
            if not selected(name, module):
                return False
            (report.had_boundary if before.get(name) == bc else report.boundary).append(name)
            return True

        set_boundary(model, bc, only=record)  # padded convs, and pdeconv's layers that carry a named bc

    if variable_coefficients is not None:
        for name, m in model.named_modules():
            if not (isinstance(m, nn.Conv2d) and max(m.kernel_size) > 1 and selected(name, m)):
                continue
            if isinstance(m, ModulatedConv2d):
                report.had_fields.append(name)
                continue
            m.__class__ = _modulated_class(type(m))
            m.varcoef = VariableCoefficients(m.out_channels, variable_coefficients, init="identity").to(
                device=m.weight.device, dtype=m.weight.dtype
            )
            report.modulated.append(name)
    return report


def _check_input_size(model: nn.Module, size: tuple[int, ...]) -> None:
    """One forward pass of zeros of ``size``; a layer whose input is too small for its padding is named: the
    innermost module on the failing call's traceback (not a hook's record, which a nested forward pass — as the
    boundary error's search for the smallest input makes — would overwrite)."""
    if len(size) != 4:
        raise PdeconvError(f"input_size must be (N, C, H, W); got {size}")
    names = {m: name for name, m in model.named_modules()}
    parameter = next(model.parameters(), None)
    x = torch.zeros(size, device=parameter.device if parameter is not None else None,
                    dtype=parameter.dtype if parameter is not None else None)
    training = model.training
    try:
        with torch.no_grad():
            model.eval()(x)
    except (ValueError, RuntimeError) as e:
        where, tb = "the model", e.__traceback__
        while tb is not None:
            module = tb.tb_frame.f_locals.get("self")
            if isinstance(module, nn.Module) and module in names:
                where = names[module] or "the model"
            tb = tb.tb_next
        raise PdeconvError(f"convert: inputs of size {'×'.join(map(str, size))} do not get through {where!r}: "
                           f"{str(e).strip().splitlines()[0]}") from None
    finally:
        model.train(training)
