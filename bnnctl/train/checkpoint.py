"""Checkpoints written atomically after every epoch, so Ctrl-C or a crash never corrupts one.

A checkpoint holds everything `--resume` needs to continue bit-for-bit: model, optimizer and
scheduler state, the number of completed epochs, the best epoch's weights and the history. The
random streams need no saving: every epoch reseeds its own generators from (seed, epoch) (see
trainer.epoch_generators), so a resumed epoch draws exactly the numbers the uninterrupted run
would have drawn. The global torch/numpy RNG states are stored anyway for inspection.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from bnnctl.errors import BnnctlError
from bnnctl.fsutil import atomic_write_bytes

CHECKPOINT_NAME = "checkpoint.pt"
FORMAT = 1


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, "torch_rng": torch.get_rng_state(), **state}, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise BnnctlError(f"{path}: no checkpoint to resume from (was the run started with this --out?)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many kinds for a damaged file
        raise BnnctlError(f"{path}: checkpoint is unreadable ({type(exc).__name__}); start a new run") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise BnnctlError(f"{path}: not a bnnctl training checkpoint of this version")
    return state
