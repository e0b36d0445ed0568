"""The inverse problem: simulate PDE data, discover the PDE behind it, report it (``pdeconv discover``).

"The training of a ConvNet would be an inverse problem: we know the solutions (dataset), and look for the PDE
that would yield those solutions." PDE-Net's answer, rebuilt from :mod:`pdeconv.stencil` (moment-constrained
filters) and :mod:`pdeconv.boundary` (padding as boundary condition):

* :mod:`~pdeconv.discover.dataset`: the checked data (``u`` as (N, T, C, *space), spacings, ``bc``,
  ``components``), also from one's own arrays with named axes (:mod:`~pdeconv.discover.axes`);
* :mod:`~pdeconv.discover.formats`: the files — ``.npz`` (``u``, ``dt``, ``dx``, ``dy``, ``bc``, ``components``)
  read and written, MATLAB ``.mat`` and HDF5 read with the arrays the user names;
* :mod:`~pdeconv.discover.simulate`: pseudo-spectral reference solvers (heat, convection–diffusion with constant
  and PDE-Net's variable coefficients, 2-D Burgers, λ–ω reaction–diffusion);
* :mod:`~pdeconv.discover.library`, :mod:`~pdeconv.discover.model`: candidate terms and the learnable PDE;
* :mod:`~pdeconv.discover.fit`: a fit's settings, its stages and the choice of form, built from
  :mod:`~pdeconv.discover.regression` (u_t, trust weights, sparse regression) and :mod:`~pdeconv.discover.refit`
  (the rollout loss, the noise floor, L-BFGS, prediction error);
* :mod:`~pdeconv.discover.report`: ``pde.json``, ``fields.npz``, ``report.md`` and plots.
"""

from __future__ import annotations

import os
import sys
import types
from collections.abc import Mapping
from typing import TYPE_CHECKING

from pdeconv.discover.dataset import Dataset
from pdeconv.discover.formats import load, save
from pdeconv.discover.simulate import PDES, simulate, solve, true_equations
from pdeconv.runtime import StageTimes, check_out_dir

if TYPE_CHECKING:
    from pdeconv.discover.fit import Fit, FitSettings, fit  # noqa: F401 - loaded when first used (_Package)

__all__ = [
    "Dataset",
    "Fit",
    "FitSettings",
    "PDES",
    "fit",
    "fit_file",
    "load",
    "save",
    "simulate",
    "simulate_to_file",
    "solve",
    "summary",
    "true_equations",
]


class _Package(types.ModuleType):
    """``fit``, ``Fit`` and ``FitSettings`` load :mod:`pdeconv.discover.fit` (and torch) when first used, so that
    reading data and the command line's checks start fast. ``fit`` is also the submodule's name: the import system
    binds the submodule to the package when it loads it, which must not hide the function."""

    @property
    def fit(self):
        from pdeconv.discover.fit import fit

        return fit

    @fit.setter
    def fit(self, module) -> None:  # the import system binding the submodule pdeconv.discover.fit: keep the function
        pass

    @property
    def Fit(self):  # noqa: N802 - the class's name
        from pdeconv.discover.fit import Fit

        return Fit

    @property
    def FitSettings(self):  # noqa: N802
        from pdeconv.discover.fit import FitSettings

        return FitSettings


sys.modules[__name__].__class__ = _Package


def simulate_to_file(pde: str, out: str | os.PathLike, *, params: Mapping[str, float] | None = None, **options) -> str:
    """:func:`simulate` preset ``pde`` and :func:`save` it to ``out``; returns the path written.

    ``options`` are :func:`simulate`'s (grid, steps, dt, noise, trajectories, seed, zoom, progress).
    """
    return save(simulate(pde, params=params, **options), out)


def fit_file(
    path: str | os.PathLike,
    out: str | os.PathLike,
    *,
    variables: Mapping[str, str] | None = None,
    axes: str | None = None,
    complex_part: str | None = None,
    bc: str | None = None,
    **options,
) -> tuple[Fit, dict[str, str]]:
    """:func:`load` a data file, :func:`fit` it (``options`` are fit's) and write the report files to ``out``.

    ``variables``, ``axes``, ``complex_part`` and ``bc`` are :func:`load`'s (for ``.mat`` and HDF5 files). Nothing
    is written when loading or fitting fails. The result's ``stages`` time every step: ``load``, the fit's own
    stages, ``prediction`` and ``report``.
    """
    check_out_dir(out)  # before the fit, not after it
    loading = StageTimes()
    with loading.stage("load"):
        data = load(path, variables=variables, axes=axes, complex_part=complex_part, bc=bc)  # no torch until here
    from pdeconv.discover.fit import fit
    from pdeconv.discover.report import write_report  # matplotlib only when a report is written

    result = fit(data, **options)
    result.stages = StageTimes(loading | result.stages)
    result.error  # noqa: B018 - the prediction, computed here so that it is timed as its own stage, not the report's
    with result.stages.stage("report"):
        paths = write_report(result, out, source=os.fspath(path))
    return result, paths


def summary(result: Fit, paths: Mapping[str, str]) -> str:
    """What the command line prints: the recovered equation, the prediction error and where the files are."""
    from pdeconv.discover.report import format_equations, variable_terms

    lines = [f"axes: {result.data.note}"] if result.data.note else []
    lines.append(format_equations(result.equations, variable_terms(result), result.data.space_dims))
    form = result.settings.form
    if form == "weak":
        lines.append(f"weak form: test functions ±{result.settings.time_support} frames, "
                     f"±{', '.join(map(str, result.settings.support))} points in space")
    lines.append(f"explains {result.explained:.1%} of {result.explained_of} on the training data "
                 "(1 − residual/total; u_t = 0: 0%)")
    if result.warning and not result.failed:  # a failed fit's warning is the command's error message
        lines.append(f"warning: {result.warning}")
    e = result.error
    lines.append(
        f"prediction error ({result.error_source}): {e[-1]:.3e} after {len(e) - 1} steps "
        f"(relative L2; fit took {result.seconds:.1f} s)"
    )
    lines.append(f"time: {result.stages.line()}")
    lines += [f"wrote {p}" for p in paths.values()]
    return "\n".join(lines)
