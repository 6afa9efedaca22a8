"""The workspace state file that lets bare commands chain (train -> binarize -> deploy -> infer).

Each command records what it produced in `.bnnctl-state.json` in the current directory; the
next command takes its defaults from there. Explicit arguments always win. Paths are stored
absolute so the state still works from another shell.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from bnnctl.errors import BnnctlError
from bnnctl.fsutil import atomic_write_text

STATE_FILE = ".bnnctl-state.json"

# What each key means; `bnnctl status` prints them in this order.
KEYS = {
    "dataset": "dataset of the last training run",
    "run_dir": "folder of the last training run",
    "npz": "trained archive (Lasagne layout) from the last run",
    "network": "network of the last command (cnvW1A1, lfcW1A1, ...)",
    "classes": "class names of the last run / conversion",
    "params": "parameter folder written by the last binarize",
    "params_name": "dataset name the params are deployed under (bnn/params/<name>/<network>)",
    "board": "board profile of the last deploy",
    "deployed": "what the last deploy put on the board",
}


def state_path(directory: str | os.PathLike | None = None) -> Path:
    return Path(directory or os.getcwd()) / STATE_FILE


def load_state(directory: str | os.PathLike | None = None) -> dict[str, Any]:
    path = state_path(directory)
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BnnctlError(f"{path}: workspace state is unreadable ({exc}); delete it to start afresh") from None
    if not isinstance(data, dict):
        raise BnnctlError(f"{path}: workspace state is not a JSON object; delete it to start afresh")
    return data


def update_state(directory: str | os.PathLike | None = None, **fields: Any) -> dict[str, Any]:
    unknown = set(fields) - set(KEYS)
    if unknown:
        raise ValueError(f"unknown state keys {sorted(unknown)}")
    state = load_state(directory)
    for key, value in fields.items():
        state[key] = str(Path(value).resolve()) if isinstance(value, Path) else value
    state["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    atomic_write_text(state_path(directory), json.dumps(state, indent=2) + "\n")
    return state
