"""Variants are data: each idea of the essay is a named bundle of options read by one block code path.

A variant spec is a name or several joined by ``+`` (``"seed+neumann"``). Specs merge field by field: a
field left at its default takes the other's value; two different non-default values are a conflict
(``ValueError``). The blocks in :mod:`pdeconv.models.blocks` read the merged :class:`VariantOptions`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from functools import reduce

from pdeconv.boundary import padding_mode

__all__ = ["VariantOptions", "VARIANTS", "variants", "get_variant"]


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
    penalty_weight:  default weight of the hyperbolicity penalty the training engine adds to the loss
                     (:func:`pdeconv.regularize.hyperbolicity_penalty`, a mean over layers of scale-free
                     terms in [0, 3]; 0.1 keeps it a fraction of the initial cross-entropy, ln 10 ≈ 2.3);
                     the architecture is unchanged.
    name:            the spec this was parsed from (not an option; ignored when merging).
    """

    bc: str = "dirichlet"
    dw: int | None = None
    order: int | None = None
    varcoef: int | None = None
    seed_compatible: bool = False
    quasilinear: bool = False
    penalty_weight: float = 0.0
    name: str = "baseline"

    def __post_init__(self) -> None:
        padding_mode(self.bc)  # ValueError listing the valid boundary conditions
        if self.dw is not None and self.dw < 1:
            raise ValueError(f"depthwise multiplier dw must be ≥ 1; got {self.dw}")
        if self.order is not None and self.dw is None:
            raise ValueError("order parameterises depthwise kernels; set dw too (as variant 'order2' does)")
        if self.seed_compatible and self.varcoef != 2:
            raise ValueError("seed_compatible reproduces the essay's degree-2 fields; it needs varcoef=2")
        if self.quasilinear and self.dw is None:
            raise ValueError("quasilinear feeds a depthwise step; set dw too (as variant 'quasilinear' does)")
        if self.penalty_weight < 0:
            raise ValueError(f"penalty_weight must be ≥ 0; got {self.penalty_weight}")

    def merge(self, other: VariantOptions) -> VariantOptions:
        """The options of both; ``ValueError`` if a field is set to two different non-default values."""
        merged = {}
        for f in fields(self):
            if f.name == "name":
                continue
            a, b = getattr(self, f.name), getattr(other, f.name)
            if a != b and a != f.default and b != f.default:
                raise ValueError(
                    f"variants {self.name!r} and {other.name!r} conflict: {f.name}={a!r} vs {f.name}={b!r}"
                )
            merged[f.name] = a if a != f.default else b
        return VariantOptions(**merged, name=f"{self.name}+{other.name}")


#: name → (options, one-line description). ``seed`` is the block the essay gives as code.
VARIANTS: dict[str, tuple[VariantOptions, str]] = {
    "baseline": (VariantOptions(), "plain torchvision ResNet: full 3×3 convolutions, zero padding (Dirichlet)"),
    "neumann": (
        VariantOptions(bc="neumann"),
        "Neumann boundary condition (reflect padding) in every convolution, so waves bounce back",
    ),
    "periodic": (VariantOptions(bc="periodic"), "periodic boundary condition (circular padding): a torus"),
    "dw4": (
        VariantOptions(dw=4),
        "each 3×3 → depthwise 3×3 ×4 (four differential operators per channel) + 1×1 that mixes them",
    ),
    "order2": (
        VariantOptions(dw=4, order=2),
        "dw4 with every depthwise kernel parameterised as a differential operator of order ≤ 2",
    ),
    "varcoef": (
        VariantOptions(varcoef=2),
        "variable coefficients: each 3×3 output × a(x, y), a degree-2 polynomial field starting at 1",
    ),
    "seed": (
        VariantOptions(dw=4, varcoef=2, seed_compatible=True),
        "the essay's modified Bottleneck exactly: depthwise ×4 + degree-2 variable coefficients",
    ),
    "hyperbolic": (
        VariantOptions(penalty_weight=0.1),
        "baseline architecture trained with + 0.1 × the hyperbolicity penalty (scale-free, ≤ 3 per layer)",
    ),
    "quasilinear": (
        VariantOptions(dw=4, quasilinear=True),
        "quasilinear: coefficients depend on u (1×1 to 2C, product of halves, depthwise ×4 step, 1×1)",
    ),
}


def variants() -> dict[str, str]:
    """The registered variant names with their one-line descriptions."""
    return {name: description for name, (_, description) in VARIANTS.items()}


def get_variant(spec: str | VariantOptions) -> VariantOptions:
    """Parse a variant spec (``"seed"``, ``"seed+neumann"``) into merged options; options pass through."""
    if isinstance(spec, VariantOptions):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"variant must be a name like 'seed' or 'seed+neumann'; got {spec!r}")
    names = [part.strip() for part in spec.split("+")]
    for name in names:
        if name not in VARIANTS:
            raise ValueError(f"unknown variant {name!r} in {spec!r}; valid ones: {', '.join(VARIANTS)}")
    return reduce(VariantOptions.merge, [replace(VARIANTS[name][0], name=name) for name in names])
