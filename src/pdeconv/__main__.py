"""``python -m pdeconv`` (and ``torchrun -m pdeconv``) runs the command-line interface."""

from pdeconv.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
