"""Model -> the exact Lasagne `.npz` layout the BNN-PYNQ converter reads (spec §2.1, §2.2).

Per layer, in archive order: W, b (absent for CNV dense 8), beta, gamma, mean, inv_std; all
float32, written with `numpy.savez(path, *arrays)` so the keys are arr_0, arr_1, ...

Choices (all layout-neutral):
* W holds the *quantised* weights (+-1, or -1/0/+1 for 2-bit), not the latent ones. The
  converter re-quantises after flipping rows by sign(gamma) (spec §3.2); a latent weight of
  exactly 0 (1-bit) or +-0.5 (2-bit) would then round the other way on flipped rows. Quantised
  values are fixed points of both quantisers, so export and training can never disagree, and
  any float reader that quantises again gets the same network.
* b is zeros: the layers train without bias (see layers.py).
* inv_std = 1/sqrt(running_var + 1e-4), computed in float64, exactly the factor the torch
  eval-mode batch-norm applies.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch

from bnnctl.fsutil import atomic_write_bytes
from bnnctl.train.layers import BN_EPS, ScalarBatchNorm, ScaleOnlyNorm
from bnnctl.train.models import BnnModel
from bnnctl.train.quant import quantize


def _bn_arrays(bn: torch.nn.Module) -> list[np.ndarray]:
    if isinstance(bn, ScaleOnlyNorm):
        gamma = bn.weight.detach().double().cpu().numpy()
        inv_std = 1.0 / np.sqrt(bn.running_var.detach().double().cpu().numpy() + BN_EPS)
        return [np.asarray(v, dtype=np.float32).reshape(()) for v in (0.0, gamma, 0.0, inv_std)]
    scalar = isinstance(bn, ScalarBatchNorm)
    if scalar:
        bn = bn.bn
    var = bn.running_var.detach().double().cpu().numpy()
    values = [
        bn.bias.detach().double().cpu().numpy(),  # beta
        bn.weight.detach().double().cpu().numpy(),  # gamma
        bn.running_mean.detach().double().cpu().numpy(),  # mean
        1.0 / np.sqrt(var + BN_EPS),  # inv_std
    ]
    # The CNV output BN normalises over both axes in Lasagne: its parameters are 0-d (§2.1).
    return [np.asarray(v.reshape(()) if scalar else v, dtype=np.float32) for v in values]


def archive_arrays(model: BnnModel) -> list[np.ndarray]:
    """All parameters in Lasagne order (spec §2.1 / §2.2)."""
    arrays: list[np.ndarray] = []
    for block in model.blocks:
        layer = block.linear
        w = quantize(layer.weight.detach().cpu().float(), layer.weight_bits).numpy()
        if block.spec.kind == "dense":
            w = w.T  # Lasagne DenseLayer W is (n_in, n_out): inputs along rows
        arrays.append(np.ascontiguousarray(w, dtype=np.float32))
        # CNV dense 8 was created without bias (spec §2.1); every other layer has b.
        if not (model.network.is_cnv and block.output):
            arrays.append(np.zeros(w.shape[0] if block.spec.kind == "conv" else w.shape[1], np.float32))
        arrays.extend(_bn_arrays(block.bn))
    return arrays


def expected_layout(network_is_cnv: bool, layers, num_classes: int) -> list[tuple[int, ...]]:
    """Shapes of every array of the archive in order, straight from spec §2.1 / §2.2."""
    shapes: list[tuple[int, ...]] = []
    last = len(layers) - 1
    for layer in layers:
        rows = num_classes if layer.index == last else layer.rows
        if layer.kind == "conv":
            shapes.append((rows, layer.in_channels, layer.kernel, layer.kernel))
        else:
            shapes.append((layer.in_features, rows))
        if network_is_cnv and layer.index == last:
            shapes.extend([()] * 4)  # no bias; scalar BN
        else:
            shapes.extend([(rows,)] * 5)
    return shapes


def save_archive(model: BnnModel, path: str | Path) -> list[np.ndarray]:
    """Write the archive atomically (a crash or Ctrl-C never leaves half an .npz)."""
    arrays = archive_arrays(model)
    shapes = expected_layout(model.network.is_cnv, model.network.layers, model.num_classes)
    got = [a.shape for a in arrays]
    if got != shapes:  # a programming error, not a user error: fail loudly
        raise AssertionError(f"archive layout mismatch: {got} != {shapes}")
    buffer = io.BytesIO()
    np.savez(buffer, *arrays)
    atomic_write_bytes(path, buffer.getvalue())
    return arrays
