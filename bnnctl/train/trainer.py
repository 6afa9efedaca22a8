"""One training run: data -> epochs (checkpoint each) -> best archive -> hardware-exact test.

The public entry point is `run_training(config, ...)`; the click command only parses options
and prints. Layout of a run folder:

    <dataset>-<network>.npz   archive of the best validation epoch, or with keep="last" of the
                              last one (spec §2 layout)
    classes.txt               class names, no trailing newline (spec §3.6)
    metrics.json              per-epoch figures, best epoch, config, versions, final test errors
    checkpoint.pt             state after the last completed epoch (for --resume)
"""

from __future__ import annotations

import json
import math
import platform
import tempfile
import time
from dataclasses import asdict, dataclass, field, fields
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from bnnctl import __version__
from bnnctl.errors import BnnctlError
from bnnctl.fsutil import atomic_write_bytes, atomic_write_text
from bnnctl.model import BinarizedNetwork
from bnnctl.topology import NetworkSpec, get_network
from bnnctl.train.averaging import WeightAverage
from bnnctl.train.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from bnnctl.train.data import TrainingData, load_training_data, shuffled_batches
from bnnctl.train.export import save_archive
from bnnctl.train.hwtest import HardwareResult, hardware_error
from bnnctl.train.inputs import augment, cnv_code_table, cnv_values, shift_digits
from bnnctl.train.layers import apply_constraints
from bnnctl.train.models import BnnModel
from bnnctl.train.recipe import KEEP_CHOICES, PRECISIONS, recipe_for, vertical_flips
from bnnctl.train.teacher import (
    TEACHER_NAME,
    distillation_loss,
    load_teacher,
    save_teacher,
    split_fingerprint,
    teacher_outputs,
    train_teacher,
)
from bnnctl.train.warmstart import CALIBRATION_IMAGES, load_folder_network, warm_start


EVAL_BATCH = 500


class TrainingInterrupted(BnnctlError):
    """Ctrl-C: the last completed epoch is saved; exit code of SIGINT."""

    exit_code = 130


@dataclass
class TrainConfig:
    dataset: str  # cucumber9 | cifar10 | mnist | path of an image folder
    network: str
    epochs: int
    batch_size: int
    lr: float
    seed: int = 1
    valid_fraction: float = 0.1
    augment: bool = False  # photos: random crop + mirror; digits: random shift
    vflip: bool = False  # with augment: vertical flips too
    rotate: float = 0.0  # photos, with augment: random turns up to this many degrees
    jitter: float = 0.0  # photos, with augment: random brightness/colour-balance factors
    hidden_dropout: float | None = None  # after hidden dense layers; None = the model's default
    loss: str = "hinge"  # a key of LOSSES
    precision: str = "fp32"  # one of PRECISIONS: number format of the training steps' products
    keep: str = "best"  # one of KEEP_CHOICES: the epoch whose weights are exported
    ema: float = 0.0  # decay of the weight average that is validated and exported; 0: off
    distill: float = 0.0  # weight of the distillation term (teacher.py); 0: no teacher
    teacher_epochs: int = 0  # epochs of the float teacher (with distill)
    teacher: str | None = None  # teacher.pt of another run on the same split, instead of training one
    init_from: str | None = None  # parameter folder whose network is the starting point (warmstart.py)
    data_dir: str | None = None
    limit: int | None = None  # test-only: use the first N training images
    test_limit: int | None = None  # test-only: use the first N test images (default: limit)

    @classmethod
    def from_recipe(cls, dataset: str, network: str, *, epochs: int | None = None,
                    batch_size: int | None = None, lr: float | None = None, augment: bool | None = None,
                    vflip: bool | None = None, hidden_dropout: float | None = None, loss: str | None = None,
                    rotate: float | None = None, jitter: float | None = None,
                    teacher_epochs: int | None = None, **fixed: Any) -> "TrainConfig":
        """The run the recipe of the network's topology describes (recipe.py), with the values
        given here (not None) in its place; `fixed` passes the remaining fields through."""
        recipe = recipe_for(get_network(network).topology)
        return cls(dataset=dataset, network=network, epochs=epochs or recipe.epochs,
                   batch_size=batch_size or recipe.batch_size, lr=lr or recipe.lr,
                   augment=recipe.augment if augment is None else augment,
                   vflip=vertical_flips(dataset) if vflip is None else vflip,
                   hidden_dropout=recipe.hidden_dropout if hidden_dropout is None else hidden_dropout,
                   loss=loss or recipe.loss, rotate=recipe.rotate if rotate is None else rotate,
                   jitter=recipe.jitter if jitter is None else jitter,
                   teacher_epochs=teacher_epochs or recipe.teacher_epochs, **fixed)

    @property
    def dataset_label(self) -> str:
        """Name used in file names: the dataset, or the image folder's name."""
        path = Path(self.dataset)
        return path.name if path.is_dir() and self.dataset != path.name else self.dataset


# Options that define the run; --resume refuses to change them because the continued run
# would no longer be the one the checkpoint started (data split, schedule, model size).
FIXED_ON_RESUME = ("dataset", "network", "epochs", "batch_size", "lr", "seed", "valid_fraction",
                   "augment", "vflip", "rotate", "jitter", "hidden_dropout", "loss", "precision",
                   "keep", "ema", "distill", "teacher_epochs", "teacher", "init_from", "limit",
                   "test_limit")


@dataclass
class EpochTest:
    """Test figures of one epoch's weights."""

    epoch: int
    float_error: float
    hardware_error: float
    hardware_errors: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RunResult:
    out_dir: Path
    npz: Path
    keep: str  # which epoch the archive holds: "best" (validation) or "last"
    kept_epoch: int
    best_epoch: int
    best_valid_error: float
    float_test_error: float
    hw_test_error: float
    test_split: str
    rule: str
    epochs_run: int
    seconds: float
    device: str
    classes: list[str] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    # the best-validation and the last epoch's test figures, whichever was kept (for comparison)
    compared: dict[str, EpochTest] = field(default_factory=dict)
    teacher: dict[str, Any] | None = None  # with --distill: the float teacher's figures
    init_from: dict[str, Any] | None = None  # with --init-from: what was imported (warmstart.py)


def squared_hinge(outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """BNN-PYNQ loss (spec §2.3): mean(max(0, 1 - t*y)^2) with targets t = 2*onehot - 1."""
    targets = F.one_hot(labels, outputs.shape[1]).to(outputs.dtype) * 2 - 1
    return torch.clamp(1 - targets * outputs, min=0).pow(2).mean()


def cross_entropy(outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Softmax cross-entropy on the last batch-norm's output; its gamma is the learned inverse
    temperature. Only for networks the board decides by argmax (see `check_loss`)."""
    return F.cross_entropy(outputs, labels)


LOSSES = {"hinge": squared_hinge, "cross-entropy": cross_entropy}  # keys: recipe.LOSS_NAMES


def check_loss(config: "TrainConfig", spec: NetworkSpec) -> None:
    """Cross-entropy and distillation only rank the scores; the board decides by rank alone for
    popcount CNV scores (W1A1). LFC's board reads the signs of its output bits and signed CNV
    scores need the top one > 0 (spec §4.4), which the hinge's per-class targets train and a
    softmax does not."""
    if config.loss not in LOSSES:
        raise BnnctlError(f"--loss: expected one of {', '.join(LOSSES)}, got {config.loss!r}")
    if config.loss != "hinge" and spec.output_kind != "popcounts":
        raise BnnctlError(f"--loss {config.loss}: only for networks whose board decision is an argmax "
                          f"of popcount scores (cnvW1A1); {spec.name} needs the hinge loss")
    # Measured on MNIST lfcW1A1: with --distill the float ranking stayed as good (1.46 % argmax
    # error) but the board's output bits fell 0.9 points behind it (2.36 %), because a softened
    # ranking says nothing about each output's sign. Signed CNV scores are judged by sign too.
    if config.distill > 0 and spec.output_kind != "popcounts":
        raise BnnctlError(f"--distill: only for networks whose board decision is an argmax of popcount "
                          f"scores (cnvW1A1); {spec.name}'s board reads the signs of its outputs, which "
                          "distillation does not train")


def check_augmentation(config: "TrainConfig", spec: NetworkSpec) -> None:
    """Turns and colour jitter act on photos inside the crop-and-mirror augmentation; digits
    only get shifts (a turned or recoloured bit pattern is not what the board's binarised
    input of a real digit looks like)."""
    for option, value in (("--rotate", config.rotate), ("--jitter", config.jitter)):
        if not value:
            continue
        if not spec.is_cnv:
            raise BnnctlError(f"{option}: only for photo networks (CNV); {spec.name} digits are only "
                              "shifted (--augment)")
        if not config.augment:
            raise BnnctlError(f"{option}: works inside the photo augmentation, which --no-augment "
                              "turns off; drop one of the two")
    if not 0 <= config.rotate <= 180:
        raise BnnctlError(f"--rotate: expected 0..180 degrees, got {config.rotate}")
    if not 0 <= config.jitter < 1:
        raise BnnctlError(f"--jitter: expected a fraction in [0, 1), got {config.jitter}")
    if config.hidden_dropout is not None and not 0 <= config.hidden_dropout < 1:
        raise BnnctlError(f"--hidden-dropout: expected a probability in [0, 1), got {config.hidden_dropout}")


def check_choices(config: "TrainConfig", device: torch.device) -> None:
    """Options with a fixed set of values (the CLI's click choices, checked again for callers of
    run_training), the --ema decay, and bf16 on a GPU that lacks it."""
    if config.keep not in KEEP_CHOICES:
        raise BnnctlError(f"--keep {config.keep}: expected one of {', '.join(KEEP_CHOICES)}")
    if config.precision not in PRECISIONS:
        raise BnnctlError(f"--precision {config.precision}: expected one of {', '.join(PRECISIONS)}")
    if not (config.ema == 0 or 0 < config.ema < 1):
        raise BnnctlError(f"--ema {config.ema}: expected a decay between 0 and 1 (e.g. 0.999), or 0 for none")
    if not (math.isfinite(config.distill) and config.distill >= 0):
        raise BnnctlError(f"--distill {config.distill}: expected a weight >= 0 (e.g. 1), or 0 for no teacher")
    if config.distill and config.teacher_epochs < 1:
        raise BnnctlError(f"--teacher-epochs {config.teacher_epochs}: expected at least 1")
    if config.teacher and not config.distill:
        raise BnnctlError("--teacher: goes with --distill WEIGHT (the teacher is only used for distillation)")
    if config.precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise BnnctlError("--precision bf16: this GPU has no bfloat16 support; use --precision fp32")


def training_autocast(config: "TrainConfig", device: torch.device):
    """Context of one training step's forward pass.

    bf16: convolutions and matrix products take bfloat16 operands. The quantised weights and
    activations (+-1, 0) and CNV's input codes q/128 (8 significant bits) are exact in bf16
    and the products accumulate in fp32, so only the stored pre-activations are rounded to 8
    significant bits. That noise is not free: on CUCUMBER-9 cnvW1A1 it cost about 2 test-error
    points (two seeds, README), so bf16 is an option, not the default. Evaluation (validation, float test error)
    always runs in fp32. Speed on a Zen 4 CPU (AVX512-BF16): README, Training speed.
    """
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.precision == "bf16")


def train_step(model: BnnModel, optimizer: torch.optim.Optimizer, loss_fn: Callable, x: torch.Tensor,
               y: torch.Tensor, config: "TrainConfig", device: torch.device,
               extra_loss: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """One optimizer step on one batch (also what benchmarks/bench_train_step.py times).
    `extra_loss(scores)` is added to the loss (the distillation term)."""
    with training_autocast(config, device):
        scores = model(x)
    loss = loss_fn(scores.float() - model.score_offset, y)
    if extra_loss is not None:
        loss = loss + extra_loss(scores.float())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    apply_constraints(model)
    return loss


def epoch_generators(seed: int, epoch: int) -> torch.Generator:
    """Reseed every random stream of one epoch from (seed, epoch) - see checkpoint.py for why.

    Returns the CPU generator used for shuffling and augmentation; dropout uses the global
    torch generator, which is reseeded here as well.
    """
    base = seed * 1_000_003 + epoch
    torch.manual_seed(base)
    return torch.Generator().manual_seed(base + 500_000)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise BnnctlError("--device cuda: PyTorch sees no CUDA device here (use --device cpu or auto)")
    return torch.device(name)


def make_reproducible(device: torch.device) -> None:
    """cuDNN picks its fastest (and partly non-deterministic) kernels by default; a resumed run
    must repeat the uninterrupted one bit for bit, so ask for deterministic ones."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True


class Inputs:
    """Turns a batch of stored training inputs into network inputs on the device."""

    def __init__(self, spec: NetworkSpec, device: torch.device, vflip: bool = False,
                 rotate: float = 0.0, jitter: float = 0.0):
        self.is_cnv = spec.is_cnv
        self.photo_options = {"vflip": vflip, "rotate": rotate, "jitter": jitter}
        self.table = cnv_code_table().to(device) if spec.is_cnv else None

    def __call__(self, batch: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        if not self.is_cnv:
            # LFC inputs are stored as +-1 already; their augmentation is a small shift.
            return batch if generator is None else shift_digits(batch, generator)
        if generator is not None:
            batch = augment(batch, generator, **self.photo_options)
        return cnv_values(batch, self.table)


def board_classes(model: BnnModel, outputs: torch.Tensor) -> torch.Tensor:
    """The class the board's multi-image call answers for these float outputs (spec §4.4).

    Valid where the float output carries what the hardware decides on: LFC's output bits are
    `output >= 0` (the 1-bit quantiser), signed CNV scores have the sign of the accumulator.
    W1A1 CNV scores are popcounts (> 0 in practice), so argmax is the board's answer there.
    """
    from bnnctl.infer.rules import cnv_multiple, lfc_multiple

    out = outputs.detach().cpu().numpy()
    kind = model.network.output_kind
    if kind == "bits":
        bits = (out >= 0).astype(np.uint64) << np.arange(out.shape[1], dtype=np.uint64)
        decided = lfc_multiple(bits.sum(axis=1, dtype=np.uint64), out.shape[1])
    elif kind == "signed":
        decided = cnv_multiple(out)
    else:
        decided = out.argmax(axis=1)
    return torch.from_numpy(np.asarray(decided, dtype=np.int64)).to(outputs.device)


def evaluate(model: BnnModel, inputs: Inputs, x: torch.Tensor, y: torch.Tensor,
             board_rule: bool = False) -> float:
    """Float-model error: argmax of the last batch-norm's output, or (board_rule) the class the
    board's decision rule would take from it (`board_classes`)."""
    if len(y) == 0:
        return float("nan")
    model.eval()
    wrong = 0
    with torch.no_grad():
        for start in range(0, len(y), EVAL_BATCH):
            out = model(inputs(x[start:start + EVAL_BATCH], None))
            predicted = board_classes(model, out) if board_rule else out.argmax(1)
            wrong += int((predicted != y[start:start + EVAL_BATCH]).sum())
    return wrong / len(y)


def versions() -> dict[str, str]:
    return {"bnnctl": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version(), "platform": platform.platform()}


def default_out_dir(config: TrainConfig) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{config.dataset_label}-{config.network}-{stamp}"


def _prepare_out_dir(out: Path, resume: bool) -> None:
    """Create the run folder (or check it for --resume) before any epoch runs."""
    if resume:
        return  # load_checkpoint reports a missing folder/checkpoint
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise BnnctlError(f"{out}: already exists and is not empty; choose another --out, or add "
                          "--resume to continue the run in it")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise BnnctlError(f"{out}: cannot write the run folder ({exc.strerror or exc})") from None


class Run:
    """State of one run; `train()` does the epochs, `finish()` exports and tests."""

    def __init__(self, config: TrainConfig, out: Path, device: torch.device, data: TrainingData,
                 log: Callable[[str], None], progress: bool, start: BinarizedNetwork | None = None):
        """`start`: the --init-from folder's network, loaded into the model (a new run only;
        a resumed one gets its weights from the checkpoint)."""
        self.config = config
        self.out = out
        self.device = device
        self.data = data
        self.log = log
        self.progress = progress
        self.spec = get_network(config.network)
        self.loss_fn = LOSSES[config.loss]
        self.npz = out / f"{config.dataset_label}-{config.network}.npz"
        self.inputs = Inputs(self.spec, device, vflip=config.vflip, rotate=config.rotate,
                             jitter=config.jitter)
        torch.manual_seed(config.seed)  # model initialisation
        self.model = BnnModel(self.spec, len(data.classes), hidden_dropout=config.hidden_dropout).to(device)
        self.init_info: dict[str, Any] | None = None
        if start is not None:
            calibration = self.inputs(data.train_x[:CALIBRATION_IMAGES].to(device), None)
            self.init_info = warm_start(self.model, start, config.init_from, data.classes,
                                        calibration).as_dict()
        # --distill: the distillation term's own score scale (teacher.distillation_loss), trained
        # with the weights but never exported. Without it the optimizer is built exactly as
        # before, so runs without --distill repeat earlier runs bit for bit.
        self.distill_log_scale = torch.zeros((), device=device, requires_grad=True) if config.distill else None
        params = self.model.parameters() if self.distill_log_scale is None else \
            [{"params": list(self.model.parameters())}, {"params": [self.distill_log_scale]}]
        self.optimizer = torch.optim.Adam(params, lr=config.lr)
        self.teacher: torch.nn.Module | None = None
        self.teacher_info: dict[str, Any] | None = None
        self.teacher_train_logits: torch.Tensor | None = None  # cached when inputs are not augmented
        # Cosine decay to zero, stepped once per epoch (recipe.py).
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=config.epochs)
        self.average = WeightAverage(self.model, config.ema) if config.ema else None
        self.epoch = 0  # completed epochs
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] = {"epoch": 0, "valid_error": math.inf, "state": None}
        self.train_x = data.train_x.to(device)
        self.train_y = data.train_y.to(device)
        self.valid_x = data.valid_x.to(device)
        self.valid_y = data.valid_y.to(device)

    # -- checkpointing -------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        return {"config": asdict(self.config), "epoch": self.epoch, "classes": self.data.classes,
                "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "history": self.history,
                "best": self.best,
                "average": self.average.state_dict() if self.average else None,
                "teacher_info": self.teacher_info, "init_info": self.init_info,
                "distill_log_scale": None if self.distill_log_scale is None else self.distill_log_scale.detach().cpu()}

    def restore(self, state: dict[str, Any]) -> None:
        if state["classes"] != self.data.classes:
            raise BnnctlError(f"{self.out}: the checkpoint was trained on classes {state['classes']}, "
                              f"the data now has {self.data.classes}")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.epoch = state["epoch"]
        self.history = state["history"]
        self.best = state["best"]
        if self.average:
            self.average.load_state_dict(state["average"])
        if self.distill_log_scale is not None:
            with torch.no_grad():
                self.distill_log_scale.copy_(state["distill_log_scale"])
        self.teacher_info = state.get("teacher_info")  # the teacher itself is loaded when training goes on
        self.init_info = state.get("init_info")

    # -- teacher (--distill) -------------------------------------------------------------------

    def prepare_teacher(self) -> None:
        """Load the run's teacher.pt (or --teacher's, copied there), or train the teacher and save
        it there (teacher.py)."""
        path = self.out / TEACHER_NAME
        classes = len(self.data.classes)
        if not path.is_file() and self.config.teacher:
            # checked by run_training before anything was written, and again below as the copy;
            # the copy is what --resume finds
            atomic_write_bytes(path, Path(self.config.teacher).read_bytes())
        if path.is_file():
            self.teacher, self.teacher_info = load_split_teacher(path, self.spec, self.data, self.device, str(path))
            self.log(f"teacher: loaded {self.config.teacher or path}")
        else:
            cfg = self.config
            self.log(f"training the float teacher ({cfg.teacher_epochs} epochs) for distillation")
            t0 = time.time()
            self.teacher, history = train_teacher(
                self.spec, classes, cfg.teacher_epochs, cfg.batch_size, cfg.seed, self.train_x,
                self.train_y, self.inputs, cfg.augment, epoch_generators, self.device, self.log)
            valid = self._teacher_error(self.valid_x, self.valid_y)
            test = self._teacher_error(*self.test_tensors)
            self.teacher_info = {"model": type(self.teacher).__name__, "epochs": cfg.teacher_epochs,
                                 "valid_error": valid, "test_error": test,
                                 "split": split_fingerprint(self.train_x, self.train_y),
                                 "seconds": round(time.time() - t0, 1), "history": history}
            save_teacher(path, self.teacher, self.teacher_info)
            self.log(f"teacher: validation error {100 * valid:.2f} %, test error {100 * test:.2f} % "
                     "(float, a training aid only; not exported)")
        if not self.config.augment:
            # Unchanged inputs every epoch: the teacher's answers are the same too.
            self.teacher_train_logits = teacher_outputs(self.teacher, self.inputs(self.train_x, None))

    def _teacher_error(self, x: torch.Tensor, y: torch.Tensor) -> float:
        if len(y) == 0:
            return float("nan")
        logits = teacher_outputs(self.teacher, self.inputs(x, None))
        return float((logits.argmax(1) != y).float().mean())

    def distill_term(self, x: torch.Tensor, idx: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """The distillation term for one batch (x: network inputs of training images idx)."""
        if self.teacher_train_logits is not None:
            target = self.teacher_train_logits[idx]
        else:
            target = teacher_outputs(self.teacher, x)
        weight = self.config.distill
        return lambda scores: weight * distillation_loss(scores, target, self.distill_log_scale)

    # -- training ------------------------------------------------------------------------------

    @property
    def evaluated(self) -> BnnModel:
        """The weights that are validated, kept and exported: the optimizer's, or with --ema
        their running average."""
        return self.average.model if self.average else self.model

    def train_epoch(self) -> float:
        from tqdm import tqdm

        cfg = self.config
        generator = epoch_generators(cfg.seed, self.epoch + 1)
        batches = shuffled_batches(len(self.train_y), cfg.batch_size, generator, self.device)
        self.model.train()
        total, seen = 0.0, 0
        bar = tqdm(total=len(batches), desc=f"epoch {self.epoch + 1}/{cfg.epochs}", unit="batch",
                   leave=False, disable=not self.progress, dynamic_ncols=True)
        try:
            for idx in batches:
                x = self.inputs(self.train_x[idx], generator if cfg.augment else None)
                extra = self.distill_term(x, idx) if cfg.distill else None
                loss = train_step(self.model, self.optimizer, self.loss_fn, x, self.train_y[idx], cfg,
                                  self.device, extra_loss=extra)
                if self.average:
                    self.average.update(self.model)
                total += float(loss.detach()) * len(idx)
                seen += len(idx)
                bar.update(1)
                bar.set_postfix(loss=f"{total / seen:.4f}", refresh=False)
        finally:
            bar.close()
        return total / max(seen, 1)

    def train(self) -> None:
        cfg = self.config
        if cfg.distill and self.teacher is None and self.epoch < cfg.epochs:
            self.prepare_teacher()
            # a checkpoint before epoch 1, so Ctrl-C from here on can be resumed without
            # training the teacher again (it is in teacher.pt)
            save_checkpoint(self.out / CHECKPOINT_NAME, self.state())
            self.write_metrics(status="training")
        while self.epoch < cfg.epochs:
            t0 = time.time()
            lr = self.optimizer.param_groups[0]["lr"]
            loss = self.train_epoch()
            # The best epoch is the one the board does best on, so validate with its rule.
            valid_error = evaluate(self.evaluated, self.inputs, self.valid_x, self.valid_y, board_rule=True)
            self.scheduler.step()
            self.epoch += 1
            seconds = time.time() - t0
            improved = valid_error < self.best["valid_error"]
            if improved:
                self.best = {"epoch": self.epoch, "valid_error": valid_error,
                             "state": {k: v.detach().cpu().clone() for k, v in self.evaluated.state_dict().items()}}
            if improved or cfg.keep == "last":
                save_archive(self.evaluated, self.npz)  # a usable archive even if the run is cut short
            self.history.append({"epoch": self.epoch, "train_loss": loss, "valid_error": valid_error,
                                 "lr": lr, "seconds": round(seconds, 3)})
            save_checkpoint(self.out / CHECKPOINT_NAME, self.state())
            self.write_metrics(status="training")
            self.log(f"epoch {self.epoch:>{len(str(cfg.epochs))}}/{cfg.epochs}  loss {loss:.4f}  "
                     f"valid error {100 * valid_error:6.2f} %  best {100 * self.best['valid_error']:.2f} % "
                     f"(epoch {self.best['epoch']})  lr {lr:.2e}  {seconds:.1f} s")

    # -- results -------------------------------------------------------------------------------

    def write_metrics(self, status: str, final: dict[str, Any] | None = None) -> None:
        metrics = {
            "status": status,
            "dataset": self.config.dataset_label,
            "network": self.config.network,
            "classes": self.data.classes,
            "config": asdict(self.config),
            "device": str(self.device),
            "torch_threads": torch.get_num_threads(),
            "train_images": len(self.train_y),
            "valid_images": len(self.valid_y),
            "epochs_completed": self.epoch,
            "best_epoch": self.best["epoch"],
            "best_valid_error": None if self.best["epoch"] == 0 else self.best["valid_error"],
            "epochs": self.history,
            "versions": versions(),
        }
        if self.teacher_info is not None:
            metrics["teacher"] = self.teacher_info
        if self.init_info is not None:
            metrics["init_from"] = self.init_info
        if final:
            metrics["test"] = final
        atomic_write_text(self.out / "metrics.json", json.dumps(metrics, indent=2) + "\n")

    @cached_property
    def test_tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Test inputs and labels on the device, built once for however many epochs are tested."""
        return (self.data.test_inputs().to(self.device),
                torch.from_numpy(self.data.test_labels).to(self.device))

    def test_weights(self, state: dict[str, Any], epoch: int, npz: Path) -> tuple[EpochTest, HardwareResult]:
        """Float and hardware-exact test errors of one epoch's weights, exported to `npz`."""
        self.model.load_state_dict(state)
        save_archive(self.model, npz)
        float_error = evaluate(self.model, self.inputs, *self.test_tensors)
        hw = hardware_error(npz, self.spec, self.data.classes, self.data.test_pixels, self.data.test_labels)
        return EpochTest(epoch=epoch, float_error=float_error, hardware_error=hw.error,
                         hardware_errors=hw.errors), hw

    def finish(self) -> RunResult:
        """Kept epoch's weights -> archive, float and hardware-exact test errors; the other
        candidate epoch (best validation / last) is tested too, for the report only."""
        from bnnctl.convert.folder import classes_text

        last_state = {k: v.detach().cpu().clone() for k, v in self.evaluated.state_dict().items()}
        states = {"best": (self.best["state"], self.best["epoch"]), "last": (last_state, self.epoch)}
        keep = self.config.keep
        other = "last" if keep == "best" else "best"
        compared: dict[str, EpochTest] = {}
        if states[other][1] != states[keep][1]:
            with tempfile.TemporaryDirectory(dir=self.out) as scratch:
                compared[other], _ = self.test_weights(*states[other], Path(scratch) / self.npz.name)
        # last, so that the model and the archive end with the kept weights
        compared[keep], hw = self.test_weights(*states[keep], self.npz)
        compared.setdefault(other, compared[keep])
        kept = compared[keep]
        atomic_write_text(self.out / "classes.txt", classes_text(self.data.classes))
        seconds = sum(h["seconds"] for h in self.history)
        final = {"split": self.data.test_split, "images": hw.count, "rule": hw.rule, "engine": hw.engine,
                 "keep": keep, "epoch": kept.epoch,
                 "hardware_error": kept.hardware_error, "hardware_errors": kept.hardware_errors,
                 "float_error": kept.float_error,
                 "compared": {name: compared[name].as_dict() for name in KEEP_CHOICES},
                 "train_seconds": round(seconds, 1),
                 "seconds_per_epoch": round(seconds / max(len(self.history), 1), 2)}
        self.write_metrics(status="done", final=final)
        return RunResult(out_dir=self.out, npz=self.npz, keep=keep, kept_epoch=kept.epoch,
                         best_epoch=self.best["epoch"], best_valid_error=self.best["valid_error"],
                         float_test_error=kept.float_error, hw_test_error=kept.hardware_error,
                         test_split=self.data.test_split, rule=hw.rule,
                         epochs_run=self.epoch, seconds=seconds, device=str(self.device),
                         classes=list(self.data.classes), history=self.history, compared=compared,
                         teacher=self._teacher_summary(), init_from=self.init_info)

    def _teacher_summary(self) -> dict[str, Any] | None:
        if self.teacher_info is None:
            return None
        return {k: v for k, v in self.teacher_info.items() if k not in ("history", "split")}


def _check_resume_config(config: TrainConfig, stored: dict[str, Any], explicit: set[str]) -> TrainConfig:
    """--resume continues the stored run; options given again must agree with it."""
    for name in FIXED_ON_RESUME:
        if name in explicit and getattr(config, name) != stored.get(name):
            raise BnnctlError(f"--resume: the run was started with {name}={stored.get(name)!r}, "
                              f"not {getattr(config, name)!r}; leave the option out to continue it")
    # A checkpoint from before an option existed ran with that option's default.
    defaults = {f.name: f.default for f in fields(TrainConfig)}
    kept = {k: stored.get(k, defaults[k]) for k in FIXED_ON_RESUME}
    return TrainConfig(**{**asdict(config), **kept})


def load_split_teacher(path: Path, spec: NetworkSpec, data: TrainingData, device: torch.device,
                       what: str) -> tuple[torch.nn.Module, dict[str, Any]]:
    """A saved teacher of this network, refused unless it was trained on this run's training split
    (`what` names it in errors: the option or the file)."""
    if not path.is_file():
        raise BnnctlError(f"{what}: no such file (expected the teacher.pt of an earlier --distill run)")
    teacher, info = load_teacher(path, spec, len(data.classes), device)
    if info.get("split") != split_fingerprint(data.train_x, data.train_y):
        raise BnnctlError(f"{what}: trained on other training images (dataset, --seed, --valid-fraction "
                          "or --limit differ), so it may have seen this run's validation images; use a "
                          "teacher from a run with the same options")
    return teacher, info


def run_training(config: TrainConfig, out: Path | None = None, device: str = "auto", resume: bool = False,
                 explicit: set[str] | None = None, log: Callable[[str], None] = print,
                 progress: bool = True) -> RunResult:
    """Train (or continue) a run and return its figures. Raises BnnctlError on user errors."""
    torch_device = resolve_device(device)
    make_reproducible(torch_device)
    if out is None:
        out = default_out_dir(config)
    out = Path(out)
    stored = None
    if resume:
        stored = load_checkpoint(out / CHECKPOINT_NAME)
        config = _check_resume_config(config, stored["config"], explicit or set())
    spec = get_network(config.network)
    check_loss(config, spec)
    check_augmentation(config, spec)
    check_choices(config, torch_device)
    # Data errors are reported before anything is written (nothing half-done on bad input).
    data = load_training_data(config, spec)
    if config.teacher and not resume:  # before anything is written
        load_split_teacher(Path(config.teacher), spec, data, torch_device, f"--teacher {config.teacher}")
    start = None
    if config.init_from and not resume:  # before anything is written
        start = load_folder_network(config.init_from, config.network)
    _prepare_out_dir(out, resume)
    run = Run(config, out, torch_device, data, log, progress, start=start)
    if run.init_info is not None:
        if run.init_info["output_layer"] == "imported":
            # the starting point's own figure; low if the folder was trained on these images
            valid = evaluate(run.model, run.inputs, run.valid_x, run.valid_y, board_rule=True)
            run.init_info["valid_error"] = valid
            what = f"all layers (validation error {100 * valid:.2f} % before training)"
        else:
            what = f"all but the output layer (the folder has classes {', '.join(start.classes)})"
        log(f"starting from {config.init_from}: {what}")
    if stored is not None:
        run.restore(stored)
        log(f"resuming {out} after epoch {run.epoch}/{config.epochs}")
    else:
        run.write_metrics(status="training")
    try:
        run.train()
    except KeyboardInterrupt:
        run.write_metrics(status="interrupted")
        raise TrainingInterrupted(f"interrupted; epoch {run.epoch} is saved in {out} - continue with "
                                  f"`bnnctl train {config.dataset} --out {out} --resume`") from None
    return run.finish()
