"""The one in-memory model of a binarized network, shared by convert/ and infer/.

Per layer: the integer weight matrix in the hardware's row/column order (rows padded to a
multiple of PE, columns padded to a multiple of SIMD, spec §3.4) and the integer thresholds as
stored in the `.bin` files (int64, spec §3.3). convert/ builds it from an archive or a parameter
folder and writes it back; infer/ runs it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bnnctl.topology import LayerSpec, NetworkSpec


@dataclass
class BinarizedLayer:
    spec: LayerSpec
    # int8 (mh, mw): +1/-1 for 1-bit weights, -2..+1 for 2-bit weights (two's complement lanes).
    weights: np.ndarray
    # int64 (mh, thresholds) exactly as in the files, or None for the CNV score layer.
    thresholds: np.ndarray | None

    def hardware_thresholds(self) -> np.ndarray | None:
        """Thresholds as the accelerator holds them: it keeps only the low 16 bits (24 for CNV
        layer 0, which has 8 fractional bits), spec §3.3 and §3.9 (legacy 65535 reads as -1)."""
        if self.thresholds is None:
            return None
        bits = 24 if self.spec.input == "fix8" else 16
        t = self.thresholds & ((1 << bits) - 1)
        return np.where(t >= (1 << (bits - 1)), t - (1 << bits), t)


@dataclass
class BinarizedNetwork:
    spec: NetworkSpec
    layers: list[BinarizedLayer]
    classes: list[str] = field(default_factory=list)
    # Line ending of classes.txt; kept from a folder that was read so a rewrite is byte-identical.
    classes_newline: str = "\n"

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def num_classes(self) -> int:
        return len(self.classes)
