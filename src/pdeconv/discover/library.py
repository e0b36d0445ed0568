"""Candidate terms of ``u_t = Σ c · term``: derivatives, their products with the fields, and polynomials.

A term is a product of factors ``(field, (a, b))`` meaning ``∂_y^a ∂_x^b field`` (multi-indices as in
:mod:`pdeconv.stencil`, axes in array order: ``(b,)`` in 1-D, ``(a, b)`` in 2-D, ``(c, a, b)`` = ``∂_z^c ∂_y^a ∂_x^b``
in 3-D). Names are ASCII and unique: ``u``, ``u_x``, ``u_yy``, ``u_xy``, ``u_xxxx`` (from
:func:`pdeconv.stencil.term_name`), products with ``*`` (``u*u_x``, ``v*u_y``), powers with ``^`` (``u^2*v``,
``u^2*u_xx``), and the constant ``1``. Plain fields come first (in component order, with powers), then the
derivative factor.

Libraries (``kinds``, combined with commas; ``linear`` is always included):

* ``linear``: every field and its derivatives up to ``max_order`` (for systems, the other fields' too);
* ``nonlinear``: field × first derivative (``u*u_x``, ``v*u_y``, ...) and the quadratic monomials (``u^2``);
* ``products``: every monomial of degree 1 and 2 in the fields × every derivative up to ``max_order``
  (``u*u_xx``, ``u^2*u_x``, ``u*v*u_xxxx``; PDE-FIND's library), and the quadratic monomials;
* ``polynomial``: the constant ``1`` and all monomials of degree 2 and 3 in the fields (``u^2``, ``u*v^2``, ``u^3``).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations_with_replacement

from pdeconv.errors import PdeconvError

__all__ = ["Term", "KINDS", "build_library", "parse_kinds"]

KINDS = ("linear", "nonlinear", "products", "polynomial")
Factor = tuple[int, tuple[int, ...]]  # (component index, multi-index: (a, b) = ∂_y^a ∂_x^b in 2-D)


@dataclass(frozen=True)
class Term:
    """A product of factors ``∂_y^a ∂_x^b u_c``; ``factors = ()`` is the constant 1."""

    factors: tuple[Factor, ...]
    name: str

    @property
    def derivatives(self) -> set[tuple[int, ...]]:
        return {ab for _, ab in self.factors}


def _name(factors: tuple[Factor, ...], components: tuple[str, ...]) -> str:
    from pdeconv.stencil import term_name  # torch: only when a library is built, not for the CLI's KINDS

    if not factors:
        return "1"
    plain = [c for c, ab in factors if not any(ab)]
    parts = []
    for c in sorted(set(plain)):
        k = plain.count(c)
        parts.append(components[c] + (f"^{k}" if k > 1 else ""))
    parts += [term_name(ab, components[c]) for c, ab in factors if any(ab)]
    return "*".join(parts)


def _term(factors, components) -> Term:
    factors = tuple(sorted(factors, key=lambda f: (any(f[1]), sum(f[1]), f[1], f[0])))
    return Term(factors, _name(factors, components))


def parse_kinds(library: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """``"nonlinear,polynomial"`` → ``("linear", "nonlinear", "polynomial")``; ``ValueError`` on unknown kinds."""
    parts = library.split(",") if isinstance(library, str) else list(library)
    kinds = {p.strip() for p in parts if p.strip()} | {"linear"}
    unknown = kinds - set(KINDS)
    if unknown:
        raise PdeconvError(f"unknown library {sorted(unknown)}; choose from {', '.join(KINDS)} (comma-separated)")
    return tuple(k for k in KINDS if k in kinds)


def build_library(
    components: tuple[str, ...] | list[str],
    library: str | tuple[str, ...] = "linear",
    *,
    max_order: int = 2,
    dims: int = 2,
) -> list[Term]:
    """The candidate terms for fields ``components`` in ``dims`` space dimensions (1, 2 or 3): see the module
    docstring for the kinds."""
    components = tuple(components)
    kinds = parse_kinds(library)
    if max_order < 1:
        raise PdeconvError(f"max_order must be ≥ 1; got {max_order}")
    C = range(len(components))
    terms: list[Term] = []

    def add(factors) -> None:
        t = _term(factors, components)
        if t.name not in {s.name for s in terms}:
            terms.append(t)

    from pdeconv.stencil import multi_indices

    if "polynomial" in kinds:
        add(())
    zero = (0,) * dims
    for c in C:
        for ab in multi_indices(max_order, dims=dims):
            add(((c, ab),))
    if "nonlinear" in kinds or "products" in kinds:
        orders = multi_indices(max_order if "products" in kinds else 1, dims=dims)[1:]
        powers = [(w,) for w in C]
        if "products" in kinds:
            powers += list(combinations_with_replacement(C, 2))
        for ws in powers:
            for c in C:
                for ab in orders:
                    add((*((w, zero) for w in ws), (c, ab)))
    degrees = (2, 3) if "polynomial" in kinds else (2,) if {"nonlinear", "products"} & set(kinds) else ()
    for d in degrees:
        for combo in combinations_with_replacement(C, d):
            add(tuple((c, zero) for c in combo))
    return terms
