"""The eigenbasis of the central-difference matrix on a grid, for :class:`~pdeconv.layers.SymmetricHyperbolic2d`.

Its own module because ``torch.compile`` must not trace it (:func:`eigen_outside_graph`), and marking a function so
(``torch.compiler.disable``) imports ``torch._dynamo``, which takes about 2 s: ``hyperbolic`` imports this module
only when a layer first runs, and a process that never compiles never loads Dynamo for it (``import pdeconv`` and
``pdeconv discover`` start without it).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import torch
from torch import Tensor

__all__ = ["eigen", "eigen_outside_graph"]


def eigen(n: int, bc: str, spacing: float) -> tuple[Tensor, Tensor]:
    """``(λ, U)`` with ``i·D = U diag(λ) Uᴴ`` for the n-point central difference D (CPU, 64-bit).

    ``(D u)[k] = (u[k+1] − u[k−1]) / 2Δ`` is the same matrix along x and y (periodic: indices wrap, dirichlet:
    zero outside). Fresh tensors on each call (under ``torch.export`` they are fake tensors, which must not be
    cached) from cached NumPy arrays, so a trace (``torch.jit.trace``) sees constants, not this computation.
    """
    eigenvalues, vectors = _eigen_numpy(int(n), bc, float(spacing))  # under a trace, n arrives as a 0-d tensor
    return torch.from_numpy(eigenvalues), torch.from_numpy(vectors)


#: :func:`eigen` for ``torch.compile``: constants of the grid, computed eagerly (and cached), never traced
eigen_outside_graph = torch.compiler.disable(eigen)


@lru_cache(maxsize=32)
def _eigen_numpy(n: int, bc: str, spacing: float) -> tuple[Any, Any]:
    import numpy as np

    D = np.zeros((n, n))
    k = np.arange(n)
    for shift, value in ((1, 0.5 / spacing), (-1, -0.5 / spacing)):
        j = k + shift
        inside = np.ones(n, bool) if bc == "periodic" else (j >= 0) & (j < n)
        D[k[inside], j[inside] % n] = value
    eigenvalues, vectors = np.linalg.eigh(1j * D)
    return eigenvalues, vectors
