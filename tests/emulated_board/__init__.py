"""EMULATED BOARD for bnnctl's tests -- NOT HARDWARE.

Builds a temporary folder laid out like a PYNQ image's site-packages with the BNN-PYNQ package
(spec bnn-pynq-format.md §5): bnn/bitstreams/<platform>/<network>-<platform>.{bit,hwh,tcl},
bnn/libraries/<platform>/<runtime>-<network>-<platform>.so, bnn/params/<dataset>/<network>/, and
a test double of `bnn` itself (package/bnn) whose results come from bnnctl's own numpy engine.
The "bitstreams" and "libraries" are placeholder files that say so. The tests reach this
folder over a real SSH connection (tests/sshd.py), exactly as bnnctl reaches a real board.

It lives under tests/ only and must never be shipped or presented as hardware.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
NETWORKS = ("cnvW1A1", "cnvW1A2", "cnvW2A2", "lfcW1A1", "lfcW1A2")
RUNTIMES = ("python_hw", "python_sw")
PLACEHOLDER = b"EMULATION: placeholder written by bnnctl's tests, not a real %s\n"


@dataclass
class EmulatedBoard:
    """An emulated board's site-packages folder (root) and the settings a profile needs."""

    root: Path
    platform: str = "pynqZ1-Z2"
    with_bnn: bool = True
    engine_python: str = sys.executable
    faults: dict = field(default_factory=dict)

    @property
    def site_packages(self) -> Path:
        return self.root / "site-packages"

    @property
    def bnn_dir(self) -> Path:
        return self.site_packages / "bnn"

    @property
    def params_dir(self) -> Path:
        return self.bnn_dir / "params"

    def build(self, networks=NETWORKS, runtimes=RUNTIMES, mode: int = 0o755) -> "EmulatedBoard":
        self.site_packages.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, mode)
        os.chmod(self.site_packages, mode)
        if not self.with_bnn:
            return self  # a board without BNN-PYNQ installed
        shutil.copytree(HERE / "package" / "bnn", self.bnn_dir, ignore=shutil.ignore_patterns("__pycache__"))
        plat = self.platform
        for net in networks:
            bits = self.bnn_dir / "bitstreams" / plat
            bits.mkdir(parents=True, exist_ok=True)
            for ext in ("bit", "hwh", "tcl"):
                (bits / f"{net}-{plat}.{ext}").write_bytes(PLACEHOLDER % b"bitstream")
            libs = self.bnn_dir / "libraries" / plat
            libs.mkdir(parents=True, exist_ok=True)
            for runtime in runtimes:
                (libs / f"{runtime}-{net}-{plat}.so").write_bytes(PLACEHOLDER % b"shared library")
        self.params_dir.mkdir(parents=True, exist_ok=True)
        self.write_emulation_config()
        for path in [self.bnn_dir, *self.bnn_dir.rglob("*")]:
            os.chmod(path, mode if path.is_dir() else 0o644)
        return self

    def write_emulation_config(self) -> None:
        (self.bnn_dir / "emulation.json").write_text(json.dumps({
            "emulation": "bnnctl test double of BNN-PYNQ's bnn package -- not hardware",
            "engine_python": self.engine_python,
            "engine_script": str(HERE / "engine.py"),
            "faults": self.faults,
        }, indent=2))

    def set_faults(self, **faults) -> None:
        self.faults = dict(faults)
        self.write_emulation_config()

    def add_params(self, dataset: str, network: str, folder: Path) -> Path:
        """Pre-install a parameter folder, as an image ships cifar10/mnist ones."""
        target = self.params_dir / dataset / network
        shutil.copytree(folder, target)
        return target

    def tree(self) -> dict[str, bytes]:
        """Everything under params/ (relative path -> bytes; folders as None) to compare states."""
        out: dict[str, bytes | None] = {}
        for path in sorted(self.params_dir.rglob("*")):
            rel = str(path.relative_to(self.params_dir))
            out[rel] = path.read_bytes() if path.is_file() else None
        return out
