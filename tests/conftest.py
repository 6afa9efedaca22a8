"""Shared pytest fixtures: where the shared test data lives (skip cleanly when it is absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def _shared_root() -> Path:
    # The shared/ folder sits next to the repository checkout unless BNNCTL_SHARED says otherwise.
    env = os.environ.get("BNNCTL_SHARED")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared"


def _require(path: Path, what: str) -> Path:
    if not path.is_dir():
        pytest.skip(f"{what} not found at {path} (set BNNCTL_SHARED to the shared/ folder)")
    return path


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return _require(_shared_root(), "shared test data")


@pytest.fixture(scope="session")
def data_dir(shared_dir: Path) -> Path:
    return _require(shared_dir / "data", "shared datasets")


@pytest.fixture(scope="session")
def reference_dir(shared_dir: Path) -> Path:
    return _require(shared_dir / "reference" / "bnn-pynq", "BNN-PYNQ reference files")
