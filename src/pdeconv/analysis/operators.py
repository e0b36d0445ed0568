"""The PDE a ConvNet has learned: order spectra, dominant operators, hyperbolicity, depthwise spans.

Every spatial convolution is a matrix of differential operators (:mod:`pdeconv.stencil`):
``K ⋆ u = Σ_{a,b} M[a, b] · ∂_y^a ∂_x^b u`` with the moments ``M = stencil.moments(K, h)``.

Normalisation. Moments are taken at grid spacing ``h`` (default 1: kernel offsets in pixels, so ``M`` is the
operator in pixel units; a dilation d multiplies the spacing by d along its axis). Under another spacing
``M[a, b]`` scales by ``h^(a+b)``, so numbers compare across layers and models only at the same ``h``.

* energy of a layer: ``E = Σ_kernels Σ_{a,b} M[a, b]²`` over its ``C_out · C_in/groups`` kernels;
* order spectrum: ``E_n / E``, the share of the energy at total order ``a + b = n`` for n = 0, 1, 2 and
  ≥ 3 ("3+"); it sums to 1 (all zeros for a layer whose kernels are all zero);
* operator shares: ``E_ab / E`` for each ``∂_y^a ∂_x^b``; the dominant operators are the fewest largest
  shares that together hold more than half of ``E`` (so ``∂x² + ∂y²`` names both);
* Laplacian-like part: ``Σ_kernels (M[0,2] + M[2,0])² / 2 / E``, the energy of the projection of each
  kernel's second-order coefficients ``(M_xx, M_xy, M_yy)`` on the isotropic direction ``(1, 0, 1)/√2`` of
  ``∂x² + ∂y²`` (the rotation-invariant trace); at most the order-2 share, equal to it for ``c·Δ``;
* depthwise span (DifferentialConv2d, or ``nn.Conv2d`` with ``groups = C_in > 1`` and ``C_out = m·C_in``,
  m the multiplier): each input channel's m kernels give an ``m × 6`` matrix of order-≤2 coefficients
  (1, ∂x, ∂y, ∂x², ∂x∂y, ∂y²); its singular values σ, the span dimension ``#{σ_i > SPAN_RTOL · σ_1}``
  and the participation ratio ``(Σσ²)² / Σσ⁴`` say how many independent operators the channel uses (the
  essay's "×4 is enough");
* hyperbolicity: :func:`pdeconv.regularize.hyperbolicity` (1 = exactly symmetric hyperbolic), None where
  it gives no score (it scores the layers :func:`pdeconv.regularize.scored_layers` lists: C→C ``nn.Conv2d``,
  a ``DifferentialConv2d`` with its 1×1 and C_out = C as its folded operator, ``SymmetricHyperbolic2d``);
* :class:`~pdeconv.layers.VariableCoefficients`: the fields ``a_c(x, y)`` sampled on an ``image_size`` grid
  (default 32×32) by the layer itself: pixel centres of [−1, 1]² (the essay's grid for ``seed_compatible``
  layers); rows are y, pointing down, columns are x.

Spatial convolutions are ``nn.Conv2d`` with an odd k×k kernel, k ≥ 3 (or 1×k / k×1, embedded exactly in k×k:
the missing axis has only the offset 0), any groups, and the depthwise kernels of
:class:`~pdeconv.layers.DifferentialConv2d`. 1×1 convolutions (matrices of constants) and even kernels (no
centre, e.g. patchify stems) are left out. A stride samples the operator's output; it does not change it.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pdeconv.boundary import boundary_of
from pdeconv.errors import PdeconvError
from pdeconv.layers.differential import DifferentialConv2d
from pdeconv.layers.varcoef import VariableCoefficients
from pdeconv.regularize import hyperbolicity
from pdeconv.stencil import moments, multi_indices, operator_matrices, operator_name

__all__ = [
    "ORDERS",
    "SPAN_RTOL",
    "FIELD_SIZE",
    "Analysis",
    "LayerAnalysis",
    "DepthwiseSpan",
    "CoefficientFields",
    "analyze_model",
    "SpatialConv",
    "spatial_convs",
    "first_order_matrices",
    "variant_summary",
]

#: labels of the order spectrum: total order 0, 1, 2 and ≥ 3
ORDERS = ("0", "1", "2", "3+")
#: a singular value counts towards a depthwise span when it exceeds this fraction of the largest one
SPAN_RTOL = 0.1
#: default side of the grid on which VariableCoefficients fields are sampled
FIELD_SIZE = 32

_LOW = multi_indices(2)  # 1, ∂x, ∂y, ∂x², ∂x∂y, ∂y²


# --------------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------------


@dataclass
class DepthwiseSpan:
    """How many independent order-≤2 operators each input channel of a depthwise ×m layer uses."""

    multiplier: int
    singular_values: list[list[float]]  # per input channel, descending, min(m, 6) values
    span_dims: list[int]  # per input channel: #{σ_i > SPAN_RTOL · σ_1}
    participation: list[float]  # per input channel: (Σσ²)² / Σσ⁴ (0 for an all-zero channel)

    @property
    def mean_span_dim(self) -> float:
        return sum(self.span_dims) / len(self.span_dims)


@dataclass
class LayerAnalysis:
    """The differential operators of one spatial convolution (definitions: the module docstring)."""

    name: str
    kind: str  # the module's class name
    in_channels: int
    out_channels: int
    groups: int
    kernel_size: int
    stride: tuple[int, int]
    dilation: tuple[int, int]
    bc: str  # boundary condition of its padding
    order_spectrum: dict[str, float]  # ORDERS → share of the energy
    operator_shares: dict[str, float]  # operator name → share of the energy, largest first
    dominant: list[str]
    laplacian_like: float
    hyperbolicity: float | None
    depthwise: DepthwiseSpan | None

    def describe(self) -> str:
        """One line, e.g. ``"∂x, ∂y dominate; Laplacian-like part 12%"``."""
        if not self.dominant:
            return "all kernels are zero"
        verb = "dominates" if len(self.dominant) == 1 else "dominate"
        return f"{', '.join(self.dominant)} {verb}; Laplacian-like part {self.laplacian_like:.0%}"


@dataclass
class CoefficientFields:
    """The fields ``a_c(x, y) = Σ_k coefficients[c][k] · monomial_k(x, y)`` of VariableCoefficients."""

    name: str
    channels: int
    degree: int
    monomials: list[str]  # "1", "x", "y", "x²", "xy", "y²", ...
    coefficients: list[list[float]]  # (channels, monomials)
    resolution: tuple[int, int]  # (H, W) of ``fields``
    field_range: tuple[float, float]  # min and max over all channels and pixels
    spatial_variation: float  # mean over channels of the spatial std of a_c: 0 = constant coefficients
    # mean over channels of std(a_c) / rms(a_c) over the grid, scale-free (a BatchNorm after the fields undoes a
    # common scale): 0 = constant, 1 = a field of mean zero; a channel with a_c ≡ 0 counts as 0
    relative_variation: float
    # share of channels whose field takes both signs on the grid: there the operator it multiplies is reversed
    # in part of the image (a transport whose direction flips, a diffusion that turns anti-diffusive)
    sign_changing: float
    # (channels, H, W), float32; left out of JSON, where the coefficients describe the fields exactly
    fields: Tensor = field(repr=False)


@dataclass
class Analysis:
    """Per-layer operator analysis of a model: ``layers`` in module order, then the coefficient fields."""

    model: str
    h: float
    layers: list[LayerAnalysis]
    coefficient_fields: list[CoefficientFields]

    def layer(self, name: str) -> LayerAnalysis:
        """The entry of the spatial convolution ``name``; ValueError listing the names if there is none."""
        for entry in self.layers:
            if entry.name == name:
                return entry
        valid = ", ".join(e.name for e in self.layers) or "none"
        raise PdeconvError(f"no spatial convolution named {name!r}; valid ones: {valid}")

    def to_dict(self) -> dict:
        """Plain data for JSON: per-layer entries, the fields' coefficients, :func:`variant_summary`."""
        layers = [asdict(e) for e in self.layers]
        for d, e in zip(layers, self.layers):
            if e.depthwise is not None:
                d["depthwise"]["mean_span_dim"] = e.depthwise.mean_span_dim
        fields_ = [{k: v for k, v in vars(f).items() if k != "fields"} for f in self.coefficient_fields]
        return {
            "model": self.model,
            "h": self.h,
            "span_rtol": SPAN_RTOL,
            "summary": variant_summary(self),
            "layers": layers,
            "coefficient_fields": fields_,
        }

    def to_json(self, path: str | Path | None = None) -> str:
        """The analysis as JSON (tensors left out); also written to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=1, ensure_ascii=False)
        if path is not None:
            Path(path).write_text(text + "\n", encoding="utf-8")
        return text

    def summary_table(self, *, short: bool = False) -> str:
        """A Markdown table, one row per spatial convolution; ``short`` leaves out type, channels and size."""
        head = ["#", "layer"] + ([] if short else ["type", "C_in→C_out (groups)", "k"])
        head += [f"order {o}" for o in ORDERS] + ["dominant", "Laplacian-like", "hyperbolicity", "span dim"]
        rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for i, e in enumerate(self.layers):
            shape = (
                []
                if short
                else [e.kind, f"{e.in_channels}→{e.out_channels} ({e.groups})", str(e.kernel_size)]
            )
            dominant = ", ".join(e.dominant[:4]) + (", …" if len(e.dominant) > 4 else "")
            cells = [str(i), e.name, *shape, *(f"{e.order_spectrum[o]:.0%}" for o in ORDERS), dominant or "–"]
            cells.append(f"{e.laplacian_like:.0%}")
            cells.append("–" if e.hyperbolicity is None else f"{e.hyperbolicity:.2f}")
            cells.append(
                "–" if e.depthwise is None else f"{e.depthwise.mean_span_dim:.2f} of {e.depthwise.multiplier}"
            )
            rows.append("| " + " | ".join(cells) + " |")
        return "\n".join(rows)


# --------------------------------------------------------------------------------------------------
# Finding the spatial convolutions
# --------------------------------------------------------------------------------------------------


@dataclass
class SpatialConv:
    """One spatial convolution as the analysis reads it: its kernels as ``nn.Conv2d`` would hold them."""

    name: str
    module: nn.Module
    weight: Tensor  # (C_out, C_in/groups, k, k), float64, detached, on the CPU
    in_channels: int
    groups: int
    stride: tuple[int, int]
    dilation: tuple[int, int]
    bc: str

    @property
    def depthwise(self) -> bool:
        c_out = self.weight.shape[0]
        if isinstance(self.module, DifferentialConv2d):
            return True
        return self.groups == self.in_channels > 1 and c_out % self.in_channels == 0


def _square(weight: Tensor) -> Tensor | None:
    """The kernel as odd k×k (k ≥ 3), 1×k and k×1 embedded in k×k; None if it is not a spatial kernel."""
    kh, kw = weight.shape[-2:]
    k = max(kh, kw)
    if k < 3 or kh % 2 == 0 or kw % 2 == 0 or (kh != kw and min(kh, kw) != 1):
        return None
    if kh == kw:
        return weight
    return F.pad(weight, ((k - kw) // 2, (k - kw) // 2, (k - kh) // 2, (k - kh) // 2))


def spatial_convs(model: nn.Module) -> list[SpatialConv]:
    """The model's spatial convolutions in module order (see the module docstring for which count)."""
    found = []
    for name, m in model.named_modules():
        if isinstance(m, DifferentialConv2d):
            conv = (m.kernel, m.channels, m.channels, (m.stride, m.stride), (1, 1), m.bc)
        elif isinstance(m, nn.Conv2d):
            conv = (m.weight, m.in_channels, m.groups, tuple(m.stride), tuple(m.dilation), boundary_of(m))
        else:
            continue
        weight = _square(conv[0].detach().to("cpu", torch.float64))
        if weight is not None:
            found.append(SpatialConv(name, m, weight, *conv[1:]))
    return found


def _moments(conv: SpatialConv, h: float) -> Tensor:
    """Moments ``(C_out, C_in/groups, k, k)`` at spacing h; a dilation d is spacing d·h along its axis."""
    M = moments(conv.weight, h)
    dy, dx = conv.dilation
    if (dy, dx) != (1, 1):
        power = torch.arange(M.shape[-1], dtype=M.dtype)
        M = M * (dy**power)[:, None] * (dx**power)[None, :]
    return M


@torch.no_grad()
def first_order_matrices(model: nn.Module, name: str, *, h: float = 1.0) -> dict[str, Tensor]:
    """``{"∂x": A_∂x, "∂y": A_∂y}``, each ``(C_out, C_in)``: a layer's first-order part ``A_∂x ∂x + A_∂y ∂y``.

    Grouped convolutions are block-diagonal (:func:`pdeconv.stencil.operator_matrices`).
    """
    convs = {c.name: c for c in spatial_convs(model)}
    if name not in convs:
        raise PdeconvError(f"no spatial convolution named {name!r}; valid ones: {', '.join(convs) or 'none'}")
    conv = convs[name]
    A = operator_matrices(conv.weight, conv.groups, h)
    dy, dx = conv.dilation
    return {"∂x": A[(0, 1)] * dx, "∂y": A[(1, 0)] * dy}


# --------------------------------------------------------------------------------------------------
# The analysis
# --------------------------------------------------------------------------------------------------


def _energy_shares(M: Tensor) -> tuple[dict[str, float], dict[str, float], float]:
    """Order spectrum, operator shares (largest first) and Laplacian-like share of moments ``(..., k, k)``."""
    k = M.shape[-1]
    E = (M**2).reshape(-1, k, k).sum(0)  # E[a, b]: energy of ∂_y^a ∂_x^b over all kernels
    total = float(E.sum())
    scale = 1 / total if total > 0 else 0.0
    order = torch.arange(k)[:, None] + torch.arange(k)[None, :]
    spectrum = [float(E[order == n].sum()) * scale for n in (0, 1, 2)] + [float(E[order >= 3].sum()) * scale]
    shares = {operator_name(ab): float(E[ab]) * scale for ab in multi_indices(2 * (k - 1), size=k)}
    shares = dict(sorted(shares.items(), key=lambda kv: -kv[1]))  # stable: ties keep the stencil order
    laplacian_like = float(((M[..., 0, 2] + M[..., 2, 0]) ** 2).sum()) / 2 * scale
    return dict(zip(ORDERS, spectrum)), shares, laplacian_like


def _dominant(shares: dict[str, float]) -> list[str]:
    """The fewest operators (largest shares first) holding more than half of the energy."""
    out, held = [], 0.0
    for name, share in shares.items():
        if held > 0.5 or share == 0:
            break
        out.append(name)
        held += share
    return out


def _depthwise_span(M: Tensor, channels: int) -> DepthwiseSpan:
    """Singular values of each input channel's ``m × 6`` matrix of order-≤2 coefficients."""
    m = M.shape[0] // channels
    low = torch.stack([M[:, 0, a, b] for a, b in _LOW], dim=-1).reshape(channels, m, len(_LOW))
    s = torch.linalg.svdvals(low)  # (channels, min(m, 6)), descending
    dims = (s > SPAN_RTOL * s[:, :1]).sum(1)
    s2 = s**2
    fourth = (s2**2).sum(1)
    pr = torch.where(fourth > 0, s2.sum(1) ** 2 / fourth.clamp_min(torch.finfo(s.dtype).tiny), 0.0)
    return DepthwiseSpan(m, s.tolist(), dims.tolist(), pr.tolist())


def _analyze_conv(conv: SpatialConv, h: float, score: float | None) -> LayerAnalysis:
    M = _moments(conv, h)
    spectrum, shares, laplacian_like = _energy_shares(M)
    return LayerAnalysis(
        name=conv.name,
        kind=type(conv.module).__name__,
        in_channels=conv.in_channels,
        out_channels=conv.weight.shape[0],
        groups=conv.groups,
        kernel_size=conv.weight.shape[-1],
        stride=conv.stride,
        dilation=conv.dilation,
        bc=conv.bc,
        order_spectrum=spectrum,
        operator_shares=shares,
        dominant=_dominant(shares),
        laplacian_like=laplacian_like,
        hyperbolicity=score,
        depthwise=_depthwise_span(M, conv.in_channels) if conv.depthwise else None,
    )


def _monomial_name(index: tuple[int, int]) -> str:
    return operator_name(index).replace("∂", "")  # ∂_y^a ∂_x^b is named like x^b y^a: "∂x²∂y" → "x²y"


def _analyze_fields(name: str, layer: VariableCoefficients, size: tuple[int, int]) -> CoefficientFields:
    fields_ = layer.coefficient_fields(*size).to("cpu", torch.float32)
    weight = layer.weight.detach().to("cpu", torch.float64)[:, :, 0, 0]
    flat = fields_.flatten(1)
    rms = flat.square().mean(1).sqrt()
    return CoefficientFields(
        name=name,
        channels=layer.channels,
        degree=layer.degree,
        monomials=[_monomial_name(ab) for ab in multi_indices(layer.degree)],
        coefficients=weight.tolist(),
        resolution=size,
        field_range=(float(fields_.min()), float(fields_.max())),
        spatial_variation=float(flat.std(1, unbiased=False).mean()),
        relative_variation=float(torch.where(rms > 0, flat.std(1, unbiased=False) / rms.clamp_min(1e-30), 0).mean()),
        sign_changing=float(((flat.amin(1) < 0) & (flat.amax(1) > 0)).double().mean()),
        fields=fields_,
    )


@torch.no_grad()
def analyze_model(
    model: nn.Module, *, h: float = 1.0, image_size: int | tuple[int, int] | None = None
) -> Analysis:
    """Analyse every spatial convolution of ``model`` (and its VariableCoefficients layers) as PDE operators.

    ``h``: grid spacing of the moments (1 = pixels). ``image_size``: side (or (H, W)) of the grid on which
    coefficient fields are sampled, default :data:`FIELD_SIZE`. Reads the weights only; runs no forward pass.
    """
    if not (isinstance(h, (int, float)) and h > 0 and math.isfinite(h)):
        raise PdeconvError(f"h (the grid spacing) must be a positive number; got {h!r}")
    size = image_size if image_size is not None else FIELD_SIZE
    size = (size, size) if isinstance(size, int) else tuple(size)
    if len(size) != 2 or min(size) < 1:
        raise PdeconvError(f"image_size must be a positive int or (H, W); got {image_size!r}")
    scores = hyperbolicity(model)
    layers = [_analyze_conv(c, float(h), scores.get(c.name)) for c in spatial_convs(model)]
    fields_ = [
        _analyze_fields(name, m, size)
        for name, m in model.named_modules()
        if isinstance(m, VariableCoefficients)
    ]
    return Analysis(type(model).__name__, float(h), layers, fields_)


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def variant_summary(analysis: Analysis) -> dict[str, float | int | None]:
    """A few numbers per model for reports: means over layers (each layer counts once), None where undefined.

    Keys: ``spatial_convs``, ``order_0`` … ``order_3+`` (mean order spectrum), ``laplacian_like``,
    ``hyperbolicity`` (over the scored layers), ``depthwise_span_dim`` (mean over depthwise layers of the
    mean span dimension per channel), ``field_variation`` (mean over variable-coefficient layers of their
    :attr:`CoefficientFields.relative_variation`), ``field_sign_changing`` (the share of all their channels whose
    field takes both signs, :attr:`CoefficientFields.sign_changing`).
    """
    layers = analysis.layers
    out: dict[str, float | int | None] = {"spatial_convs": len(layers)}
    for o in ORDERS:
        out[f"order_{o}"] = _mean([e.order_spectrum[o] for e in layers])
    out["laplacian_like"] = _mean([e.laplacian_like for e in layers])
    out["hyperbolicity"] = _mean([e.hyperbolicity for e in layers if e.hyperbolicity is not None])
    out["depthwise_span_dim"] = _mean([e.depthwise.mean_span_dim for e in layers if e.depthwise is not None])
    fields = analysis.coefficient_fields
    out["field_variation"] = _mean([f.relative_variation for f in fields])
    channels = sum(f.channels for f in fields)
    out["field_sign_changing"] = sum(f.sign_changing * f.channels for f in fields) / channels if fields else None
    return out
