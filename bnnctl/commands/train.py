"""`bnnctl train`: train a binarized CNV/LFC network and export it in the BNN-PYNQ .npz layout."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from bnnctl.commands.common import JSON_OPTION, emit_json, network_option
from bnnctl.errors import BnnctlError
from bnnctl.state import load_state, update_state
from bnnctl.train.recipe import KEEP_CHOICES, LOSS_NAMES, PRECISIONS

DEFAULT_NETWORK = {"cucumber9": "cnvW1A1", "cifar10": "cnvW1A1", "mnist": "lfcW1A1"}


def _explicit(ctx: click.Context) -> set[str]:
    """Options the user typed (not defaults): --resume must not silently change them."""
    return {name for name in ctx.params
            if ctx.get_parameter_source(name) not in (click.core.ParameterSource.DEFAULT, None)}


@click.command()
@click.argument("dataset", metavar="DATASET")
@network_option(help="Network to train. Default: cnvW1A1 for cucumber9, cifar10 and image folders, "
                     "lfcW1A1 for mnist.")
@click.option("--epochs", type=click.IntRange(min=1), help="Epochs to train. Default: 200 (CNV), 150 (LFC).")
@click.option("--batch-size", type=click.IntRange(min=2), help="Images per step. Default: 50 (CNV), 100 (LFC).")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True),
              help="Adam learning rate at the start of the cosine decay. Default: 0.02 (CNV), 0.01 (LFC).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="auto uses CUDA when PyTorch sees a GPU.")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Folder holding the datasets. Default: $BNNCTL_DATA, else the user cache "
                   "(downloaded on first use).")
@click.option("-o", "--out", type=click.Path(path_type=Path),
              help="Run folder. Default: runs/<dataset>-<network>-<timestamp>; with --resume, the last run.")
@click.option("--resume", is_flag=True, help="Continue the interrupted run in --out from its last completed epoch.")
@click.option("--seed", type=int, default=1, show_default=True,
              help="Seed of initialisation, validation split, shuffling, augmentation and dropout.")
@click.option("--valid-fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.1,
              show_default=True, help="Part of the training images held out to pick the best epoch.")
@click.option("--augment/--no-augment", default=None,
              help="Random changes to each training image every epoch: photos are cropped from a "
                   "white-padded copy and mirrored, digits shifted by up to 2 pixels. Default: the "
                   "recipe's (see the README's Training section).")
@click.option("--vflip/--no-vflip", default=None,
              help="Photos: also flip training images upside down at random (for objects seen from "
                   "above, where up and down carry no meaning). Default: the dataset's setting "
                   "(configs/datasets), off for image folders.")
@click.option("--rotate", type=float, metavar="DEGREES", default=None,
              help="Photos: also turn training images by a random angle of up to this many degrees "
                   "(white corners). Default: the recipe's (0: none).")
@click.option("--jitter", type=float, metavar="FRACTION", default=None,
              help="Photos: also scale each training image's brightness by 1 +- FRACTION and each "
                   "colour channel by 1 +- FRACTION/2, at random (lighting, white balance). "
                   "Default: the recipe's (0: none).")
@click.option("--hidden-dropout", type=float, metavar="P", default=None,
              help="Dropout after every hidden fully connected layer (LFC: all hidden layers, CNV: "
                   "the two before the output). Default: 0.2 for LFC, none for CNV.")
@click.option("--loss", type=click.Choice(LOSS_NAMES), default=None,
              help="Training loss: the squared hinge of BNN-PYNQ, or softmax cross-entropy (cnvW1A1 "
                   "only: the one network whose board decision is a plain argmax). Default: the "
                   "recipe's (see the README's Training section).")
@click.option("--precision", type=click.Choice(PRECISIONS), default="fp32", show_default=True,
              help="Number format of the training steps' products: bf16 runs them in bfloat16 "
                   "(exact for the +-1 weights and activations, sums rounded to 8 bits), 1.6-1.8x "
                   "faster per step on CPUs with AVX512-BF16, but measured about 2 points less "
                   "accurate on CUCUMBER-9 (README: Training). Validation and the reported "
                   "errors are always computed in fp32.")
@click.option("--keep", type=click.Choice(KEEP_CHOICES), default="best", show_default=True,
              help="Which epoch's weights the archive holds: the one with the lowest validation "
                   "error, or the last one of the schedule (the learning rate has decayed to zero "
                   "there). Both are tested at the end and reported side by side.")
@click.option("--ema", type=float, metavar="DECAY", default=0.0,
              help="Validate, keep and export a moving average of the weights (and batch-norm "
                   "statistics) instead of the optimizer's own: after every step the average moves "
                   "1 - DECAY of the way to the current ones (e.g. 0.999). Default: 0 (off; see "
                   "the README's Training section for what it measured).")
@click.option("--distill", type=float, metavar="WEIGHT", default=0.0,
              help="cnvW1A1 only: first train a float teacher (the same layers in float) on the same "
                   "training images, then add WEIGHT x its distillation term (softened class "
                   "probabilities, KL divergence) to the hinge loss (e.g. 1). The teacher is saved as "
                   "teacher.pt in the run folder and never exported. Default: 0 (off; it measured no "
                   "better on CUCUMBER-9, see the README's Training section).")
@click.option("--teacher-epochs", type=click.IntRange(min=1), default=None,
              help="Epochs of the float teacher with --distill. Default: 60.")
@click.option("--teacher", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="With --distill: use this teacher.pt of an earlier run instead of training a new "
                   "teacher. It must come from a run on the same training images (same dataset, "
                   "--seed and --valid-fraction), which is checked.")
@click.option("--init-from", type=click.Path(file_okay=False, path_type=Path), default=None,
              metavar="FOLDER",
              help="Start from the network in this parameter folder (e.g. BNN-PYNQ's "
                   "bnn/params/cifar10/cnvW1A1) instead of random weights: its weights and "
                   "thresholds become the starting point, batch-norm statistics are measured on "
                   "this run's training images. With other classes than the folder's, the output "
                   "layer starts from random weights (transfer learning). Must be a folder of "
                   "--network.")
@click.option("--limit", type=click.IntRange(min=1), hidden=True,
              help="Test/debug only: use the first N training images (and N test images).")
@click.option("--test-limit", type=click.IntRange(min=1), hidden=True,
              help="Test/debug only: use the first N test images.")
@click.option("--threads", type=click.IntRange(min=1), hidden=True,
              help="CPU threads for PyTorch (default: PyTorch's choice).")
@JSON_OPTION
@click.pass_context
def train(ctx, dataset, network, epochs, batch_size, lr, device, data_dir, out, resume, seed,
          valid_fraction, augment, vflip, rotate, jitter, hidden_dropout, loss, precision, keep,
          ema, distill, teacher_epochs, teacher, init_from, limit, test_limit, threads, as_json):
    """Train a binarized network on DATASET and export it for BNN-PYNQ.

    \b
    DATASET is cucumber9, cifar10, mnist, or a folder with one sub-folder of images
    per class (any image size: brought to 32x32 / 28x28 by the same pre-processing
    as `bnnctl infer`). A seeded part of the training images is held out to choose
    the best epoch; the test split is only used for the final report.

    \b
    The run folder receives <dataset>-<network>.npz (best validation epoch, Lasagne
    layout of BNN-PYNQ), classes.txt, metrics.json and a checkpoint after every
    epoch. Ctrl-C stops at once and keeps the checkpoint of the last completed
    epoch; --resume continues from there exactly as if never interrupted.
    At the end the best model is converted as `bnnctl binarize` would and its
    hardware-exact test error (bit-exact integer engine) is reported next to the
    float model's error. The run is recorded so that a bare `bnnctl binarize`
    picks it up. Needs PyTorch: pip install 'bnnctl[train]'.

    \b
    Examples:
      bnnctl train cucumber9
      bnnctl train mnist --epochs 20 --device cuda
      bnnctl train ./my-photos --network cnvW1A2 --out runs/photos
      bnnctl train cucumber9 --out runs/photos --resume
      bnnctl train cucumber9 --init-from bnn/params/cifar10/cnvW1A1 --lr 0.002
    """
    try:
        import torch
    except ImportError:
        raise BnnctlError("training needs PyTorch: pip install 'bnnctl[train]'") from None
    from bnnctl.topology import get_network
    from bnnctl.train.trainer import TrainConfig, run_training

    explicit = _explicit(ctx)
    if threads:
        torch.set_num_threads(threads)
    if resume and out is None:
        state = load_state()
        if not state.get("run_dir"):
            raise BnnctlError("--resume: no --out given and no run recorded in the workspace state")
        out = Path(state["run_dir"])
    if dataset not in DEFAULT_NETWORK and Path(dataset).is_dir():
        dataset = str(Path(dataset).resolve())  # so --resume works from any folder
    network = network or DEFAULT_NETWORK.get(dataset, "cnvW1A1")
    config = TrainConfig.from_recipe(dataset, network, epochs=epochs, batch_size=batch_size, lr=lr,
                                     augment=augment, vflip=vflip, rotate=rotate, jitter=jitter,
                                     hidden_dropout=hidden_dropout, loss=loss, seed=seed,
                                     precision=precision, keep=keep, ema=ema, distill=distill,
                                     teacher_epochs=teacher_epochs,
                                     teacher=str(teacher.resolve()) if teacher else None,
                                     init_from=str(init_from.resolve()) if init_from else None,
                                     valid_fraction=valid_fraction,
                                     data_dir=str(data_dir) if data_dir else None, limit=limit,
                                     test_limit=test_limit)

    # With --json stdout carries only the final object; epoch lines go to stderr.
    def log(line: str) -> None:
        click.echo(line, err=as_json)

    result = run_training(config, out=out, device=device, resume=resume, explicit=explicit, log=log,
                          progress=sys.stderr.isatty())
    classes = result.classes
    update_state(run_dir=result.out_dir.resolve(), npz=result.npz.resolve(), dataset=config.dataset_label,
                 network=config.network, classes=classes)
    summary = {
        "run_dir": str(result.out_dir), "npz": str(result.npz), "dataset": config.dataset_label,
        "network": config.network, "classes": classes, "device": result.device,
        "epochs": result.epochs_run, "best_epoch": result.best_epoch,
        "best_valid_error": result.best_valid_error, "keep": result.keep, "kept_epoch": result.kept_epoch,
        "test_split": result.test_split,
        "hardware_test_error": result.hw_test_error, "float_test_error": result.float_test_error,
        "compared": {name: test.as_dict() for name, test in result.compared.items()},
        "rule": result.rule, "train_seconds": round(result.seconds, 1),
        "teacher": result.teacher, "init_from": result.init_from,
    }
    if as_json:
        emit_json(summary)
        return
    click.echo(f"best epoch {result.best_epoch}/{result.epochs_run}: validation error "
               f"{100 * result.best_valid_error:.2f} %")
    split = "test split" if result.test_split == "test" else result.test_split
    board_call = "classify_cifars" if get_network(config.network).is_cnv else "classify_mnists"
    labels = {"best": "best validation epoch", "last": "last epoch"}
    click.echo(f"error on the {split}, weights of epoch {result.kept_epoch} ({labels[result.keep]}, "
               "in the archive):")
    click.echo(f"  hardware-exact: {100 * result.hw_test_error:6.2f} %  (converted model on the bit-exact "
               f"integer engine, {board_call} class rule)")
    click.echo(f"  float model:    {100 * result.float_test_error:6.2f} %  (PyTorch, argmax)")
    other_name = "last" if result.keep == "best" else "best"
    other = result.compared[other_name]
    if other.epoch != result.kept_epoch:
        click.echo(f"  for comparison, epoch {other.epoch} ({labels[other_name]}, --keep {other_name}): "
                   f"hardware-exact {100 * other.hardware_error:.2f} %")
    if result.teacher:
        click.echo(f"  float teacher:  {100 * result.teacher['test_error']:6.2f} %  ({result.teacher['model']}, "
                   "guided the training; not exported)")
    click.echo(f"wrote {result.npz}, classes.txt, metrics.json in {result.out_dir}")
    click.echo("next: bnnctl binarize")

