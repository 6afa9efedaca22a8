"""Readable, bit-exact integer inference in plain numpy (spec §4.3): the reference engine.

Every sum is an integer of at most a few thousand, so float32 matrix products (fast BLAS) are
exact; results are cast back to integers before any comparison. The fast compiled engine is
tested against this one.

Activations between layers are pixel-major with the channel fastest (spec §4.3), held as
0/1 bits for 1-bit layers and as -1/0/+1 for 2-bit layers.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from bnnctl.model import BinarizedLayer, BinarizedNetwork

CHUNK_IMAGES = 64  # bounds the im2col buffers (~120 MB for CNV)


def _im2col(x: np.ndarray, k: int) -> np.ndarray:
    """(N, H, W, C) -> (N, P, k*k*C) with columns in (ky, kx, c) order, c fastest (spec §3.4)."""
    n, h, w, c = x.shape
    windows = sliding_window_view(x, (k, k), axis=(1, 2))  # (N, oh, ow, C, ky, kx)
    return windows.transpose(0, 1, 2, 4, 5, 3).reshape(n, (h - k + 1) * (w - k + 1), k * k * c)


def _operand(layer: BinarizedLayer, x: np.ndarray) -> np.ndarray:
    """The layer's input as the values its multiply sees, padded to MW columns."""
    spec = layer.spec
    if spec.input in ("xnor", "bipolar"):
        values = 2.0 * x.astype(np.float32) - 1.0  # bit 0 is -1 (padding bits too)
        pad_value = -1.0
    else:  # fix8 codes or int2 levels
        values = x.astype(np.float32)
        pad_value = 0.0
    if values.shape[-1] < spec.mw:
        pad = [(0, 0)] * (values.ndim - 1) + [(0, spec.mw - values.shape[-1])]
        values = np.pad(values, pad, constant_values=pad_value)
    return values


def accumulate(layer: BinarizedLayer, x: np.ndarray) -> np.ndarray:
    """Integer accumulators (..., MH) of spec §3.1 for input rows x (..., fan_in)."""
    spec = layer.spec
    dot = _operand(layer, x) @ layer.weights.T.astype(np.float32)
    acc = np.rint(dot).astype(np.int64)
    if spec.input == "xnor":
        # number of agreeing positions; padded columns (input -1, weight +1) never agree
        acc = (acc + spec.mw) // 2
    return acc


def activate(layer: BinarizedLayer, acc: np.ndarray) -> np.ndarray:
    """Strict `T < acc` comparisons (spec §3.1); CNV layer 0 compares T_raw < 2*acc."""
    thresholds = layer.hardware_thresholds()
    if layer.spec.input == "fix8":
        acc = 2 * acc
    rows = acc.shape[-1]
    fired = thresholds[:rows] < acc[..., None]  # (..., rows, API)
    if layer.spec.thresholds == 1:
        return fired[..., 0].astype(np.int8)
    return (fired.sum(axis=-1) - 1).astype(np.int8)


def run_layer(layer: BinarizedLayer, x: np.ndarray) -> np.ndarray:
    spec = layer.spec
    if spec.kind == "conv":
        n = x.shape[0]
        cols = _im2col(x, spec.kernel)
        acc = accumulate(layer, cols)[..., :spec.rows]
    else:
        acc = accumulate(layer, x.reshape(x.shape[0], -1))
    if not spec.thresholds:
        # CNV score layer: 16-bit accumulators read back as int16 (spec §4.3)
        return ((acc + 2**15) % 2**16 - 2**15).astype(np.int16)
    out = activate(layer, acc)
    if spec.kind == "conv":
        d = spec.out_dim
        out = out.reshape(n, d, d, -1)
        if spec.pool:
            # 2x2/2 max pool after thresholding: OR for bits, signed max for 2-bit (spec §4.3)
            out = out.reshape(n, d // 2, 2, d // 2, 2, -1).max(axis=(2, 4))
    return out


def forward(model: BinarizedNetwork, x: np.ndarray, keep: bool = False):
    """Run the whole network on encoded inputs; with keep=True also return every layer's output."""
    outputs = []
    for layer in model.layers:
        x = run_layer(layer, x)
        if keep:
            outputs.append(x)
    return (x, outputs) if keep else x


def output_words(bits: np.ndarray) -> np.ndarray:
    """LFC: the 64 thresholded output bits of an image as one word, bit j = row j (spec §4.3)."""
    weights = np.uint64(1) << np.arange(bits.shape[-1], dtype=np.uint64)
    return (bits.astype(np.uint64) * weights).sum(axis=-1, dtype=np.uint64)


def run_network(model: BinarizedNetwork, inputs: np.ndarray) -> np.ndarray:
    """Encoded inputs -> raw network outputs.

    CNV: inputs int8 (N, 32, 32, 3) fix8 codes; returns int16 scores (N, 64) (rows past the
    class count are padding). LFC: inputs uint8 (N, 832) bits; returns uint64 words (N,).
    """
    results = []
    for start in range(0, len(inputs), CHUNK_IMAGES):
        out = forward(model, inputs[start:start + CHUNK_IMAGES])
        results.append(out if model.spec.is_cnv else output_words(out))
    if not results:
        return np.zeros((0, 64), np.int16) if model.spec.is_cnv else np.zeros(0, np.uint64)
    return np.concatenate(results)
