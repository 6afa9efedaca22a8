"""Float teacher networks and the distillation loss (`bnnctl train --distill WEIGHT`).

A binarized network learns from hard labels alone by a squared hinge; a float network of the same
geometry learns the same task more easily and ranks the wrong classes as well (a cucumber of
grade 2L that looks like an L). Distillation adds that ranking to the student's loss:
KL(teacher || student) on softened class probabilities, Hinton et al.'s "knowledge
distillation". The hinge term stays. A ranking only decides where the board takes an argmax of
popcount scores (cnvW1A1); trainer.check_loss refuses the other networks.

The teacher is trained at the start of the run on the run's own training split (never on the
validation or test images), with the same inputs the student sees (the CNV input codes q/128)
and the same augmentation, and saved as teacher.pt in the run folder. It is a training aid
only: nothing of it is exported.
"""

from __future__ import annotations

import hashlib
import io
import math
import time
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from bnnctl.errors import BnnctlError
from bnnctl.fsutil import atomic_write_bytes
from bnnctl.topology import NetworkSpec
from bnnctl.train.data import shuffled_batches

TEACHER_NAME = "teacher.pt"
TEACHER_FORMAT = 1

# Softening of both distributions in the distillation term (Hinton et al. used 1-20; 4 is a
# common middle). The term is multiplied by T^2 so its gradients keep the scale of a T = 1 loss.
TEMPERATURE = 4.0

# Teacher recipe: SGD with Nesterov momentum and weight decay, a one-cycle schedule (15 % warm-up,
# then cosine decay) - the usual recipe of small float CNNs on CIFAR-sized images; cross-entropy
# on hard labels.
TEACHER_LR = 0.05
TEACHER_MOMENTUM = 0.9
TEACHER_WEIGHT_DECAY = 5e-4
# Offset of the teacher's random streams from the student's, so the two never draw the same
# shuffles and crops.
TEACHER_SEED_OFFSET = 7919


class PhotoTeacher(nn.Module):
    """CNV's layer geometry in float: the same valid 3x3 convolutions, pools and widths, with
    float weights, batch-norm and ReLU (spec §1.2 gives the geometry). Same size as the student,
    so what it knows better comes from float arithmetic alone."""

    def __init__(self, network: NetworkSpec, num_classes: int):
        super().__init__()
        layers: list[nn.Module] = []
        last = len(network.layers) - 1
        for layer in network.layers:
            if layer.index == last:
                layers += [nn.Flatten(), nn.Linear(layer.in_features, num_classes)]
            elif layer.kind == "conv":
                layers += [nn.Conv2d(layer.in_channels, layer.rows, layer.kernel, bias=False),
                           nn.BatchNorm2d(layer.rows), nn.ReLU(inplace=True)]
                if layer.pool:
                    layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Flatten(), nn.Linear(layer.in_features, layer.rows, bias=False),
                           nn.BatchNorm1d(layer.rows), nn.ReLU(inplace=True)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def build_teacher(network: NetworkSpec, num_classes: int) -> nn.Module:
    """The teacher for a network that distillation applies to (trainer.check_loss: cnvW1A1).

    LFC had a small float CNN as its teacher (commit 503e39a); it taught the float ranking but
    cost the board's output bits 0.9 points on MNIST (README: Training), so LFC is refused.
    """
    if not network.is_cnv:
        raise ValueError(f"no teacher for {network.name}: distillation is for CNV networks")
    return PhotoTeacher(network, num_classes)


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, log_scale: torch.Tensor,
                      temperature: float = TEMPERATURE) -> torch.Tensor:
    """T^2 * KL(softmax(teacher / T) || softmax(student * exp(log_scale) / T)), batch mean.

    The student's scores live on the hinge loss's scale (targets +-1), far flatter than float
    logits; `log_scale` is a learned factor for this term alone (never exported), so neither
    loss has to give up its scale for the other. A factor on every score changes no argmax.
    """
    student_log = F.log_softmax(student * log_scale.exp() / temperature, dim=1)
    teacher_log = F.log_softmax(teacher / temperature, dim=1)
    return temperature ** 2 * F.kl_div(student_log, teacher_log, log_target=True, reduction="batchmean")


def teacher_outputs(teacher: nn.Module, x: torch.Tensor, batch: int = 500) -> torch.Tensor:
    """Teacher logits for network inputs x (eval mode, no gradient), in batches."""
    teacher.eval()
    with torch.no_grad():
        return torch.cat([teacher(part) for part in x.split(batch)])


def train_teacher(network: NetworkSpec, num_classes: int, epochs: int, batch_size: int, seed: int,
                  train_x: torch.Tensor, train_y: torch.Tensor, make_inputs: Callable,
                  augment: bool, epoch_generator: Callable[[int, int], torch.Generator],
                  device: torch.device, log: Callable[[str], None]) -> tuple[nn.Module, list[dict[str, Any]]]:
    """Train a float teacher on the run's training split; returns it and its per-epoch history.

    `make_inputs(stored_batch, generator_or_None)` turns stored images into network inputs (the
    student's `Inputs`, augmentation included); `epoch_generator(seed, epoch)` reseeds the
    random streams of one epoch as the student's epochs do.
    """
    torch.manual_seed(seed + TEACHER_SEED_OFFSET)
    teacher = build_teacher(network, num_classes).to(device)
    optimizer = torch.optim.SGD(teacher.parameters(), lr=TEACHER_LR, momentum=TEACHER_MOMENTUM,
                                nesterov=True, weight_decay=TEACHER_WEIGHT_DECAY)
    steps = math.ceil(len(train_y) / batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=TEACHER_LR, epochs=epochs,
                                                   steps_per_epoch=steps, pct_start=0.15,
                                                   anneal_strategy="cos")
    history = []
    for epoch in range(1, epochs + 1):
        t0 = time.time()
        generator = epoch_generator(seed + TEACHER_SEED_OFFSET, epoch)
        teacher.train()
        total = correct = seen = 0
        for idx in shuffled_batches(len(train_y), batch_size, generator, device):
            x = make_inputs(train_x[idx], generator if augment else None)
            logits = teacher(x)
            loss = F.cross_entropy(logits, train_y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += float(loss.detach()) * len(idx)
            correct += int((logits.argmax(1) == train_y[idx]).sum())
            seen += len(idx)
        seconds = time.time() - t0
        history.append({"epoch": epoch, "train_loss": total / max(seen, 1),
                        "train_error": 1 - correct / max(seen, 1), "seconds": round(seconds, 3)})
        log(f"teacher epoch {epoch:>{len(str(epochs))}}/{epochs}  loss {total / max(seen, 1):.4f}  "
            f"training error {100 * (1 - correct / max(seen, 1)):6.2f} %  {seconds:.1f} s")
    teacher.eval()
    teacher.requires_grad_(False)
    return teacher, history


def split_fingerprint(train_x: torch.Tensor, train_y: torch.Tensor) -> str:
    """sha256 of a run's training split (images and labels, in order). A teacher is only reused
    (--teacher) by a run with the same split: one trained on other images may have seen this
    run's validation images, and the best-epoch choice would no longer be a fair one."""
    digest = hashlib.sha256()
    for tensor in (train_x, train_y):
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def save_teacher(path, teacher: nn.Module, info: dict[str, Any]) -> None:
    buffer = io.BytesIO()
    torch.save({"format": TEACHER_FORMAT, "model": teacher.state_dict(), "info": info}, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_teacher(path, network: NetworkSpec, num_classes: int,
                 device: torch.device) -> tuple[nn.Module, dict[str, Any]]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
        teacher = build_teacher(network, num_classes)
        teacher.load_state_dict(state["model"])
    except Exception as exc:  # a damaged or foreign file; torch raises many kinds
        raise BnnctlError(f"{path}: not a readable bnnctl teacher for {network.name} with {num_classes} "
                          f"classes ({type(exc).__name__}); delete it and --resume to train it again") from None
    if state.get("format") != TEACHER_FORMAT:
        raise BnnctlError(f"{path}: teacher of another bnnctl version; delete it and --resume to retrain it")
    teacher.to(device).eval()
    teacher.requires_grad_(False)
    return teacher, state.get("info", {})
