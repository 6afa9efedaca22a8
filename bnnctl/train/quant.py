"""Quantisers of the BNN-PYNQ training graph (spec §2.3) with straight-through estimators.

Every quantiser returns the quantised value in the forward pass and lets the gradient through
in the backward pass with the "detach trick": `s + (q - s).detach()` equals q but has the
gradient of s. Using a clamp for s gives the hard-tanh STE of BinaryNet (gradient cancelled
where |x| > 1) without a custom autograd.Function.
"""

from __future__ import annotations

import torch


def binary(x: torch.Tensor) -> torch.Tensor:
    """Sign with 0 -> +1 (spec §2.3 "x >= 0 => +1"), the value of a 1-bit weight/activation.

    sign(sign(x) + 0.5) maps {-1, 0 (and -0.0), +1} to {-1, +1, +1}. Written with `sign`
    rather than `where(x >= 0, 1, -1)` for speed: on CPU the comparison + select was the
    largest cost of an LFC training step after the matrix products, and it runs for every weight
    matrix and activation of every step (README: Training speed, benchmarks/bench_train_step.py).
    """
    return torch.sign(x).add_(0.5).sign_()


def ternary(x: torch.Tensor) -> torch.Tensor:
    """2-bit quantiser of spec §2.3: hard-tanh, then round halves away from zero -> {-1, 0, +1}.

    The activation form the spec gives is -1 + [x >= -0.5] + [x >= 0.5]; with
    [x >= c] = (binary(x - c) + 1) / 2 that is (binary(x + 0.5) + binary(x - 0.5)) / 2. The
    sums cannot move a value across its threshold: near +-0.5 the addition is exact (Sterbenz),
    elsewhere the result is at least 0.25 away from 0.
    """
    return binary(x + 0.5).add_(binary(x - 0.5)).mul_(0.5)


def quantize(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Quantised value without any gradient path (used on the export side)."""
    if bits == 1:
        return binary(x)
    if bits == 2:
        return ternary(x)
    raise ValueError(f"unsupported precision: {bits} bits")


def quantize_ste(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Quantised forward, hard-tanh straight-through backward (activations and weights).

    Latent weights are kept inside [-1, 1] by clipping after each step, so for weights the
    clamp is the identity and the estimator is the plain straight-through one of BinaryNet.
    """
    clipped = torch.clamp(x, -1.0, 1.0)
    with torch.no_grad():  # the quantiser has no gradient; skip recording it
        step = quantize(x, bits).sub_(clipped)
    return clipped + step
