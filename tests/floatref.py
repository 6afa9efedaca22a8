"""Test support: synthetic Lasagne-layout archives and an independent float evaluation of them.

The float model follows the BNN-PYNQ *training* graph (spec §2: conv -> [maxpool] -> batch-norm
-> quantiser, NCHW tensors, Lasagne weight shapes) and shares no code with bnnctl's converter
or engines, so agreement between the two is evidence, not a tautology.
"""

from __future__ import annotations

import numpy as np

EPS = 1e-4  # Lasagne BatchNormLayer epsilon (spec §2)

CNV_CHANNELS = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256)]
CNV_POOL = {1, 3}
CNV_DENSE = [(256, 512), (512, 512)]
LFC_DENSE = [(784, 1024), (1024, 1024), (1024, 1024)]


def parse_network(name: str) -> tuple[str, int, int]:
    return name[:3], int(name[4]), int(name[6])


def quant_weights(w: np.ndarray, bits: int) -> np.ndarray:
    if bits == 1:
        return np.where(w >= 0, 1.0, -1.0)
    # hard-tanh then round half away from zero (spec §2.3)
    c = np.clip(w, -1, 1)
    return np.sign(c) * np.floor(np.abs(c) + 0.5)


def quant_act(y: np.ndarray, bits: int) -> np.ndarray:
    if bits == 1:
        return np.where(y >= 0, 1.0, -1.0)
    return -1.0 + (y >= -0.5) + (y >= 0.5)


def conv_valid(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """x (N, C, H, W), w (O, C, 3, 3): cross-correlation, stride 1, no padding."""
    n, c, h, wd = x.shape
    k = w.shape[2]
    out = np.zeros((n, w.shape[0], h - k + 1, wd - k + 1))
    for ky in range(k):
        for kx in range(k):
            patch = x[:, :, ky:ky + h - k + 1, kx:kx + wd - k + 1]
            out += np.einsum("nchw,oc->nohw", patch, w[:, :, ky, kx])
    return out


def maxpool2(x: np.ndarray) -> np.ndarray:
    n, c, h, w = x.shape
    return x.reshape(n, c, h // 2, 2, w // 2, 2).max(axis=(3, 5))


def batchnorm(z, beta, gamma, mean, inv_std, axis=1):
    shape = [1] * z.ndim
    shape[axis] = -1
    r = lambda a: np.asarray(a, dtype=np.float64).reshape(shape) if np.ndim(a) else float(a)  # noqa: E731
    return (z - r(mean)) * r(inv_std) * r(gamma) + r(beta)


def cnv_input(pixels: np.ndarray) -> np.ndarray:
    """uint8 (N, 32, 32, 3) -> the training graph's quantised input q/128, NCHW (spec §2.3)."""
    v = -1.0 + 2.0 * pixels.astype(np.float64) / 255.0
    q = np.floor(np.clip(v, -1, 127 / 128) * 128 + 0.5)
    return (q / 128.0).transpose(0, 3, 1, 2)


def lfc_input(pixels: np.ndarray) -> np.ndarray:
    return np.where(pixels.reshape(len(pixels), -1) >= 128, 1.0, -1.0)


def _layer_shapes(name: str, classes: int):
    topo, _, _ = parse_network(name)
    if topo == "cnv":
        shapes = [("conv", (o, i, 3, 3), o, idx in CNV_POOL) for idx, (i, o) in enumerate(CNV_CHANNELS)]
        shapes += [("dense", (i, o), o, False) for i, o in CNV_DENSE]
        shapes.append(("out", (512, classes), classes, False))
    else:
        shapes = [("dense", (i, o), o, False) for i, o in LFC_DENSE]
        shapes.append(("dense", (1024, classes), classes, False))
    return shapes


def make_archive(name: str, pixels: np.ndarray, classes: int, rng: np.random.Generator,
                 negative_gamma: float = 0.0) -> list[np.ndarray]:
    """Random latent weights in [-1, 1]; batch-norm statistics fitted to the pre-activations of
    `pixels` (realistic thresholds); a fraction of gammas negative."""
    topo, wbits, abits = parse_network(name)
    x = cnv_input(pixels) if topo == "cnv" else lfc_input(pixels)
    arrays: list[np.ndarray] = []
    shapes = _layer_shapes(name, classes)
    for idx, (kind, wshape, rows, pool) in enumerate(shapes):
        w = rng.uniform(-1, 1, wshape).astype(np.float32)
        wq = quant_weights(w.astype(np.float64), wbits)
        if kind == "conv":
            z = conv_valid(x, wq)
            if pool:
                z = maxpool2(z)
            axes = (0, 2, 3)
        else:
            x = x.reshape(len(x), -1)
            z = x @ wq
            axes = (0,)
        last = idx == len(shapes) - 1
        if kind == "out":  # CNV output: no bias, scalar batch-norm over both axes (spec §2.1)
            mean, var = z.mean(), z.var()
            gamma = rng.uniform(0.5, 1.5) * (-1 if rng.random() < negative_gamma else 1)
            arrays += [w, np.float32(rng.uniform(-0.2, 0.2)), np.float32(gamma), np.float32(mean),
                       np.float32(1 / np.sqrt(var + EPS))]
            break
        b = rng.uniform(-2, 2, rows).astype(np.float32)
        zb = z + (b.reshape(1, -1, 1, 1) if kind == "conv" else b)
        mean = zb.mean(axis=axes).astype(np.float32)
        inv_std = (1 / np.sqrt(zb.var(axis=axes) + EPS)).astype(np.float32)
        gamma = rng.uniform(0.5, 1.5, rows)
        gamma[rng.random(rows) < negative_gamma] *= -1
        gamma = gamma.astype(np.float32)
        beta = rng.uniform(-0.3, 0.3, rows).astype(np.float32)
        arrays += [w, b, beta, gamma, mean, inv_std]
        y = batchnorm(zb, beta, gamma, mean, inv_std)
        out_bits = 1 if (topo == "lfc" and last) else abits
        x = quant_act(y, out_bits)
    return arrays


def float_forward(name: str, arrays: list[np.ndarray], pixels: np.ndarray) -> list[np.ndarray]:
    """Per-layer outputs of the float training graph, NHWC for conv layers (for comparison).

    Hidden layers: quantised activations. CNV output: the raw dot product before its scalar
    batch-norm. LFC output: the quantised (±1) last layer.
    """
    topo, wbits, abits = parse_network(name)
    x = cnv_input(pixels) if topo == "cnv" else lfc_input(pixels)
    outs, cursor = [], 0
    shapes = _layer_shapes(name, arrays[-5].shape[1] if topo == "cnv" else arrays[-6].shape[1])
    for idx, (kind, _, _, pool) in enumerate(shapes):
        wq = quant_weights(arrays[cursor].astype(np.float64), wbits)
        if kind == "out":
            outs.append(x.reshape(len(x), -1) @ wq)
            break
        b, beta, gamma, mean, inv_std = arrays[cursor + 1:cursor + 6]
        cursor += 6
        if kind == "conv":
            z = conv_valid(x, wq)
            if pool:
                z = maxpool2(z)
            z = z + b.reshape(1, -1, 1, 1)
        else:
            x = x.reshape(len(x), -1)
            z = x @ wq + b
        y = batchnorm(z, beta, gamma, mean, inv_std)
        last = idx == len(shapes) - 1
        x = quant_act(y, 1 if (topo == "lfc" and last) else abits)
        outs.append(x.transpose(0, 2, 3, 1) if kind == "conv" else x)
    return outs


def random_archive(name: str, classes: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Arrays of the right layout with random values (no fitted statistics): fast, for CLI tests."""
    arrays: list[np.ndarray] = []
    for kind, wshape, rows, _ in _layer_shapes(name, classes):
        arrays.append(rng.uniform(-1, 1, wshape).astype(np.float32))
        if kind == "out":
            arrays += [np.float32(0.1), np.float32(1.2), np.float32(3.0), np.float32(0.05)]
            break
        arrays.append(rng.uniform(-1, 1, rows).astype(np.float32))
        arrays += [rng.uniform(-0.3, 0.3, rows).astype(np.float32), rng.uniform(0.5, 1.5, rows).astype(np.float32),
                   rng.uniform(-5, 5, rows).astype(np.float32), rng.uniform(0.05, 0.2, rows).astype(np.float32)]
    return arrays
