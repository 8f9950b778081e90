"""Atomic training checkpoints: one file per trial, replaced whole at each epoch's end.

A checkpoint is a plain dict saved with :func:`torch.save` and read back with
``weights_only=True``, so reading one never runs pickled code. It is written to a temporary file
in the same folder and moved over the old one with :func:`os.replace`, so a crash mid-write
leaves the previous checkpoint intact and never a torn file. There is no fsync: the file must
survive a killed process, not a power cut, and an fsync per epoch costs more than a small
model's epoch.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch

from tunesvc._errors import TrainingError

CHECKPOINT_VERSION = 1


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically (temporary file, then :func:`os.replace`)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save({"version": CHECKPOINT_VERSION, **state}, f)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The state saved at ``path``, or ``None`` when there is no file there.

    Tensors come back on the CPU; the caller moves them where they belong.
    """
    source = Path(path)
    if not source.exists():
        return None
    try:
        state = torch.load(source, map_location="cpu", weights_only=True)
    except (OSError, EOFError, RuntimeError, pickle.UnpicklingError) as err:
        raise TrainingError(
            f"checkpoint {source} cannot be read ({_first_line(err)}); "
            "delete it to start the trial over"
        ) from err
    if not isinstance(state, dict) or state.get("version") != CHECKPOINT_VERSION:
        raise TrainingError(
            f"checkpoint {source} is not a tunesvc checkpoint of version {CHECKPOINT_VERSION}; "
            "delete it to start the trial over"
        )
    return state


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
