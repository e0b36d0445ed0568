"""pdeconv: ConvNets from the PDE perspective.

Floor 0 (mathematics): :mod:`pdeconv.stencil`, :mod:`pdeconv.boundary`, :mod:`pdeconv.layers`,
:mod:`pdeconv.regularize`. Higher floors (models, engine, analysis, discovery, CLI) build on them.
``pdeconv.boundary``, ``pdeconv.stencil``, ``set_boundary`` and ``convert`` load torch when first used, so that
``import pdeconv`` (and ``pdeconv --help``) starts fast.
"""

import importlib
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("pdeconv")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

__all__ = ["__version__", "boundary", "stencil", "set_boundary", "convert"]


def __getattr__(name: str):
    if name in ("boundary", "stencil"):
        return importlib.import_module(f"pdeconv.{name}")
    if name == "set_boundary":
        from pdeconv.boundary import set_boundary

        return set_boundary
    if name == "convert":  # the models floor (torchvision)
        from pdeconv.models.convert import convert

        return convert
    raise AttributeError(f"module 'pdeconv' has no attribute {name!r}")
