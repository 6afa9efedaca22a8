"""Pixels in, classes out: encode for the network, run an engine, apply the board's rule, time it."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from bnnctl.infer.engines import get_engine
from bnnctl.infer.preprocess import binarize_lfc, quantize_cnv
from bnnctl.infer.rules import decide
from bnnctl.infer.timing import Timing
from bnnctl.model import BinarizedNetwork


@dataclass
class Classification:
    classes: np.ndarray  # int64 (N,)
    outputs: np.ndarray  # CNV: int16 scores (N, n_classes); LFC: uint64 output words (N,)
    timing: Timing
    engine: str
    rule: str


def encode_inputs(model: BinarizedNetwork, pixels: np.ndarray) -> np.ndarray:
    """uint8 pixels -> what the accelerator's first layer reads (spec §4.1, §4.2)."""
    return quantize_cnv(pixels) if model.spec.is_cnv else binarize_lfc(pixels)


def pick_rule(rule: str, count: int) -> str:
    """'auto' mirrors the board call one would make: one image -> single rule, several -> multiple."""
    if rule == "auto":
        return "single" if count == 1 else "multiple"
    return rule


def classify_pixels(model: BinarizedNetwork, pixels: np.ndarray, rule: str = "auto",
                    engine: str = "auto") -> Classification:
    engine_name, run = get_engine(engine)
    rule = pick_rule(rule, len(pixels))
    encoded = encode_inputs(model, pixels)
    start = time.perf_counter()
    outputs = run(model, encoded)
    usec = (time.perf_counter() - start) * 1e6
    classes = decide(model.spec.is_cnv, outputs, model.num_classes, rule)
    if model.spec.is_cnv:
        outputs = outputs[:, :model.num_classes]
    return Classification(classes=classes, outputs=outputs, timing=Timing.from_duration(usec, len(pixels)),
                          engine=engine_name, rule=rule)
