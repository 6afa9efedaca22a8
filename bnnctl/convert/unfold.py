"""Integer model -> float parameters: the inverse of quantize.build_network.

A parameter folder holds sign-folded weights and integer thresholds (spec §3.2, §3.3); this
turns them back into Lasagne-shaped float parameters (W, b, beta, gamma, mean, inv_std) whose
float graph makes exactly the hardware's decisions, so that training can start from a
shipped folder (e.g. BNN-PYNQ's cifar10/cnvW1A1) instead of random weights. Converting the
result again gives the same integer model (tests/test_unfold.py).

Per row, the float graph fires step k when the layer's float accumulator x exceeds u_k, with
x in the units the trained network computes in:
* fix8 (CNV layer 0): x = sum(w * q/128); the board fires when T < 2*acc, acc = 128*x.
* xnor: x = sum(w * a) with a = +-1 (the dot product); the board's popcount is (x + n) / 2.
* int2, bipolar: x = the signed sum; padded columns that count as -1 were cancelled by the
  converter's offset (spec §3.3 step 1), which is added back here.
u_k sits half an accumulator step above the board's threshold, where no accumulator can land,
so the strict hardware test and the float quantiser's `>=` can never disagree. The batch-norm
is y = gamma * (x - mean) with inv_std = 1 and beta = 0; A2 layers get the slope that puts
the quantiser's steps -0.5 / +0.5 at u_0 / u_1.
"""

from __future__ import annotations

import numpy as np

from bnnctl.convert.archive import LayerParams, matrix_to_lasagne
from bnnctl.convert.quantize import offset_columns, threshold_scale
from bnnctl.errors import DataError
from bnnctl.model import BinarizedLayer, BinarizedNetwork
from bnnctl.topology import LayerSpec


def switch_points(layer: LayerSpec, thresholds: np.ndarray) -> np.ndarray:
    """u_k per row and step (float64): where the float accumulator makes the board fire."""
    t = thresholds.astype(np.float64)
    scale = threshold_scale(layer)
    if layer.input == "fix8":
        return (t + scale * offset_columns(layer) + 0.5) / scale
    if layer.input == "xnor":
        # dot = 2*popcount - n has the parity of n, so 2T - n +- 0.5 are both exact switch
        # points. The side is chosen so that the converter's truncation toward zero gives T
        # back: floor(2T - n + 0.5) halves to T for T >= 0, 2T - n - 0.5 does for T < 0.
        return 2 * t - layer.fan_in + np.where(t >= 0, 0.5, -0.5)
    return t + offset_columns(layer) + 0.5


def _unfold_layer(layer: LayerSpec, stored: BinarizedLayer, rows: int) -> LayerParams:
    weights = stored.weights[:rows, :layer.fan_in].astype(np.float64)
    if layer.weight_bits == 2 and weights.min() < -1:
        raise DataError(f"layer {layer.index}: has 2-bit weights of -2, which training cannot represent "
                        "(its weights are -1, 0, +1)")
    w = np.ascontiguousarray(matrix_to_lasagne(layer, weights), dtype=np.float32)
    zeros = np.zeros(rows, np.float32)
    if not layer.thresholds:
        # CNV score layer: the board ranks raw accumulators, any increasing map of them will do.
        one, zero = np.float32(1.0), np.float32(0.0)
        return LayerParams(weight=w, bias=None, beta=zero, gamma=one, mean=zero, inv_std=one)
    u = switch_points(layer, stored.hardware_thresholds()[:rows])
    if layer.activation_bits == 1:
        mean, gamma = u[:, 0], np.ones(rows)
    else:
        spread = u[:, 1] - u[:, 0]
        if np.any(spread < 0):
            row = int(np.argmax(spread < 0))
            raise DataError(f"layer {layer.index}: row {row} has its thresholds in decreasing order "
                            f"({stored.thresholds[row].tolist()}); no batch-norm produces that")
        # Equal thresholds (the row jumps from -1 to +1): a spread of half a step keeps both
        # switch points between the same two accumulator values.
        spread = np.maximum(spread, 0.5 / threshold_scale(layer))
        mean, gamma = (u[:, 0] + u[:, 1]) / 2, 1 / spread
    f32 = lambda a: np.asarray(a, dtype=np.float32)  # noqa: E731 - the archive's dtype
    return LayerParams(weight=w, bias=zeros, beta=zeros.copy(), gamma=f32(gamma), mean=f32(mean),
                       inv_std=np.ones(rows, np.float32))


def unfold_network(network: BinarizedNetwork) -> list[LayerParams]:
    """Float parameters of every layer, in archive order; the output layer has num_classes rows."""
    params = []
    for layer, stored in zip(network.spec.layers, network.layers):
        rows = network.num_classes if layer.output else layer.rows
        params.append(_unfold_layer(layer, stored, rows))
    return params
