"""Hardware-exact error of a trained archive: convert it like `bnnctl binarize` does and run the
bit-exact integer engine on raw pixels, with the board's class decision (spec §3, §4).

The rule is the one of the board's test-set calls (`classify_cifars` / `classify_mnists`, the
"multiple" rule of spec §4.4), which is how BNN-PYNQ measured its published accuracies.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bnnctl.topology import NetworkSpec

RULE = "multiple"


@dataclass
class HardwareResult:
    error: float  # fraction
    errors: int
    count: int
    rule: str
    engine: str


def hardware_error(npz: Path, spec: NetworkSpec, classes: list[str], pixels: np.ndarray,
                   labels: np.ndarray) -> HardwareResult:
    from bnnctl.convert.quantize import binarize_archive
    from bnnctl.infer.evaluate import evaluate

    ev = evaluate(binarize_archive(npz, spec, classes), pixels, labels, rule=RULE)
    return HardwareResult(error=ev.errors / max(ev.count, 1), errors=ev.errors, count=ev.count,
                          rule=ev.classification.rule, engine=ev.classification.engine)
