"""Quantisers of the BNN-PYNQ training graph (spec §2.3) with straight-through estimators.

Every quantiser returns the quantised value in the forward pass and lets the gradient through
in the backward pass with the "detach trick": `s + (q - s).detach()` equals q but has the
gradient of s. Using a clamp for s gives the hard-tanh STE of BinaryNet (gradient cancelled
where |x| > 1) without a custom autograd.Function.
"""

from __future__ import annotations

import torch


def binary(x: torch.Tensor) -> torch.Tensor:
    """Sign with 0 -> +1 (spec §2.3 "x >= 0 => +1"), the value of a 1-bit weight/activation."""
    return torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))


def ternary(x: torch.Tensor) -> torch.Tensor:
    """2-bit quantiser of spec §2.3: hard-tanh, then round halves away from zero -> {-1, 0, +1}.

    Written as -1 + [x >= -0.5] + [x >= 0.5], the activation form the spec gives; for clipped
    inputs it is the same as rounding halves away from zero.
    """
    return (x >= -0.5).to(x.dtype) + (x >= 0.5).to(x.dtype) - 1.0


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
    return clipped + (quantize(x, bits) - clipped).detach()
