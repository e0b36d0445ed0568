"""How long torch.compile takes on a small model with SymmetricHyperbolic2d, against its eager forward.

    python benchmarks/hyperbolic_compile.py          # prints the first compiled forward, an eager one, the difference

The model is README's example: ``Conv2d(1, 4, 3) → SymmetricHyperbolic2d(4) → ReLU`` on 2 × 1 × 12 × 10 inputs,
compiled with the default backend (Inductor). Say the machine and its load with the number.
"""

from __future__ import annotations

import time

import torch

from pdeconv.layers import SymmetricHyperbolic2d
from pdeconv.runtime import cpu_description


def main() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), SymmetricHyperbolic2d(4), torch.nn.ReLU())
    x = torch.randn(2, 1, 12, 10)
    start = time.perf_counter()
    eager = model(x)
    eager_s = time.perf_counter() - start
    start = time.perf_counter()
    compiled = torch.compile(model)(x)
    compile_s = time.perf_counter() - start
    print(f"{cpu_description()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"first compiled forward {compile_s:.1f} s, eager forward {1e3 * eager_s:.1f} ms, "
          f"largest difference {float((compiled - eager).detach().abs().max()):.1e}")


if __name__ == "__main__":
    main()
