"""Every file pdeconv writes, written atomically, and the checkpoints it reads back (floor 0).

Writes go to a temp file in the same folder, are flushed to disk and renamed into place, so a reader never finds
half a file: text (:func:`write_text`), CSV through the csv module (:func:`write_csv`), figures
(:func:`write_figure`) and checkpoints (:func:`save`). Everything a checkpoint stores is a tensor, dict, list,
tuple, str, int, float, bool or None, so :func:`load` reads it with ``torch.load(..., weights_only=True)`` and a
file can never run code when loaded.
"""

from __future__ import annotations

import os
import random
import uuid
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from pdeconv.errors import PdeconvError

FORMAT = "pdeconv-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(PdeconvError):
    """A checkpoint that cannot be used; the message is one line. ``kind`` says why: ``damaged`` (a truncated or
    corrupt archive), ``objects`` (pickled Python objects, refused: loading them could run code), ``foreign``
    (not a PyTorch file at all), ``state_dict`` (tensors, but not a pdeconv run's checkpoint), ``newer``."""

    def __init__(self, message: str, kind: str = "foreign") -> None:
        super().__init__(message)
        self.kind = kind


def read_tensors(path: str | os.PathLike) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU with one-line errors that say what the file is.

    Never runs code from the file, and never suggests ``weights_only=False``.
    """
    import zipfile

    path = Path(path)
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols of files it then refuses anyway
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:  # torch raises many kinds (UnpicklingError, RuntimeError, KeyError, EOFError, ...)
        text = str(e)
    with open(path, "rb") as f:
        head = f.read(4)
    if head == b"PK\x03\x04" and not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path}: a damaged PyTorch file (a truncated archive); copy it again", "damaged") \
            from None
    if zipfile.is_zipfile(path):
        if "Weights only load failed" in text:
            raise CheckpointError(
                f"{path}: holds pickled Python objects (a whole model saved with torch.save(model)?), which pdeconv "
                "does not load: loading them could run code from the file",
                "objects",
            ) from None
        raise CheckpointError(f"{path}: a damaged PyTorch file (truncated or corrupt archive); copy it again",
                              "damaged") from None
    if head[:1] == b"\x80":  # the PROTO opcode a pickle (and PyTorch's legacy format) starts with
        raise CheckpointError(
            f"{path}: a pickle of Python objects, not a PyTorch checkpoint of tensors; pdeconv does not load it "
            "(loading it could run code from the file)", "objects",
        ) from None
    raise CheckpointError(f"{path}: not a PyTorch checkpoint (neither a zip archive nor a pickle)", "foreign") \
        from None


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> None:
    """Call ``write(f)`` on a temp file next to ``path``, fsync it, then rename it over ``path``.

    Readers see the old file or the new one, never half of one; on any error the temp file is removed
    and an OSError naming ``path`` is raised (the old file is untouched).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "xb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise OSError(e.errno, f"could not write {path}: {e.strerror or e}") from e
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (POSIX); some platforms cannot open folders, which is fine."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Atomically replace the text file ``path``."""
    atomic_write(path, lambda f: f.write(text.encode()))


def write_csv(path: str | os.PathLike, header: Sequence[str],
              rows: Iterable[Sequence[Any] | Mapping[str, Any]]) -> None:
    """Atomically write a CSV file through the csv module (fields with commas or quotes are quoted): ``header``,
    then ``rows`` as sequences in the header's order or as mappings keyed by it."""
    import csv
    import io

    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([row.get(k) for k in header] if isinstance(row, Mapping) else row)
    write_text(path, text.getvalue())


def write_figure(path: str | os.PathLike, fig: Any, dpi: int = 110) -> None:
    """Atomically write the matplotlib figure ``fig`` to ``path``, in the format its suffix names (PNG without
    one): a reader never finds half an image, and a failed drawing leaves the old file or none."""
    kind = Path(path).suffix.lstrip(".").lower() or "png"
    atomic_write(path, lambda f: fig.savefig(f, format=kind, dpi=dpi))


def save(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Atomically write ``state`` (weights_only-compatible contents) as a pdeconv checkpoint."""
    atomic_write(path, lambda f: torch.save({"format": FORMAT, "format_version": FORMAT_VERSION, **state}, f))


def load(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save`; never executes code from the file.

    CheckpointError (one line, naming the file) for a missing-format, corrupt, truncated or unsafe file.
    """
    path = Path(path)
    state = read_tensors(path)
    if isinstance(state, dict) and state and all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: a state dict (tensors by name), not a pdeconv run's checkpoint", "state_dict")
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a pdeconv checkpoint (no 'format': '{FORMAT}' entry)")
    if state.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {state['format_version']} is newer than this pdeconv",
                              "newer")
    return state


def rng_state() -> dict[str, Any]:
    """The states of python's, numpy's and torch's (CPU and current CUDA device) global RNGs."""
    version, words, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": [version, list(words), gauss],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    version, words, gauss = state["python"]
    random.setstate((version, tuple(words), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
