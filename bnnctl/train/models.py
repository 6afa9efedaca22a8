"""CNV and LFC as PyTorch modules, built from the topology configs (spec §1.2, §1.3).

Graph order per hidden layer: weights -> batch-norm -> quantised activation -> [max pool].
The BNN-PYNQ Theano graph pooled *before* its batch-norm, but the hardware thresholds (= BN +
quantiser) *before* it pools (spec §1.2, §4.3). Both orders agree when gamma > 0 and differ for
gamma < 0 (spec §3.7.2), so we train in the hardware's order and pooling can never make the
converted integer model disagree with the float graph. The Lasagne archive does not record
the order, so the export layout is unchanged (architecture.md). The other sign-dependent
deviation, the threshold rounding of spec §3.7.1, is removed by keeping gamma > 0 where it
applies (layers.positive_gamma_needed). Together: the converted model computes exactly this
graph (tests/test_train.py checks every score and output bit).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bnnctl.topology import LayerSpec, NetworkSpec
from bnnctl.train.layers import (
    QuantConv2d,
    QuantLinear,
    ScalarBatchNorm,
    ScaleOnlyNorm,
    batch_norm,
    positive_gamma_needed,
)
from bnnctl.train.quant import quantize_ste

# Dropout of the BNN-PYNQ MNIST recipe (spec §2.3); the CIFAR recipe has none.
LFC_INPUT_DROPOUT = 0.2
LFC_HIDDEN_DROPOUT = 0.5

# Where the hinge loss puts the neutral point of signed CNV scores (W1A2, W2A2), in units of the
# output scale: the loss sees `scores - SIGNED_SCORE_OFFSET`, so it asks for true >= 1 + offset
# and others <= offset - 1. The board's multi-image call answers class 0 unless the top raw
# score is > 0 (spec §4.4); with offset 0 an image the model is unsure of sits near 0 and
# often has every score <= 0 (measured: 8 of 495 CUCUMBER-9 test images right in float but
# class 0 on the board, cnvW2A2). An argmax does not change under a constant shift, so only
# the loss and the board's threshold see it; the archive still holds beta = 0 (layers.py).
SIGNED_SCORE_OFFSET = 1.0


class Block(nn.Module):
    """One layer of the archive: quantised weights + its batch-norm (+ activation and pool)."""

    def __init__(self, layer: LayerSpec, out_features: int, output: bool, scalar_bn: bool):
        super().__init__()
        self.spec = layer
        self.output = output
        if layer.kind == "conv":
            self.linear = QuantConv2d(layer.in_channels, out_features, layer.kernel, layer.weight_bits)
        else:
            self.linear = QuantLinear(layer.in_features, out_features, layer.weight_bits)
        if scalar_bn:
            # Popcount scores (input "xnor") are >= 0, signed scores need the sign kept.
            self.bn = ScalarBatchNorm() if layer.input == "xnor" else ScaleOnlyNorm()
        else:
            self.bn = batch_norm(out_features, layer.kind == "conv")
        # CNV's scalar output BN must keep the class order (see ScalarBatchNorm); LFC's output
        # layer is thresholded to 1 bit like a hidden layer (spec §1.3).
        self.bn.positive_gamma = scalar_bn or positive_gamma_needed(layer.kind, layer.input,
                                                                    layer.activation_bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.linear(x))
        if self.output:
            return x  # the loss sees the last batch-norm's output (spec §2.3)
        x = quantize_ste(x, self.spec.activation_bits)
        if self.spec.pool:
            x = F.max_pool2d(x, 2)  # after the quantiser, as the hardware does (spec §4.3)
        return x


class BnnModel(nn.Module):
    """A CNV or LFC network for `num_classes` classes; `blocks` follow the archive's layer order."""

    def __init__(self, network: NetworkSpec, num_classes: int, hidden_dropout: float | None = None):
        super().__init__()
        if not 2 <= num_classes <= network.max_classes:
            raise ValueError(f"{network.name} supports 2..{network.max_classes} classes, got {num_classes}")
        self.network = network
        self.num_classes = num_classes
        blocks = []
        last = len(network.layers) - 1
        for layer in network.layers:
            is_out = layer.index == last
            width = num_classes if is_out else layer.rows  # the archive holds unpadded rows (§2)
            blocks.append(Block(layer, width, output=is_out, scalar_bn=is_out and network.is_cnv))
        self.blocks = nn.ModuleList(blocks)
        self.input_dropout = nn.Dropout(LFC_INPUT_DROPOUT) if not network.is_cnv else nn.Identity()
        if hidden_dropout is None:
            hidden_dropout = 0.0 if network.is_cnv else LFC_HIDDEN_DROPOUT
        # After every hidden *dense* layer: all of LFC's, CNV's two fully connected ones (BNN-PYNQ
        # had none in CNV; dropping conv feature-map pixels would be another method).
        self.hidden_dropout = nn.Dropout(hidden_dropout) if hidden_dropout > 0 else nn.Identity()

    @property
    def signed_scores(self) -> bool:
        """Output scores whose sign is the sign of the hardware accumulator (uncentred scale)."""
        return self.network.output_kind == "signed"

    @property
    def score_offset(self) -> float:
        """What the loss subtracts from the scores (SIGNED_SCORE_OFFSET for signed ones)."""
        return SIGNED_SCORE_OFFSET if self.signed_scores else 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: CNV (N, 3, 32, 32) input values q/128; LFC (N, 784) values +-1."""
        x = self.input_dropout(x)
        for block in self.blocks:
            if block.spec.kind == "dense" and x.dim() > 2:
                # After conv 5 the map is 1x1, so (C, H, W) flattening is the channel order (§2.1).
                x = x.flatten(1)
            x = block(x)
            if block.spec.kind == "dense" and not block.output:
                x = self.hidden_dropout(x)
        return x
