"""PDE layers: each idea of the essay as a small ``nn.Module`` (floor 0).

Names are resolved lazily from their modules (one small file per idea), so ``import pdeconv.layers`` is
cheap and each module can be read alone.
"""

from __future__ import annotations

import importlib

_EXPORTS: dict[str, str] = {
    # variable coefficients: fields a(x, y) that multiply a layer's output
    "VariableCoefficients": "varcoef",
    "monomials": "varcoef",
    # the essay's depthwise ×m differential convolution
    "DifferentialConv2d": "differential",
    # the residual connection as a time stepper
    "EulerStep": "steppers",
    "Leapfrog": "steppers",
    "Verlet": "steppers",
    "SymmetricConv": "steppers",
    "conv_adjoint": "steppers",
    # symmetric hyperbolic systems
    "SymmetricHyperbolic2d": "hyperbolic",
    "maxwell_te": "hyperbolic",
    "dirac": "hyperbolic",
    # the essay author's later block
    "QuasiLinear": "quasilinear",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pdeconv.layers' has no attribute {name!r}")
    return getattr(importlib.import_module(f"pdeconv.layers.{module}"), name)


def __dir__() -> list[str]:
    return __all__
