"""The errors a user can cause and fix (floor 0): one family, so that a bug is never mistaken for one.

Every error that pdeconv raises because of what it was asked — a bad argument, a missing or malformed file, a
setting that cannot work here — is a :class:`PdeconvError`, worded in Python terms (parameter names), saying what
was wrong and what to do. The command line (:mod:`pdeconv.cli`) prints such an error as one line and exits with
status 2, naming command-line flags where the message names parameters; it lets every other exception (a bug:
``ValueError: too many values to unpack``, a ``TypeError``, ...) show its traceback.

:class:`PdeconvError` is a ``ValueError``, so code that catches ``ValueError`` around pdeconv calls keeps working.
File-system errors stay Python's own (``FileNotFoundError``, ``PermissionError``: ``OSError``), which the command
line also prints as one line.
"""

from __future__ import annotations

__all__ = ["PdeconvError"]


class PdeconvError(ValueError):
    """An error in what pdeconv was asked to do, which the caller can fix: the message says what and how."""
