"""Exponential moving average of the latent weights (`bnnctl train --ema DECAY`).

The optimizer keeps training its own model; after every step the averaged copy moves a little
towards it. A latent weight that keeps flipping around zero gets the sign it held most of the
recent time instead of the sign of the last step, which is what a noisy small-data run (CUCUMBER-9:
~45 steps an epoch) validates and exports when averaging is on.

Batch-norm statistics are not averaged: the sign pattern of the averaged weights is not that
of any single step, so `refresh_batch_norm` measures them again on the un-augmented training
images, as the network will see pictures at inference (dropout off).
"""

from __future__ import annotations

import copy
from typing import Any, Callable

import torch
from torch import nn

from bnnctl.train.layers import BN_MOMENTUM, ScaleOnlyNorm


def running_stat_norms(model: nn.Module) -> list[nn.Module]:
    """The modules that keep running statistics (torch batch-norms and ScaleOnlyNorm)."""
    return [m for m in model.modules()
            if isinstance(m, (nn.modules.batchnorm._BatchNorm, ScaleOnlyNorm))]


class WeightAverage:
    """An averaged copy of `model`; `update` after each optimizer step."""

    def __init__(self, model: nn.Module, decay: float):
        if not 0 < decay < 1:
            raise ValueError(f"decay must lie in (0, 1), got {decay}")
        self.decay = decay
        self.model = copy.deepcopy(model)
        self.model.requires_grad_(False)
        self.steps = 0

    def _parameter_pairs(self, model: nn.Module) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        mine = dict(self.model.named_parameters())
        theirs = dict(model.named_parameters())
        return [mine[name] for name in theirs], [p.detach() for p in theirs.values()]

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        # The usual warm-up: early on the average follows the model more closely, so the random
        # initial weights do not dominate the first epochs' validation.
        self.steps += 1
        decay = min(self.decay, (1 + self.steps) / (10 + self.steps))
        averaged, current = self._parameter_pairs(model)
        torch._foreach_lerp_(averaged, current, 1.0 - decay)

    @torch.no_grad()
    def refresh_batch_norm(self, batches: Callable[[], Any]) -> None:
        """Running statistics = the plain average over `batches()` (an iterable of input
        batches), measured in inference mode except for the norms themselves."""
        norms = running_stat_norms(self.model)
        self.model.eval()
        for norm in norms:
            norm.train()
        for count, batch in enumerate(batches()):
            for norm in norms:
                norm.momentum = 1.0 / (count + 1)  # running = mean of the batch statistics so far
            self.model(batch)
        for norm in norms:
            norm.momentum = BN_MOMENTUM
        self.model.eval()

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "steps": self.steps, "model": self.model.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.decay = state["decay"]
        self.steps = state["steps"]
        self.model.load_state_dict(state["model"])
