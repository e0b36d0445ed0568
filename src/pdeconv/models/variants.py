"""Variants are data: each idea of the essay is a named bundle of options read by one block code path.

A variant spec is a name or several joined by ``+`` (``"seed+neumann"``). A part may also set one option to a
value, ``FIELD=VALUE``: ``bc=replicate``, ``dw=2`` (depthwise ×2), ``order=1`` (with ``dw``), ``varcoef=1``, or
``penalty=1`` (the hyperbolicity penalty's weight) or ``lr=0.4`` (the peak learning rate), so ablations along one
axis need no new names
(``dw=1``, ``dw=2``, ``dw4``, ``dw=9``). Parts merge field by field: a field left at its default takes the
other's value; two different non-default values are a conflict (``ValueError``). The blocks in
:mod:`pdeconv.models.blocks` read the merged :class:`VariantOptions`.

A variant may also change how the model is trained (``hyperbolic``: a penalty added to the loss; ``seed+lr=0.4``:
the block at its own learning rate). That is not architecture, so it is not a :class:`VariantOptions` field: it is
part of the variant's :class:`Variant` entry or a ``penalty=``/``lr=`` part, and :func:`variant_training` merges it
for a spec into the training settings it overrides; the run module (:mod:`pdeconv.run`) applies them.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field, fields

from pdeconv.boundary import boundary_condition
from pdeconv.errors import PdeconvError

__all__ = ["PARAMETERS", "TRAINING_PARAMETERS", "Variant", "VariantOptions", "VARIANTS", "variants", "get_variant",
           "variant_penalty_weight", "variant_training"]


@dataclass(frozen=True)
class VariantOptions:
    """What a variant changes in a ResNet block (defaults: torchvision's plain ResNet).

    bc:              boundary condition of every padded convolution (``dirichlet`` = zero padding).
    dw:              depthwise multiplier m: each 3×3 conv becomes ``C → (3×3, groups=C) → C·m`` followed by
                     a 1×1 (the essay's "64 → 64×4 → 64"); ``None`` keeps the full 3×3.
    order:           with ``dw``, parameterise each depthwise kernel by the coefficients of a differential
                     operator of order ≤ ``order`` instead of its 9 raw weights.
    varcoef:         degree of the polynomial coefficient fields ``a(x, y)`` multiplying each 3×3 output.
    seed_compatible: the essay's coordinate grid and initialisation for ``varcoef`` (see ``seed``).
    quasilinear:     with ``dw``, the depthwise operator becomes :class:`pdeconv.layers.QuasiLinear`:
                     1×1 to 2C, product of the halves, then the depthwise step (coefficients depend on u).
    leapfrog:        each block that keeps its shape becomes two :class:`pdeconv.layers.Leapfrog` steps of the
                     second-order hyperbolic system ``u_tt = −Kᵀσ(N(K u))`` (Ruthotto & Haber's hyperbolic
                     network; K a 3×3 convolution with its exact adjoint, N a BatchNorm), started at rest: the
                     network is a discretised wave equation with as many parameters as the baseline.
    name:            the spec this was parsed from (not an option; ignored when merging).
    """

    # the fields a spec part may set as FIELD=VALUE say so in their metadata (PARAMETERS is read from it)
    bc: str = field(default="dirichlet", metadata={"spec": True})
    dw: int | None = field(default=None, metadata={"spec": True})
    order: int | None = field(default=None, metadata={"spec": True})
    varcoef: int | None = field(default=None, metadata={"spec": True})
    seed_compatible: bool = False
    quasilinear: bool = False
    leapfrog: bool = False
    name: str = "baseline"

    def __post_init__(self) -> None:
        object.__setattr__(self, "bc", boundary_condition(self.bc))  # any case; ValueError listing valid ones
        if self.dw is not None and self.dw < 1:
            raise PdeconvError(f"depthwise multiplier dw must be ≥ 1; got {self.dw}")
        if self.order is not None and self.dw is None:
            raise PdeconvError("order parameterises depthwise kernels; set dw too (as variant 'order2' does)")
        if self.seed_compatible and self.varcoef != 2:
            raise PdeconvError("seed_compatible reproduces the essay's degree-2 fields; it needs varcoef=2")
        if self.quasilinear and self.dw is None:
            raise PdeconvError("quasilinear feeds a depthwise step; set dw too (as variant 'quasilinear' does)")
        if self.leapfrog and (self.dw is not None or self.varcoef is not None):
            raise PdeconvError("leapfrog blocks (variant 'wave') use full 3×3 convolutions and their adjoints; "
                             "they combine with no dw or varcoef")
        if self.leapfrog and self.bc not in ("dirichlet", "periodic"):
            raise PdeconvError(f"leapfrog blocks (variant 'wave') need the exact adjoint of their convolution, which "
                             f"bc={self.bc!r} does not have; use dirichlet or periodic")


@dataclass(frozen=True)
class Variant:
    """A registered variant: its architecture options, a one-line description, and how it trains.

    ``penalty_weight``: the weight of the hyperbolicity penalty (:func:`pdeconv.regularize.hyperbolicity_penalty`,
    a mean over layers of terms in [0, 1]) that training adds to the loss by default; 0.1 keeps it a fraction of
    the initial cross-entropy (ln 10 ≈ 2.3). The architecture is unchanged by it.
    """

    options: VariantOptions
    description: str
    penalty_weight: float = 0.0


#: name → :class:`Variant`. ``seed`` is the block the essay gives as code.
VARIANTS: dict[str, Variant] = {
    "baseline": Variant(VariantOptions(), "plain torchvision ResNet: full 3×3 convolutions, zero padding (Dirichlet)"),
    "neumann": Variant(
        VariantOptions(bc="neumann"),
        "Neumann boundary condition (reflect padding) in every convolution, so waves bounce back",
    ),
    "periodic": Variant(VariantOptions(bc="periodic"), "periodic boundary condition (circular padding): a torus"),
    "dw4": Variant(
        VariantOptions(dw=4),
        "each 3×3 → depthwise 3×3 ×4 (four differential operators per channel) + 1×1 that mixes them",
    ),
    "order2": Variant(
        VariantOptions(dw=4, order=2),
        "dw4 with every depthwise kernel parameterised as a differential operator of order ≤ 2",
    ),
    "varcoef": Variant(
        VariantOptions(varcoef=2),
        "variable coefficients: each 3×3 output × a(x, y), a degree-2 polynomial field starting at 1",
    ),
    "seed": Variant(
        VariantOptions(dw=4, varcoef=2, seed_compatible=True),
        "the essay's modified Bottleneck: depthwise ×4 + degree-2 variable coefficients",
    ),
    "hyperbolic": Variant(
        VariantOptions(),
        "baseline architecture trained with + 0.1 × the hyperbolicity penalty (a mean over layers, each in [0, 1])",
        penalty_weight=0.1,
    ),
    "wave": Variant(
        VariantOptions(leapfrog=True),
        "a discretised wave equation: every shape-keeping block is 2 leapfrog steps of u_tt = −Kᵀσ(BN(Ku))",
    ),
    "quasilinear": Variant(
        VariantOptions(dw=4, quasilinear=True),
        "quasilinear: coefficients depend on u (1×1 to 2C, product of halves, depthwise ×4 step, 1×1)",
    ),
}


def variants() -> dict[str, str]:
    """The registered variant names with their one-line descriptions."""
    return {name: v.description for name, v in VARIANTS.items()}


def _spec_type(name: str) -> type:
    hint = typing.get_type_hints(VariantOptions)[name]
    return next(t for t in (int, float, str) if hint is t or t in typing.get_args(hint))


#: The training settings a spec part may set as ``NAME=VALUE``: its name in the spec → the
#: :class:`~pdeconv.engine.TrainConfig` field it overrides for the runs of that variant.
TRAINING_PARAMETERS: dict[str, str] = {"penalty": "penalty_weight", "lr": "lr"}
#: The options a spec part may set as ``FIELD=VALUE``, with their types (the :class:`VariantOptions` fields marked
#: ``spec`` in their metadata, then the training settings of :data:`TRAINING_PARAMETERS`).
PARAMETERS: dict[str, type] = {f.name: _spec_type(f.name) for f in fields(VariantOptions) if f.metadata.get("spec")}
PARAMETERS.update(dict.fromkeys(TRAINING_PARAMETERS, float))


def _parts(spec: str) -> list[tuple[str, dict, dict]]:
    """Each part of ``spec`` as (its text, the option fields it sets, the training settings it sets)."""
    if not isinstance(spec, str) or not spec.strip():
        raise PdeconvError(f"variant must be a name like 'seed' or 'seed+neumann'; got {spec!r}")
    parts = []
    defaults = VariantOptions()
    for part in (p.strip() for p in spec.split("+")):
        if "=" in part:
            key, _, text = part.partition("=")
            key, text = key.strip(), text.strip()
            if key not in PARAMETERS:
                raise PdeconvError(f"unknown variant option {key!r} in {spec!r}; options: "
                                 f"{', '.join(f'{k}=VALUE' for k in PARAMETERS)}")
            try:
                value = PARAMETERS[key](text)
            except ValueError:
                raise PdeconvError(f"variant option {key} takes a{'n integer' if PARAMETERS[key] is int else ' number'}"
                                 f"; got {part!r} in {spec!r}") from None
            if key == "penalty" and not value >= 0:
                raise PdeconvError(f"penalty must be ≥ 0; got {part!r}")
            if key == "lr" and not value > 0:
                raise PdeconvError(f"lr must be > 0; got {part!r}")
            if key in TRAINING_PARAMETERS:
                parts.append((part, {}, {TRAINING_PARAMETERS[key]: value}))
            else:
                parts.append((part, {key: value}, {}))
        elif part in VARIANTS:
            v = VARIANTS[part]
            set_fields = {f.name: getattr(v.options, f.name) for f in fields(VariantOptions)
                          if f.name != "name" and getattr(v.options, f.name) != getattr(defaults, f.name)}
            parts.append((part, set_fields, {"penalty_weight": v.penalty_weight} if v.penalty_weight else {}))
        else:
            raise PdeconvError(f"unknown variant {part!r} in {spec!r}; valid ones: {', '.join(VARIANTS)} "
                             f"(or FIELD=VALUE with FIELD one of {', '.join(PARAMETERS)})")
    return parts


def get_variant(spec: str | VariantOptions) -> VariantOptions:
    """Parse a variant spec (``"seed"``, ``"seed+neumann"``, ``"dw=2+bc=replicate"``) into merged options;
    options pass through."""
    if isinstance(spec, VariantOptions):
        return spec
    merged = _merge(spec, 0, lambda key, old, owner, new, part: f"variants {owner!r} and {part!r} conflict: "
                    f"{key}={old!r} vs {key}={new!r}")
    return VariantOptions(**merged, name=spec.strip())


def _merge(spec: str, which: int, clash) -> dict:
    """What the parts of ``spec`` set, merged: ``which`` 0 for the option fields, 1 for the training settings;
    ``clash(key, old, its part, new, this part)`` words the error when two parts set one key differently."""
    merged: dict = {}
    owner: dict[str, str] = {}
    for part, *sets in _parts(spec):
        for key, value in sets[which].items():
            if key in merged and merged[key] != value:
                raise PdeconvError(clash(key, merged[key], owner[key], value, part))
            merged[key], owner[key] = value, part
    return merged


def variant_training(spec: str | VariantOptions) -> dict[str, float]:
    """The training settings a spec sets for its runs, as :class:`~pdeconv.engine.TrainConfig` fields
    (``{"penalty_weight": 0.1}`` for ``hyperbolic``, ``{"lr": 0.4}`` for ``seed+lr=0.4``; ``{}`` for none);
    a ``PdeconvError`` when two parts set one setting to different values. Options objects carry none."""
    if isinstance(spec, VariantOptions):
        return {}
    return _merge(spec, 1, lambda key, old, owner, new, part: f"variant {spec!r} sets {key} twice: {old:g} "
                  f"({owner!r}) and {new:g} ({part!r})")


def variant_penalty_weight(spec: str | VariantOptions) -> float:
    """The hyperbolicity-penalty weight a spec trains with by default (0 for none): the ``penalty_weight`` of
    :func:`variant_training`."""
    return variant_training(spec).get("penalty_weight", 0.0)
