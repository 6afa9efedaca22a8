"""Bit-packing of a BinarizedNetwork for the compiled engine, once per model (layouts: src/fastbnn.h).

Per layer (spec §3.1 input kinds):
* xnor / bipolar: 1-bit weights as bits (1 = +1) in the hardware column order (§3.4), 64 columns
  a word, in blocks of 8 rows laid out word-major ([block][word][8]).
* int2 input, 1-bit weights: the "negative" bit plane of the weights (x*w is negative exactly
  when the signs differ).
* int2 input, 2-bit weights: planes (nonzero, negative) interleaved per word; weights equal to
  -2 (possible in the 2-bit lane, §3.2) add a second pass, since -2 = -1 + -1.
* fix8 (CNV layer 0): int8 weights per window row (ky) in pairs (u8 x s8 products, VPMADDUBSW)
  and quads (VPDPBUSD), and thresholds moved so the test T < 2*acc (§3.1) becomes 2*S > T',
  with S = sum w*(q+128) = acc + 128*sum(w).
Thresholds are the values the hardware holds (BinarizedLayer.hardware_thresholds, §3.3/§3.9).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bnnctl.errors import BnnctlError
from bnnctl.model import BinarizedLayer, BinarizedNetwork

# Kinds as the C code numbers them (fastbnn.h).
IN_FIX8, IN_BIN, IN_TERN = 0, 1, 2
OUT_SCORE, OUT_BIN, OUT_TERN = 0, 1, 2


class UnsupportedModel(BnnctlError):
    """The model's geometry is outside what the compiled engine handles."""


@dataclass
class PackedModel:
    header: tuple  # (is_cnv, in_bytes, in_words, act_words, tmp_words)
    layers: list[tuple]
    out_rows: int


def _bits_to_words(bits: np.ndarray, words: int) -> np.ndarray:
    """(rows, cols) of 0/1 -> (rows, words) uint64, column j at bit j % 64 of word j // 64."""
    rows, cols = bits.shape
    padded = np.zeros((rows, words * 64), dtype=np.uint8)
    padded[:, :cols] = bits
    return np.packbits(padded, axis=1, bitorder="little").view("<u8").reshape(rows, words)


def _blocked(words: np.ndarray) -> np.ndarray:
    """(mh, K) -> (mh/8, K, 8): word k of 8 neighbouring rows is one 64-byte vector."""
    mh, k = words.shape
    return np.ascontiguousarray(words.reshape(mh // 8, 8, k).transpose(0, 2, 1))


def _planes(words_a: np.ndarray, words_b: np.ndarray) -> np.ndarray:
    """Two (mh, K) planes -> (mh/8, K, 2, 8)."""
    return np.ascontiguousarray(np.stack([_blocked(words_a), _blocked(words_b)], axis=2))


def _fix8_groups(w3: np.ndarray, size: int) -> np.ndarray:
    """(mh, 3, 3*C) weights per window row -> (3, groups, mh, size), each row padded with zero
    weights to whole groups (pairs for VPMADDUBSW, quads for VPDPBUSD)."""
    mh, rows, width = w3.shape
    groups = -(-width // size)
    padded = np.zeros((mh, rows, groups * size), dtype=np.int8)
    padded[:, :, :width] = w3
    return np.ascontiguousarray(padded.reshape(mh, rows, groups, size).transpose(1, 2, 0, 3))


def _fix8(layer: BinarizedLayer, out_kind: int) -> tuple:
    spec = layer.spec
    w = layer.weights.astype(np.int64)[:, : spec.fan_in]  # (mh, 27), columns (ky, kx, c) §3.4
    mh = w.shape[0]
    w3 = w.reshape(mh, 3, 3 * spec.in_channels).astype(np.int8)  # one window row per ky
    # T < 2*acc  <=>  2*S > T + 256*sum(w)   (S = acc + 128*sum(w), units of 1/128)
    moved = layer.hardware_thresholds().astype(np.int64) + 256 * w.sum(axis=1)[:, None]
    # 2*S lies within +-27,540 (27 terms of |w| <= 2 and q+128 <= 255), so clamping to int16
    # changes no comparison.
    thr16 = np.ascontiguousarray(np.clip(moved, -32768, 32767).astype(np.int16).T)
    return (IN_FIX8, out_kind, 0, 0, 1, int(spec.pool), spec.in_dim, spec.out_dim, 0,
            _out_ppw(spec, out_kind), 1, mh, spec.mw, spec.thresholds, spec.in_channels,
            None, None, None, _fix8_groups(w3, 2), _fix8_groups(w3, 4), thr16)


def _out_ppw(spec, out_kind: int) -> int:
    if out_kind == OUT_SCORE:
        return spec.mh // 4  # int16 scores, four to a word
    return spec.mh // 64 * (2 if out_kind == OUT_TERN else 1)


def _pack_layer(layer: BinarizedLayer, previous_rows: int | None) -> tuple:
    spec = layer.spec
    mh = layer.weights.shape[0]
    if mh != spec.mh or mh % 64:
        raise UnsupportedModel(f"fast engine: layer {spec.index} has {mh} rows (a multiple of 64 is needed)")
    out_kind = {0: OUT_SCORE, 1: OUT_BIN, 2: OUT_TERN}.get(spec.thresholds)
    if out_kind is None or (spec.thresholds and layer.thresholds is None):
        raise UnsupportedModel(f"fast engine: layer {spec.index}: {spec.thresholds} thresholds per row")
    if spec.input == "fix8":
        if (spec.kind != "conv" or spec.index != 0 or spec.kernel != 3 or spec.in_channels > 4
                or spec.in_dim * spec.in_channels > 1024 or spec.mw != spec.fan_in):
            raise UnsupportedModel("fast engine: fix8 input is supported for a first 3x3 conv layer only")
        if out_kind == OUT_SCORE:
            raise UnsupportedModel("fast engine: a fix8 layer needs thresholds")
        return _fix8(layer, out_kind)

    tern_in = spec.input == "int2"
    w = layer.weights
    if spec.kind == "conv":
        if spec.kernel != 3 or spec.in_channels % 64:
            raise UnsupportedModel(f"fast engine: conv layer {spec.index} needs a 3x3 kernel and 64k input channels")
        if spec.mw != 9 * spec.in_channels:
            raise UnsupportedModel(f"fast engine: conv layer {spec.index} has padded columns")
        groups = spec.in_channels // 64
        kw, in_ppw = 9 * groups, groups
        if out_kind == OUT_SCORE:
            raise UnsupportedModel("fast engine: a conv layer needs thresholds")
    else:
        if spec.mw % 64:
            raise UnsupportedModel(f"fast engine: dense layer {spec.index} width {spec.mw} is not a multiple of 64")
        kw = in_ppw = spec.mw // 64
        if previous_rows is not None and previous_rows != spec.mw:
            raise UnsupportedModel(f"fast engine: dense layer {spec.index} reads {spec.mw} inputs, "
                                   f"the layer before gives {previous_rows}")
    if tern_in:
        in_ppw *= 2
    extra = None
    if spec.weight_bits == 1:
        if tern_in:
            weights = _blocked(_bits_to_words(w < 0, kw))
        else:
            weights = _blocked(_bits_to_words(w > 0, kw))
        w_tern = 0
    else:
        if not tern_in:
            raise UnsupportedModel(f"fast engine: layer {spec.index}: 2-bit weights need 2-bit inputs")
        # -2..1 as nonzero/negative planes; -2 counts as -1 here and once more in `extra`
        weights = _planes(_bits_to_words(w != 0, kw), _bits_to_words(w < 0, kw))
        if np.any(w == -2):
            minus2 = _bits_to_words(w == -2, kw)
            extra = _planes(minus2, minus2)
        w_tern = 1
    thr = None
    if out_kind != OUT_SCORE:
        thr = np.ascontiguousarray(layer.hardware_thresholds().astype(np.int64).T)
    in_kind = IN_TERN if tern_in else IN_BIN
    return (in_kind, out_kind, int(spec.input == "bipolar"), w_tern, int(spec.kind == "conv"), int(spec.pool),
            spec.in_dim or 1, spec.out_dim, in_ppw, _out_ppw(spec, out_kind), kw, mh, spec.mw, spec.thresholds,
            spec.in_channels, weights, extra, thr, None, None, None)


def pack_network(model: BinarizedNetwork) -> PackedModel:
    spec = model.spec
    layers, act_words, tmp_words = [], 0, 0
    previous_rows = None
    for layer in model.layers:
        packed = _pack_layer(layer, previous_rows if layer.spec.kind == "dense" else None)
        layers.append(packed)
        s = layer.spec
        out_ppw = packed[9]
        side = s.pooled_dim if s.kind == "conv" else 1
        act_words = max(act_words, side * side * out_ppw)
        if s.pool:
            if s.out_dim % 2:
                raise UnsupportedModel(f"fast engine: layer {s.index} pools an odd size")
            tmp_words = max(tmp_words, 2 * s.out_dim * out_ppw)
        previous_rows = s.mh if s.kind == "dense" else s.out_channels * side * side
    last = model.layers[-1].spec
    if spec.is_cnv:
        if model.layers[0].spec.input != "fix8" or last.thresholds:
            raise UnsupportedModel("fast engine: a CNV network starts with fix8 and ends with raw scores")
        in_bytes = spec.input_height * spec.input_width * spec.input_channels
        in_words = 0
    else:
        first = model.layers[0].spec
        if first.input not in ("xnor", "bipolar") or last.thresholds != 1 or last.mh != 64:
            raise UnsupportedModel("fast engine: an LFC network reads bits and ends with one 64-bit word")
        in_bytes = first.mw
        in_words = first.mw // 64
        act_words = max(act_words, in_words)
    header = (int(spec.is_cnv), in_bytes, in_words, act_words, tmp_words)
    return PackedModel(header=header, layers=layers, out_rows=last.mh)
