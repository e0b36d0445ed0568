"""The ``pdeconv`` command: ``train | compare | analyze | discover | demo``.

The CLI only parses arguments and calls floor-2 (or demo) functions; everything here is also a Python
call. Errors a user can fix (bad names, missing data, malformed files) print one line and exit with 2;
set ``PDECONV_DEBUG=1`` to see the traceback instead.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from pdeconv import __version__

#: Each entry adds one subcommand to the parser and sets ``func(args) -> int | None`` on it.
_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = []


def command(add: Callable[[argparse._SubParsersAction], None]) -> Callable[[argparse._SubParsersAction], None]:
    """Register a subcommand builder (called once when the parser is built)."""
    _COMMANDS.append(add)
    return add


class UsageError(ValueError):
    """An error in what the user asked for; printed as one line, exit code 2."""


# -------------------------------------------------------------------------------------------------- demo


@command
def _add_demo(sub: argparse._SubParsersAction) -> None:
    from pdeconv import demos

    p = sub.add_parser(
        "demo",
        help="pictures and GIFs of the PDE view (translation, heat, boundary, rotation, dilation)",
        description="Small, fast demonstrations of the essay's claims; each writes PNG/GIF files to --out.",
    )
    p.add_argument("name", choices=sorted(demos.DEMOS), help="which demo to run")
    p.add_argument("--out", default="runs/demo", help="output directory (default: runs/demo)")
    p.add_argument("--size", type=int, default=None, help="image size in pixels (default: the demo's own)")
    p.add_argument("--steps", type=int, default=None, help="number of layers / time steps (default: the demo's own)")
    p.set_defaults(func=lambda a: demos.run(a.name, out=a.out, size=a.size, steps=a.steps) and 0)


# -------------------------------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pdeconv",
        description="ConvNets from the PDE perspective: train, compare, analyze, discover, demo.",
    )
    parser.add_argument("--version", action="version", version=f"pdeconv {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in _COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        rc = args.func(args)
    except KeyboardInterrupt:
        print("pdeconv: interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, PermissionError, OSError) as e:
        if os.environ.get("PDECONV_DEBUG"):
            raise
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"pdeconv {args.command}: error: {msg}", file=sys.stderr)
        return 2
    return int(rc or 0)


if __name__ == "__main__":
    raise SystemExit(main())
