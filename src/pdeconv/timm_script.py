"""Run a timm script (``train.py``, ``validate.py``, ``inference.py`` of a timm checkout) with pdeconv's models.

timm's scripts build models by name from timm's registry, which knows the ``pde_*`` models once
:mod:`pdeconv.models` is imported. This runs the script in this process after that import, with the
arguments given::

    python -m pdeconv.timm_script path/to/timm/train.py /data/cifar10 --dataset torch/cifar10 \\
        --model pde_resnet20.seed --num-classes 10 --epochs 30 -b 128 --lr 0.1

The script runs as ``__main__`` with ``sys.argv`` = the script and its arguments, as ``python train.py ...``
would run it.
"""

from __future__ import annotations

import runpy
import sys
import warnings
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(__doc__.strip())
        raise SystemExit(0 if args else 2)
    script = Path(args[0])
    if not script.is_file():
        print(f"pdeconv.timm_script: no script {script}; give the path of timm's train.py (or another timm "
              "script) first, then its arguments", file=sys.stderr)
        raise SystemExit(2)
    try:
        import timm  # noqa: F401
    except ImportError:
        print("pdeconv.timm_script: timm is not installed; pip install 'pdeconv[timm]'", file=sys.stderr)
        raise SystemExit(2) from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # importing pdeconv.models warns of a too old timm: said below, as an error
        from pdeconv.models.registry import timm_too_old
    if too_old := timm_too_old():
        print(f"pdeconv.timm_script: {too_old}", file=sys.stderr)
        raise SystemExit(2)
    import pdeconv.models  # noqa: F401  (registers the pde_* models with timm)

    sys.argv = [str(script), *args[1:]]
    sys.path.insert(0, str(script.resolve().parent))  # as `python train.py` puts the script's folder first
    runpy.run_path(str(script), run_name="__main__")


if __name__ == "__main__":
    main()
