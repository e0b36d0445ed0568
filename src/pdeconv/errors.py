"""The errors a user can cause and fix (floor 0): one family, so that a bug is never mistaken for one.

Every error that pdeconv raises because of what it was asked — a bad argument, a missing or malformed file, a
setting that cannot work here — is a :class:`PdeconvError`, saying what was wrong and what to do. A message names
a parameter in Python terms, between backquotes (`` `kernel_size` ``): that is what a Python caller passes, and
the command line (:mod:`pdeconv.cli`) maps each such name to its flag once (:func:`for_command_line`:
``--kernel-size``) before it prints the error as one line and exits with status 2. Warnings and printed hints that
name a parameter are worded the same way, and the command line maps them as it shows them. Every other exception
(a bug: ``ValueError: too many values to unpack``, a ``TypeError``, ...) shows its traceback.

:class:`PdeconvError` is a ``ValueError``, so code that catches ``ValueError`` around pdeconv calls keeps working.
File-system errors stay Python's own (``FileNotFoundError``, ``PermissionError``: ``OSError``), which the command
line also prints as one line.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

__all__ = ["PdeconvError", "for_command_line"]


class PdeconvError(ValueError):
    """An error in what pdeconv was asked to do, which the caller can fix: the message says what and how."""


def for_command_line(message: str, flags: Mapping[str, str]) -> str:
    """``message`` with each parameter named in backquotes replaced by its command-line flag (``flags``: parameter
    → flag, e.g. ``{"kernel_size": "--kernel-size"}``); a name without a flag keeps its quotes."""
    return re.sub(r"`([A-Za-z_][A-Za-z0-9_]*)`", lambda m: flags.get(m.group(1), m.group(0)), message)
