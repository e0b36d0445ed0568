"""PDE layers: each idea of the essay as a small ``nn.Module`` (floor 0), one file per idea.

* ``varcoef``: fields a(x, y) that multiply a layer's output (variable coefficients);
* ``differential``: the essay's depthwise ×m differential convolution;
* ``steppers``: the residual connection as a time stepper (Euler, Runge–Kutta, leapfrog, Verlet) and exact
  adjoints;
* ``hyperbolic``: symmetric hyperbolic systems (Maxwell, Dirac);
* ``quasilinear``: the essay author's later block, coefficients that depend on u.
"""

from pdeconv.layers.differential import DifferentialConv2d
from pdeconv.layers.hyperbolic import SymmetricHyperbolic2d, dirac, maxwell_te
from pdeconv.layers.quasilinear import QuasiLinear
from pdeconv.layers.steppers import (
    RK4,
    TABLEAUS,
    ButcherTableau,
    EulerStep,
    Leapfrog,
    RungeKutta,
    SymmetricConv,
    Verlet,
    conv_adjoint,
    integrating_factor_rk4_step,
    runge_kutta_step,
)
from pdeconv.layers.varcoef import VariableCoefficients, monomials

__all__ = [
    "RK4",
    "TABLEAUS",
    "ButcherTableau",
    "DifferentialConv2d",
    "EulerStep",
    "Leapfrog",
    "QuasiLinear",
    "RungeKutta",
    "SymmetricConv",
    "SymmetricHyperbolic2d",
    "VariableCoefficients",
    "Verlet",
    "conv_adjoint",
    "dirac",
    "maxwell_te",
    "monomials",
    "integrating_factor_rk4_step",
    "runge_kutta_step",
]
