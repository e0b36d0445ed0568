"""The probes that train their own models on generated data, by name (``pdeconv probe NAME``)."""

from __future__ import annotations

from pdeconv.probes.base import Probe
from pdeconv.probes.boundary import _boundary_trial, _boundary_verdict
from pdeconv.probes.rotation import _rotation_trial, _rotation_verdict
from pdeconv.probes.transport import _DEPTHS, _SHIFTS, _transport_trial, _transport_verdict

TRUNCATION_PREDICTION = (
    "The essay's first sentence: a 3×3 convolution is a differential operator of order ≤ 2. If trained networks "
    "used their kernels as such, truncating every 3×3 kernel to its moments of total order ≤ 2 would leave test "
    "accuracy within 1 point of the untruncated network (both after BatchNorm recalibration). (A single earlier "
    "try on one fast-preset ResNet-20 lost 41 points at order ≤ 2, so we expect the prediction to fail for free "
    "kernels; the order2 variant, constrained to order ≤ 2 in training, cannot lose anything at k ≥ 2.)"
)

PROBES: dict[str, Probe] = {
    "rotation": Probe(
        "rotation",
        "variable coefficients … enable the ConvNet to learn to rotate and scale the image",
        "A constant-coefficient PDE net is translation-equivariant and cannot rotate about a fixed centre (only "
        "the borders break the symmetry): its test error stays above 0.5 of doing nothing. With degree-2 "
        "coefficient fields the same net learns the rotation: error below 0.2, and its learned first-order "
        "coefficients align with the rotation's velocity field (y, −x) at cosine above 0.9.",
        ("constant", "variable"), "relative_error", False, _rotation_trial, _rotation_verdict,
    ),
    "transport": Probe(
        "transport",
        "compounding Sobel can shift the image … at a rate of one pixel per layer",
        "L composed 3×3 convolutions see k pixels away only if L ≥ k: a shift by k pixels of white noise is "
        "learned (the best of 4 fits from random kernels reaches a test error below 1e-2) when L ≥ k and not at "
        "all (error above 0.95: the noise beyond reach is unpredictable) when L < k.",
        tuple(f"shift {k}, {depth} layers" for k in _SHIFTS for depth in _DEPTHS), "relative_error", False,
        _transport_trial, _transport_verdict,
    ),
    "boundary": Probe(
        "boundary",
        "Neumann … could make traveling waves bounce back and thereby retain more information",
        "When the answer lies in pixels at the border, reflect padding (Neumann) keeps more of them than zero "
        "padding (Dirichlet): a CNN classifying bars cut by the border is more accurate with Neumann padding "
        "(paired difference above 0, its 95% CI excluding 0).",
        ("dirichlet", "neumann"), "test_accuracy", True, _boundary_trial, _boundary_verdict,
    ),
    "truncation": Probe(
        "truncation",
        "the 3×3 conv can be seen as a differential operator (of order ≤ 2)",
        TRUNCATION_PREDICTION, (), "order ≤ 4", True, needs_runs=True,
    ),
}
