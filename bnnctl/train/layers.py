"""Quantised layers and the batch-norm flavours of the BNN-PYNQ graph.

Conventions taken from the archive layout (spec §2):
* conv/dense carry no trainable bias. Every one is followed by a batch-norm whose training-mode
  batch mean cancels any bias, so a trained bias would never get a gradient; the export writes
  zeros in the layout's `b` slots and the converter folds them into thresholds (spec §3.3).
* batch-norm uses eps = 1e-4 and moving-average factor 0.1 (spec §2, Lasagne's alpha = 0.1 is
  torch's momentum = 0.1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bnnctl.train.quant import quantize_ste

BN_EPS = 1e-4
BN_MOMENTUM = 0.1

# Smallest gamma allowed where a negative (or zero) gamma would break bit-exactness, see
# `positive_gamma_needed`. Small enough not to restrict the learned scale in practice, large
# enough that the folded CNV layer-0 threshold stays far inside the 24-bit hardware register.
GAMMA_MIN = 1e-3


class QuantConv2d(nn.Conv2d):
    """3x3 valid convolution (cross-correlation, spec §1.2) with quantised latent weights."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, weight_bits: int):
        super().__init__(in_channels, out_channels, kernel, bias=False)
        self.weight_bits = weight_bits
        # BinaryNet initialisation U(-1, 1) (spec §2.3): latent weights live on the same scale as
        # their clip range, so the optimizer step size alone decides how often signs flip.
        nn.init.uniform_(self.weight, -1.0, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, quantize_ste(self.weight, self.weight_bits))


class QuantLinear(nn.Linear):
    """Dense layer with quantised latent weights; torch stores (out, in), the archive (in, out)."""

    def __init__(self, in_features: int, out_features: int, weight_bits: int):
        super().__init__(in_features, out_features, bias=False)
        self.weight_bits = weight_bits
        nn.init.uniform_(self.weight, -1.0, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, quantize_ste(self.weight, self.weight_bits))


def batch_norm(features: int, spatial: bool) -> nn.Module:
    cls = nn.BatchNorm2d if spatial else nn.BatchNorm1d
    return cls(features, eps=BN_EPS, momentum=BN_MOMENTUM)


class ScalarBatchNorm(nn.Module):
    """Batch-norm over all outputs with ONE mean/var/gamma/beta (the CNV output BN, spec §2.1).

    Lasagne normalised the last layer over both the batch and the class axis, so the archive
    holds four scalars (arr_49..arr_52). Reshaping the scores to one long column and using a
    one-channel BatchNorm1d gives the same statistics. It matters for training only: it brings
    the raw accumulators (hundreds) to the scale of the hinge targets +-1. With gamma > 0 (kept
    by the constraint in `apply_constraints`) it is a strictly increasing map of every class
    score, so the hardware's raw accumulator ranks classes exactly like the float output - with
    the 2019 finnthesizer (which ignores this BN) as well as HEAD (which flips on gamma < 0,
    spec §3.2, §3.8).
    """

    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm1d(1, eps=BN_EPS, momentum=BN_MOMENTUM)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(x.reshape(-1, 1)).reshape(x.shape)


class ScaleOnlyNorm(nn.Module):
    """The CNV output batch-norm for signed scores (W1A2, W2A2): mean and beta fixed at 0.

    The board's test-set call picks class 0 unless some raw score is > 0 (spec §4.4 "multiple"
    rule). With popcount scores (W1A1) that never bites, but A2 scores are signed sums: under a
    centred BN the float model can rank a class first whose accumulator is negative, and the
    board then answers class 0. Without centring, y = acc * inv_std * gamma has the sign of
    acc, so the hinge loss's push of the true class to y >= 1 is a push to acc > 0 - the float
    decision and the board's agree. Exported as the same four scalars (beta = 0, mean = 0),
    so the Lasagne layout (spec §2.1 arr_49..52) is unchanged.
    """

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(()))  # gamma, kept > 0 (apply_constraints)
        self.register_buffer("running_var", torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            var = x.detach().var()  # over batch and classes, one scalar as in Lasagne
            with torch.no_grad():
                self.running_var.mul_(1 - BN_MOMENTUM).add_(BN_MOMENTUM * var)
            # the batch statistic carries gradient, like a batch-norm's does
            scale = torch.rsqrt(x.var() + BN_EPS)
        else:
            scale = torch.rsqrt(self.running_var + BN_EPS)
        return x * scale * self.weight


def positive_gamma_needed(kind: str, layer_input: str, activation_bits: int) -> bool:
    """Whether this layer's batch-norm gamma must stay positive for a bit-exact conversion.

    For gamma < 0 the converter flips the row and rounds the flipped threshold t with ceil
    (spec §3.3), and the hardware compares strictly (§3.1). Accumulators are integers, so a
    neuron whose accumulator equals floor(tau) outputs one level lower than the float model
    (spec §3.7.1) - a systematic disagreement, not a rare tie. That happens in every layer
    except a *dense* W1A1 popcount layer, whose threshold trunc((n_in + t)/2) keeps the
    fraction of t (spec §3.3 row 2; checked by tests/test_train.py). The *conv* popcount
    layers round t first (trunc((fanin + R(t))/2)) and are hit too: with tau = 10.5 over 576
    inputs the float graph fires at acc = 10, the hardware only at acc <= 8.
    A negative gamma is equivalent to a positive one with the row's weights negated, so keeping
    gamma >= GAMMA_MIN costs no expressiveness; the exempt dense layers keep their freedom.
    """
    return not (kind == "dense" and layer_input == "xnor" and activation_bits == 1)


def apply_constraints(model: nn.Module) -> None:
    """After each optimizer step: clip latent weights to [-1, 1] (spec §2.3) and clamp gammas
    where `positive_gamma_needed` (attribute `positive_gamma` set by models.py)."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (QuantConv2d, QuantLinear)):
                module.weight.clamp_(-1.0, 1.0)
            elif getattr(module, "positive_gamma", False):
                bn = module.bn if isinstance(module, ScalarBatchNorm) else module
                bn.weight.clamp_(min=GAMMA_MIN)
