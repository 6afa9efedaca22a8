"""Conversion math: synthetic archives -> binarize -> integer model vs an independent float model.

Spec §3.7 says where they must agree: every activation of every layer when all batch-norm gammas
are positive; with negative gammas, LFC-W1A1 still everywhere, and elsewhere only known,
explained deviations.
"""

from __future__ import annotations

import numpy as np
import pytest

from bnnctl.convert.archive import read_archive
from bnnctl.convert.quantize import build_network
from bnnctl.infer.classify import encode_inputs
from bnnctl.infer.numpy_engine import accumulate, forward
from bnnctl.topology import get_network
from tests.floatref import float_forward, make_archive, parse_network

NETWORKS = ["cnvW1A1", "cnvW1A2", "cnvW2A2", "lfcW1A1", "lfcW1A2"]


def synthetic_pixels(name, n, rng):
    topo, _, _ = parse_network(name)
    if topo == "cnv":
        # smooth random images, closer to photos than white noise
        base = rng.integers(0, 256, (n, 8, 8, 3)).repeat(4, axis=1).repeat(4, axis=2)
        noise = rng.integers(-20, 21, base.shape)
        return np.clip(base + noise, 0, 255).astype(np.uint8)
    return np.where(rng.random((n, 28, 28)) < 0.2, rng.integers(128, 256, (n, 28, 28)),
                    rng.integers(0, 128, (n, 28, 28))).astype(np.uint8)


def convert(tmp_path, name, arrays, classes):
    path = tmp_path / f"{name}.npz"
    np.savez(path, *arrays)
    spec = get_network(name)
    params, n = read_archive(path, spec)
    assert n == classes
    return build_network(spec, params, [str(i) for i in range(classes)])


def integer_layers(model, pixels):
    _, outs = forward(model, encode_inputs(model, pixels), keep=True)
    return outs


def as_levels(layer_spec, out):
    """Integer activations -> the float graph's values (bit 1 = +1, bit 0 = -1)."""
    if layer_spec.activation_bits == 1:
        return 2.0 * out - 1.0
    return out.astype(np.float64)


@pytest.mark.parametrize("name", NETWORKS)
def test_positive_gamma_every_layer_agrees(tmp_path, name):
    rng = np.random.default_rng(sum(map(ord, name)))
    pixels = synthetic_pixels(name, 24, rng)
    classes = 10
    arrays = make_archive(name, pixels, classes, rng, negative_gamma=0.0)
    model = convert(tmp_path, name, arrays, classes)
    reference = float_forward(name, arrays, pixels)
    ints = integer_layers(model, pixels)
    spec = model.spec
    for layer, ref, got in zip(spec.layers, reference, ints):
        if layer.thresholds == 0:  # CNV scores: popcount (W1A1) or signed sum (A2) of the float dot
            got = got[:, :classes].astype(np.float64)
            expect = (ref + 512) / 2 if layer.input == "xnor" else ref
            np.testing.assert_array_equal(got, expect, err_msg=f"{name} scores")
        else:
            if layer.output:
                got = got[:, :classes]
            levels = as_levels(layer, got)
            mismatches = np.count_nonzero(levels != ref)
            assert mismatches == 0, f"{name} layer {layer.index}: {mismatches} of {ref.size} activations differ"
    # the decision agrees too: argmax of the float output vs the board's rule on the integer one
    if spec.is_cnv:
        assert (np.argmax(ints[-1][:, :classes], axis=1) == np.argmax(reference[-1], axis=1)).all()


def test_negative_gamma_lfc_w1a1_still_exact(tmp_path):
    rng = np.random.default_rng(7)
    pixels = synthetic_pixels("lfcW1A1", 32, rng)
    arrays = make_archive("lfcW1A1", pixels, 10, rng, negative_gamma=0.3)
    assert any((a < 0).any() for a in arrays[3::6]), "the test needs some negative gammas"
    model = convert(tmp_path, "lfcW1A1", arrays, 10)
    for layer, ref, got in zip(model.spec.layers, float_forward("lfcW1A1", arrays, pixels),
                               integer_layers(model, pixels)):
        got = got[:, :ref.shape[1]]
        assert np.array_equal(as_levels(layer, got), ref), f"layer {layer.index}"


@pytest.mark.parametrize("name", ["lfcW1A2", "cnvW1A2"])
def test_negative_gamma_deviations_are_only_the_documented_ties(tmp_path, name):
    """Spec §3.7.1: in non-popcount layers a negative-gamma neuron whose flipped accumulator equals
    its threshold outputs one step lower; nothing else may differ (checked on layer 0, before any
    pool, where §3.7.2 would also apply)."""
    rng = np.random.default_rng(11)
    pixels = synthetic_pixels(name, 24, rng)
    arrays = make_archive(name, pixels, 10, rng, negative_gamma=0.3)
    model = convert(tmp_path, name, arrays, 10)
    layer = model.layers[0]
    ref = float_forward(name, arrays, pixels)[0]
    got = as_levels(layer.spec, integer_layers(model, pixels)[0])
    differ = got != ref
    if not differ.any():
        return
    encoded = encode_inputs(model, pixels)
    if layer.spec.kind == "conv":
        from bnnctl.infer.numpy_engine import _im2col
        acc = accumulate(layer, _im2col(encoded, 3)).reshape(got.shape)
        acc = 2 * acc  # CNV layer 0 compares T_raw < 2*acc
    else:
        acc = accumulate(layer, encoded)
    gamma = arrays[3]
    rows = np.nonzero(differ)[-1]
    assert (gamma[rows] < 0).all(), "a positive-gamma neuron deviated"
    t = layer.hardware_thresholds()[rows]
    assert (t == acc[differ][:, None]).any(axis=1).all(), "a deviation that is not an accumulator tie"
    assert (got[differ] == ref[differ] - 1).all(), "deviations must be exactly one step lower"
