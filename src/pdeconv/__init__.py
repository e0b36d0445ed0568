"""pdeconv: ConvNets from the PDE perspective.

Floor 0 (mathematics): :mod:`pdeconv.stencil`, :mod:`pdeconv.boundary`, :mod:`pdeconv.layers`,
:mod:`pdeconv.regularize`. Higher floors (models, engine, analysis, discovery, CLI) build on them.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("pdeconv")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

from pdeconv import boundary, stencil  # noqa: E402
from pdeconv.boundary import set_boundary  # noqa: E402

__all__ = ["__version__", "boundary", "stencil", "set_boundary", "convert"]


def __getattr__(name: str):  # ``pdeconv.convert`` loads the models floor (torchvision) only when used
    if name == "convert":
        from pdeconv.models.convert import convert

        return convert
    raise AttributeError(f"module 'pdeconv' has no attribute {name!r}")
