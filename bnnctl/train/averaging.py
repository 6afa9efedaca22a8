"""Exponential moving average of the weights (`bnnctl train --ema DECAY`).

The optimizer keeps training its own model; after every step the averaged copy moves a little
towards it. A latent weight that keeps flipping around zero gets the sign it held most of the
recent time instead of the sign of the last step; the average is what is validated, kept and
exported when the option is on.

The batch-norm running statistics are averaged the same way rather than measured again for the
averaged weights. Measuring them on the un-augmented training images was tried first and hurt:
the trained network is fitted to exactly those images, and statistics taken on them moved a
CUCUMBER-9 cnvW1A1 model from 64 to 76 test errors (same weights; README, Training). The
running statistics training keeps come from augmented batches, which look more like new
pictures.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


class WeightAverage:
    """An averaged copy of `model` (parameters and float buffers); `update` after each step.

    torch.optim.swa_utils.AveragedModel with get_ema_multi_avg_fn does the same lerp, but
    starts from the weights after the first step without a warm-up and wraps the model (its
    state_dict keys gain a prefix); a bare copy exports with save_archive like the model itself.
    """

    def __init__(self, model: nn.Module, decay: float):
        if not 0 < decay < 1:
            raise ValueError(f"decay must lie in (0, 1), got {decay}")
        self.decay = decay
        self.model = copy.deepcopy(model)
        self.model.requires_grad_(False)
        self.model.eval()
        self.steps = 0

    def _pairs(self, model: nn.Module) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Matching averaged / current tensors; integer buffers (batch counters) are skipped."""
        mine = self.model.state_dict(keep_vars=True)
        averaged, current = [], []
        for name, tensor in model.state_dict(keep_vars=True).items():
            if tensor.is_floating_point():
                averaged.append(mine[name].detach())
                current.append(tensor.detach())
        return averaged, current

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        # The usual warm-up: early on the average follows the model more closely, so the random
        # initial weights do not dominate the first epochs' validation.
        self.steps += 1
        decay = min(self.decay, (1 + self.steps) / (10 + self.steps))
        averaged, current = self._pairs(model)
        torch._foreach_lerp_(averaged, current, 1.0 - decay)

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "steps": self.steps, "model": self.model.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.decay = state["decay"]
        self.steps = state["steps"]
        self.model.load_state_dict(state["model"])
