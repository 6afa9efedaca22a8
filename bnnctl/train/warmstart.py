"""`--init-from FOLDER`: start training from a parameter folder's network instead of random weights.

The folder (e.g. BNN-PYNQ's cifar10/cnvW1A1) is read into the integer model and turned back
into float parameters by convert/unfold.py, whose float graph makes the board's decisions.
Loading them into a BnnModel takes two more choices, both made here:

* Latent weights: each quantised weight w becomes ALPHA[bits] * w, the middle of the latent
  interval that quantises to w (1-bit: [0, 1] -> 0.5; 2-bit codes +-1: [0.5, 1] -> 0.75), so
  a weight neither flips at the first step nor sits on the clip bound, where it would take
  the most steps to flip.
* Batch-norm statistics: the folder fixes only where each neuron fires, not the scale of its
  accumulators on the new data. In training mode a batch-norm normalises with the batch's own
  statistics, so they are measured on the run's training images (`calibrate`) and gamma and
  beta are set to keep every switch point where the folder has it. The imported network then
  computes the folder's decisions in evaluation mode and nearly the same in training mode.

A folder whose output layer has other classes than the run (a new dataset) contributes its
feature layers; the output layer keeps its random start.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from bnnctl.convert.archive import LayerParams
from bnnctl.convert.unfold import unfold_network
from bnnctl.errors import BnnctlError
from bnnctl.model import BinarizedNetwork
from bnnctl.train.layers import BN_EPS, ScalarBatchNorm, ScaleOnlyNorm
from bnnctl.train.models import BnnModel

ALPHA = {1: 0.5, 2: 0.75}
CALIBRATION_IMAGES = 2000  # enough for per-channel means and variances; one forward pass


@dataclass
class WarmStart:
    folder: str
    network: str
    classes: list[str]
    output_layer: str  # "imported" (same classes as the run) or "new"
    calibration_images: int

    def as_dict(self) -> dict:
        return {"folder": self.folder, "network": self.network, "classes": self.classes,
                "output_layer": self.output_layer, "calibration_images": self.calibration_images}


def load_folder_network(folder: str, network: str) -> BinarizedNetwork:
    """The folder as the run's network; every problem is one line naming the folder."""
    from bnnctl.convert.folder import read_params_folder

    try:
        return read_params_folder(folder, network)
    except BnnctlError as exc:
        raise BnnctlError(f"--init-from: {exc}") from None


def _set_linear(block: nn.Module, p: LayerParams) -> None:
    w = torch.from_numpy(np.asarray(p.weight, dtype=np.float32))
    if block.spec.kind == "dense":
        w = w.T  # archive (n_in, n_out) -> torch (out, in)
    with torch.no_grad():
        block.linear.weight.copy_(ALPHA[block.linear.weight_bits] * w)


def _set_norm(block: nn.Module, p: LayerParams, mean: torch.Tensor | None, var: torch.Tensor | None) -> None:
    """y = gamma_u * (x - mean_u) (unfold's form) as a torch batch-norm with statistics
    (mean, var); without statistics the running ones are mean_u and 1 - eps (inv_std = 1).

    A 1-bit activation only sees the sign of y, so its slope is free; it is set to make y
    unit-scaled (gamma = 1), as a batch-norm trained from scratch is. The scale matters for
    training: the straight-through estimator passes gradients only where |y| <= 1, and in
    accumulator units (hundreds) almost no neuron would get one."""
    bn = block.bn
    with torch.no_grad():
        if isinstance(bn, ScaleOnlyNorm):  # signed scores: y = x * scale, sign kept
            bn.running_var.fill_(1 - BN_EPS if var is None else float(var))
            bn.weight.fill_(1.0)
            return
        if isinstance(bn, ScalarBatchNorm):  # popcount scores: any increasing map ranks alike
            bn.bn.running_mean.fill_(0.0 if mean is None else float(mean))
            bn.bn.running_var.fill_(1 - BN_EPS if var is None else float(var))
            bn.bn.weight.fill_(1.0)
            bn.bn.bias.fill_(0.0)
            return
        gamma_u = torch.from_numpy(np.asarray(p.gamma, dtype=np.float64))
        mean_u = torch.from_numpy(np.asarray(p.mean, dtype=np.float64))
        if mean is None:
            mean, var = mean_u, torch.full_like(mean_u, 1 - BN_EPS)
        mean, var = mean.double(), var.double()
        if block.spec.activation_bits == 1:
            gamma_u = 1 / torch.sqrt(var + BN_EPS)
        bn.running_mean.copy_(mean)
        bn.running_var.copy_(var)
        bn.weight.copy_(gamma_u * torch.sqrt(var + BN_EPS))
        bn.bias.copy_(gamma_u * (mean - mean_u))


def _pre_activation_stats(model: BnnModel, blocks: list[int], inputs: torch.Tensor):
    """Per-output mean and variance of each listed block's accumulators (scalar ones for the CNV
    output layer, as its batch-norm normalises over classes too)."""
    sums: dict[int, list] = {i: [0.0, 0.0, 0] for i in blocks}

    def hook(i: int):
        def record(_module, _inp, out):
            x = out.detach().double()
            if i == len(model.blocks) - 1 and model.network.is_cnv:
                x = x.reshape(-1, 1)
            else:
                x = x.transpose(0, 1).reshape(x.shape[1], -1).T  # (samples, channels)
            s = sums[i]
            s[0] = s[0] + x.sum(0)
            s[1] = s[1] + (x * x).sum(0)
            s[2] += x.shape[0]
        return record

    handles = [model.blocks[i].linear.register_forward_hook(hook(i)) for i in blocks]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(inputs), 500):
                model(inputs[start:start + 500])
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    stats = {}
    for i, (total, squares, n) in sums.items():
        mean = total / n
        var = (squares / n - mean * mean).clamp(min=0.0) * n / max(n - 1, 1)  # unbiased, as torch keeps
        stats[i] = (mean.float().cpu(), var.float().cpu())
    return stats


def warm_start(model: BnnModel, network: BinarizedNetwork, folder: str, classes: list[str],
               calibration: torch.Tensor | None) -> WarmStart:
    """Load the folder's network into `model` (in place). `calibration`: network inputs of
    training images for the batch-norm statistics; None keeps unfold's unit statistics."""
    if network.spec.name != model.network.name:
        raise BnnctlError(f"--init-from {folder}: a {network.spec.name} folder; this run trains "
                          f"{model.network.name} (choose the matching --network)")
    params = unfold_network(network)
    same_classes = network.classes == list(classes)
    imported = [i for i in range(len(model.blocks)) if same_classes or not model.blocks[i].output]
    for i in imported:
        _set_linear(model.blocks[i], params[i])
        _set_norm(model.blocks[i], params[i], None, None)
    used = 0
    if calibration is not None and len(calibration):
        calibration = calibration[:CALIBRATION_IMAGES]
        used = len(calibration)
        # Imported layers fire where the folder says whatever their statistics, so one pass
        # measures every layer's accumulators on its real inputs.
        stats = _pre_activation_stats(model, imported, calibration)
        for i in imported:
            mean, var = stats[i]
            _set_norm(model.blocks[i], params[i], mean, var)
    return WarmStart(folder=str(folder), network=network.spec.name, classes=list(network.classes),
                     output_layer="imported" if same_classes else "new", calibration_images=used)
