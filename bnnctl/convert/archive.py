"""Read and validate a trained archive in the Lasagne `.npz` layout (spec §2.1, §2.2).

The archive is a flat list `arr_0 … arr_N` of every parameter of the Lasagne graph in layer
order. We check the count and every shape against the network's topology before anything is
converted, so that a wrong archive fails with the array's name and the expected shape.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bnnctl.errors import BnnctlError, DataError
from bnnctl.topology import LayerSpec, NetworkSpec

BN_PARTS = ("beta", "gamma", "mean", "inv_std")


@dataclass
class LayerParams:
    """Float parameters of one trained layer, in Lasagne's own shapes."""

    weight: np.ndarray  # conv (out, in, k, k); dense (n_in, n_out)
    bias: np.ndarray | None  # (rows,) or None (CNV output layer has no bias, spec §2.1)
    beta: np.ndarray  # per row, or shape () for the CNV output layer's scalar batch-norm
    gamma: np.ndarray
    mean: np.ndarray
    inv_std: np.ndarray


def expected_layout(spec: NetworkSpec, num_classes: int) -> list[tuple[str, tuple[int, ...]]]:
    """(description, shape) of every array in order, e.g. ('conv 2 W', (128, 64, 3, 3))."""
    layout = []
    for layer in spec.layers:
        rows = num_classes if layer.output else layer.rows
        where = f"{layer.kind} {layer.index}"
        if layer.kind == "conv":
            layout.append((f"{where} W", (layer.out_channels, layer.in_channels, layer.kernel, layer.kernel)))
        else:
            layout.append((f"{where} W", (layer.in_features, rows)))
        # The CNV output layer has no bias and a batch-norm over both axes with scalar
        # parameters (spec §2.1 arr_48..arr_52).
        scalar_bn = layer.output and layer.thresholds == 0
        if not scalar_bn:
            layout.append((f"{where} b", (rows,)))
        for part in BN_PARTS:
            layout.append((f"{where} {part}", () if scalar_bn else (rows,)))
    return layout


def _load_arrays(path: Path) -> list[np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            names = list(archive.files)
            if not all(n.startswith("arr_") and n[4:].isdigit() for n in names):
                raise DataError(f"{path}: not a Lasagne-layout archive (expected arrays arr_0, arr_1, ...; found {names[:3]}...)")
            count = len(names)
            missing = [f"arr_{i}" for i in range(count) if f"arr_{i}" not in names]
            if missing:
                raise DataError(f"{path}: array {missing[0]} is missing (arrays must be arr_0 … arr_{count - 1})")
            return [np.asarray(archive[f"arr_{i}"]) for i in range(count)]
    except FileNotFoundError:
        raise BnnctlError(f"{path}: no such archive") from None
    except IsADirectoryError:
        raise BnnctlError(f"{path}: is a folder, expected a .npz archive") from None
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npz archive ({exc})") from None


def read_archive(path: str | Path, spec: NetworkSpec) -> tuple[list[LayerParams], int]:
    """Load and validate; returns per-layer parameters and the number of classes."""
    path = Path(path)
    arrays = _load_arrays(path)
    per_layer = 6 * len(spec.layers) - (1 if spec.is_cnv else 0)
    if len(arrays) != per_layer:
        kind = spec.topology.upper()
        raise DataError(f"{path}: has {len(arrays)} arrays, a {kind} archive has {per_layer} (is --network {spec.name} right?)")
    out_weight_index = per_layer - (5 if spec.is_cnv else 6)
    out_weight = arrays[out_weight_index]
    if out_weight.ndim != 2:
        raise DataError(f"{path}: arr_{out_weight_index} has shape {out_weight.shape}, expected (n_in, n_classes)")
    num_classes = int(out_weight.shape[1])
    if not 1 <= num_classes <= spec.max_classes:
        raise DataError(f"{path}: arr_{out_weight_index} has {num_classes} outputs; the overlays support 1..{spec.max_classes} classes")
    layout = expected_layout(spec, num_classes)
    for i, ((what, shape), array) in enumerate(zip(layout, arrays)):
        if array.shape != shape:
            raise DataError(f"{path}: arr_{i} ({what}) has shape {array.shape}, expected {shape}")
        if not np.issubdtype(array.dtype, np.floating) and not np.issubdtype(array.dtype, np.integer):
            raise DataError(f"{path}: arr_{i} ({what}) has dtype {array.dtype}, expected float32")
        if not np.all(np.isfinite(array)):
            raise DataError(f"{path}: arr_{i} ({what}) contains NaN or infinity")
        if what.endswith(" gamma") and np.any(array == 0):
            # spec §3.2: gamma = 0 makes the sign fold 0 and the threshold a division by zero.
            raise DataError(f"{path}: arr_{i} ({what}) contains 0; batch-norm gamma must be non-zero")
    params = []
    cursor = 0
    for layer in spec.layers:
        weight = arrays[cursor]
        cursor += 1
        bias = None
        if not (layer.output and layer.thresholds == 0):
            bias = arrays[cursor]
            cursor += 1
        beta, gamma, mean, inv_std = arrays[cursor:cursor + 4]
        cursor += 4
        params.append(LayerParams(weight, bias, beta, gamma, mean, inv_std))
    return params, num_classes


def lasagne_to_matrix(layer: LayerSpec, weight: np.ndarray) -> np.ndarray:
    """Lasagne weights -> (rows, fan_in) in the hardware's column order (spec §3.4).

    Conv: W[o, c, ky, kx] goes to column (ky*k + kx)*C + c. Dense: W is (n_in, n_out), so
    transpose. The (c, pixel) -> (pixel, c) permutation of the first dense layer after the
    convolutions is the identity for CNV, whose last conv output is 1x1.
    """
    if layer.kind == "conv":
        return weight.transpose(0, 2, 3, 1).reshape(weight.shape[0], -1)
    return weight.T


def matrix_to_lasagne(layer: LayerSpec, matrix: np.ndarray) -> np.ndarray:
    """The inverse of `lasagne_to_matrix`: (rows, fan_in) in the hardware's column order ->
    conv (out, in, k, k) from columns (ky*k + kx)*C + c; dense (n_in, n_out)."""
    if layer.kind == "conv":
        k, c = layer.kernel, layer.in_channels
        return matrix.reshape(matrix.shape[0], k, k, c).transpose(0, 3, 1, 2)
    return matrix.T
