"""Shared fixtures. Reference data comes from ../shared (or $BNNCTL_SHARED); tests that need it
skip with the reason when it is missing, everything else runs anywhere."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_root() -> Path:
    return Path(os.environ.get("BNNCTL_SHARED", REPO.parent / "shared"))


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        pytest.skip(f"{what} not found at {path} (set BNNCTL_SHARED to the shared/ folder)")
    return path


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return _need(shared_root(), "shared reference folder")


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    return _need(shared_root() / "reference" / "bnn-pynq", "BNN-PYNQ reference files")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return _need(shared_root() / "data", "datasets folder")
