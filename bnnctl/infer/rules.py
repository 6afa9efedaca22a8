"""The board's class decisions (spec §4.4), single-image and multi-image rules.

The board uses the single rule for `classify_image`/`classify_cifar`/`classify_mnist` and the
multiple rule for `classify_images`/`classify_cifars`/`classify_mnists`; they can disagree, so
both are kept and the caller says which one it reproduces.
"""

from __future__ import annotations

import numpy as np

RULES = ("single", "multiple")


def cnv_single(scores: np.ndarray) -> np.ndarray:
    """First index of the maximum, negative scores allowed."""
    return np.argmax(scores, axis=-1)


def cnv_multiple(scores: np.ndarray) -> np.ndarray:
    """Running maximum that starts at 0 with a strict '>': class 0 unless some score is > 0."""
    best = np.argmax(scores, axis=-1)
    top = np.take_along_axis(scores, best[..., None], axis=-1)[..., 0]
    return np.where(top > 0, best, 0)


def _masked(words: np.ndarray, num_classes: int) -> np.ndarray:
    mask = np.uint64((1 << num_classes) - 1) if num_classes < 64 else np.uint64(2**64 - 1)
    return np.asarray(words, dtype=np.uint64) & mask


def lfc_single(words: np.ndarray, num_classes: int) -> np.ndarray:
    """round(log2 v) of the masked output word, 0 when no bit is set."""
    v = _masked(words, num_classes)
    with np.errstate(divide="ignore"):
        log = np.log2(v.astype(np.float64))
    # log2 of an integer >= 1 is never exactly x.5, so halves-away-from-zero is floor(x + 0.5)
    return np.where(v == 0, 0, np.floor(log + 0.5)).astype(np.int64)


def lfc_multiple(words: np.ndarray, num_classes: int) -> np.ndarray:
    """Index of the highest set bit of the masked output word, 0 when no bit is set."""
    v = _masked(words, num_classes)
    out = np.zeros(v.shape, dtype=np.int64)
    for bit in range(num_classes):  # highest set bit wins: later bits overwrite
        out = np.where((v >> np.uint64(bit)) & np.uint64(1), bit, out)
    return out


def decide(is_cnv: bool, outputs: np.ndarray, num_classes: int, rule: str) -> np.ndarray:
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}")
    if is_cnv:
        scores = outputs[:, :num_classes].astype(np.int32)
        return cnv_single(scores) if rule == "single" else cnv_multiple(scores)
    return lfc_single(outputs, num_classes) if rule == "single" else lfc_multiple(outputs, num_classes)
