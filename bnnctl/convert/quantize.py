"""Turn trained float parameters into the integer model the overlay runs (spec §3.2-3.4).

This follows the current finnthesizer (the reference converter) bit for bit, including its
known deviations from the float graph (spec §3.7), so that our files are byte-identical to
the reference tool's for the same archive.
"""

from __future__ import annotations

import numpy as np

from bnnctl.convert.archive import LayerParams, lasagne_to_matrix, read_archive
from bnnctl.errors import DataError
from bnnctl.model import BinarizedLayer, BinarizedNetwork
from bnnctl.topology import LayerSpec, NetworkSpec

PADDING_ROW_THRESHOLD = 2**16 - 1  # spec §3.3: padding rows, before offset and saturation
INT16_MIN, INT16_MAX = -(2**15), 2**15 - 1


def threshold_steps(activation_bits: int) -> np.ndarray:
    """Steps where the quantised activation changes level: A1 {0}, A2 {-0.5, +0.5} (spec §3.3)."""
    levels = 2 ** (activation_bits - 1)
    return np.array([-1 + 2 * k / levels + 2.0 ** -1 for k in range(levels)]) if activation_bits > 1 else np.array([0.0])


def threshold_scale(layer: LayerSpec) -> float:
    """Units of one threshold step: CNV layer 0 thresholds carry 8 fraction bits (spec §3.3 F)."""
    return 256.0 if layer.input == "fix8" else 1.0


def offset_columns(layer: LayerSpec) -> int:
    """Padded input columns that count as -1 in the accumulator, subtracted from the thresholds
    (spec §3.3 step 1): every layer with W < 2 except binary-input W1A1 ones (only LFC-W1A2
    layer 0 has any padding there)."""
    binary_xnor = layer.weight_bits == 1 and layer.activation_bits == 1 and layer.input_bits == 1
    return layer.pad_cols if (not binary_xnor and layer.weight_bits < 2) else 0


def quantize_weights(matrix: np.ndarray, sign: np.ndarray, bits: int) -> np.ndarray:
    """Spec §3.2: rows are flipped by sign(gamma) before quantisation."""
    flipped = matrix * sign[:, None]
    if bits == 1:
        # x >= 0 -> +1; NaN and -0.0 also give +1, hence "not negative" rather than ">= 0".
        return np.where(flipped < 0, -1, 1).astype(np.int8)
    codes = np.floor(flipped + 0.5)  # halves up
    if codes.min() < -2 or codes.max() > 1:
        raise DataError(f"2-bit weights must round into [-2, 1]; found {codes.min():.0f}..{codes.max():.0f}")
    return codes.astype(np.int8)


def _round_toward_sign(t: np.ndarray, sign: np.ndarray) -> np.ndarray:
    """R(t) of spec §3.3: floor for rows with s >= 0, ceil for flipped rows."""
    return np.where(sign >= 0, np.floor(t), np.ceil(t))


def fold_thresholds(layer: LayerSpec, p: LayerParams, sign: np.ndarray) -> np.ndarray:
    """Batch-norm + step activation folded into integer thresholds, float64 (spec §3.3)."""
    f64 = lambda a: np.asarray(a, dtype=np.float64)  # noqa: E731 - HEAD computes in float64
    mean, bias, beta, gamma, inv_std = map(f64, (p.mean, p.bias, p.beta, p.gamma, p.inv_std))
    scale = threshold_scale(layer)
    s = sign[:, None]
    steps = threshold_steps(layer.activation_bits)[None, :]
    tau = (mean - bias)[:, None] + (steps - beta[:, None]) / (gamma * inv_std)[:, None]
    t = s * scale * tau
    if layer.input == "xnor" and layer.kind == "conv":
        # popcount = (dot + fanin) / 2; the reference rounds t first, then halves and truncates.
        values = np.trunc((layer.fan_in + _round_toward_sign(t, s)) / 2)
    elif layer.input == "xnor":
        # dense layers with binary input: no floor/ceil before halving (spec §3.3 row 2).
        values = np.trunc((layer.fan_in + t) / 2)
    else:
        values = _round_toward_sign(t, s)
    return values


def build_layer(layer: LayerSpec, p: LayerParams) -> BinarizedLayer:
    matrix = lasagne_to_matrix(layer, np.asarray(p.weight, dtype=np.float64))
    rows = matrix.shape[0]
    if layer.thresholds:
        sign = np.sign(np.asarray(p.gamma, dtype=np.float64))
    else:
        # CNV output layer: flipped by the sign of the scalar gamma of the final batch-norm
        # (current finnthesizer; the 2019 one did not flip, spec §3.8).
        sign = np.full(rows, np.sign(float(p.gamma)))
    weights = quantize_weights(matrix, sign, layer.weight_bits)

    # Pad rows to a multiple of PE and columns to a multiple of SIMD (spec §3.4): +1 for 1-bit
    # weights (transparent to XNOR), 0 for 2-bit.
    pad_value = 1 if layer.weight_bits == 1 else 0
    padded = np.full((layer.mh, layer.mw), pad_value, dtype=np.int8)
    padded[:rows, :matrix.shape[1]] = weights

    thresholds = None
    if layer.thresholds:
        values = np.full((layer.mh, layer.thresholds), float(PADDING_ROW_THRESHOLD))
        values[:rows] = fold_thresholds(layer, p, sign)
        values -= offset_columns(layer) * threshold_scale(layer)
        if layer.input != "fix8":
            values = np.clip(values, INT16_MIN, INT16_MAX)  # saturation, spec §3.3 step 2
        elif np.any(np.abs(values) >= 2**62):
            raise DataError(f"layer {layer.index}: a threshold is out of range (batch-norm gamma or inv_std too small)")
        thresholds = values.astype(np.int64)
    return BinarizedLayer(spec=layer, weights=padded, thresholds=thresholds)


def build_network(spec: NetworkSpec, params: list[LayerParams], classes: list[str]) -> BinarizedNetwork:
    layers = [build_layer(layer, p) for layer, p in zip(spec.layers, params)]
    return BinarizedNetwork(spec=spec, layers=layers, classes=list(classes))


def binarize_archive(path, spec: NetworkSpec, classes: list[str] | None = None) -> BinarizedNetwork:
    """Archive -> integer model. `classes` defaults to '0', '1', ... when not given."""
    params, num_classes = read_archive(path, spec)
    if classes is None:
        classes = [str(i) for i in range(num_classes)]
    if len(classes) != num_classes:
        raise DataError(f"{path}: the archive has {num_classes} outputs but {len(classes)} class names were given")
    return build_network(spec, params, classes)
