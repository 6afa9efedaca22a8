"""Benchmark trainings of issue 3: epochs, wall time, device, s/epoch, float and hardware-exact
test error for MNIST/lfcW1A1 and CUCUMBER-9/cnvW1A1, cnvW1A2, cnvW2A2.

    .venv/bin/python benchmarks/train_accuracy.py                    # all four, recipe defaults
    .venv/bin/python benchmarks/train_accuracy.py cucumber9-cnvW1A1 --threads 1
    BNNCTL_DATA=/work/shared/data nohup .venv/bin/python benchmarks/train_accuracy.py \
        cucumber9-cnvW1A1 --threads 1 > benchmarks/logs/cucumber9-cnvW1A1.log 2>&1 &

Run folders go under benchmarks/logs/runs/ (git-ignored); the final figures of each run are
copied to benchmarks/results/train-<dataset>-<network>.json (committed).
Targets (issue 3): MNIST lfcW1A1 >= 98.9 % hardware-exact test accuracy; CUCUMBER-9 cnvW1A1
<= 8 % hardware-exact test error; cnvW1A2 / cnvW2A2 lower than cnvW1A1.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = ["mnist-lfcW1A1", "cucumber9-cnvW1A1", "cucumber9-cnvW1A2", "cucumber9-cnvW2A2"]


def run_one(name: str, args) -> dict:
    import torch

    from bnnctl.train.recipe import VALID_FRACTION
    from bnnctl.train.trainer import TrainConfig, run_training

    dataset, network = name.split("-", 1)
    config = TrainConfig.from_recipe(dataset, network, epochs=args.epochs, lr=args.lr, augment=args.augment,
                                     vflip=args.vflip, batch_size=args.batch_size,
                                     hidden_dropout=args.hidden_dropout, loss=args.loss, seed=args.seed,
                                     rotate=args.rotate, jitter=args.jitter,
                                     precision=args.precision, keep=args.keep, ema=args.ema,
                                     distill=args.distill, teacher_epochs=args.teacher_epochs,
                                     teacher=str(args.teacher.resolve()) if args.teacher else None,
                                     init_from=str(args.init_from.resolve()) if args.init_from else None,
                                     valid_fraction=VALID_FRACTION)
    label = f"{name}-{args.tag}" if args.tag else name
    out = args.resume or HERE / "logs" / "runs" / f"{label}-{time.strftime('%Y%m%d-%H%M%S')}"
    start = time.time()
    result = run_training(config, out=out, device=args.device, progress=False, resume=bool(args.resume),
                          log=lambda line: print(f"[{name}] {line}", flush=True))
    wall = time.time() - start
    figures = {
        "benchmark": name, "dataset": dataset, "network": network,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": time.strftime("%Y-%m-%d"), "machine": f"{platform.node()} ({os.cpu_count()} cpus)",
        "device": result.device, "torch_threads": torch.get_num_threads(),
        "epochs": result.epochs_run, "best_epoch": result.best_epoch, "batch_size": config.batch_size,
        "lr": config.lr, "seed": config.seed, "augment": config.augment, "vflip": config.vflip,
        "rotate": config.rotate, "jitter": config.jitter,
        "hidden_dropout": config.hidden_dropout, "loss": config.loss,
        "precision": config.precision, "keep": config.keep, "ema": config.ema, "kept_epoch": result.kept_epoch,
        "distill": config.distill, "teacher": result.teacher, "init_from": result.init_from,
        "tag": args.tag,
        "wall_seconds": round(wall, 1), "resumed": bool(args.resume), "train_seconds": round(result.seconds, 1),
        "seconds_per_epoch": round(result.seconds / max(result.epochs_run, 1), 2),
        "best_valid_error": round(result.best_valid_error, 5),
        "float_test_error": round(result.float_test_error, 5),
        "hardware_test_error": round(result.hw_test_error, 5),
        "hardware_rule": result.rule, "run_dir": str(out),
        # both candidate epochs, whichever the archive holds (--keep)
        "compared": {name: {"epoch": t.epoch, "float_test_error": round(t.float_error, 5),
                            "hardware_test_error": round(t.hardware_error, 5),
                            "hardware_test_errors": t.hardware_errors}
                     for name, t in result.compared.items()},
    }
    path = HERE / "results" / f"train-{label}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    return figures


def main() -> None:
    from bnnctl.train.recipe import KEEP_CHOICES, LOSS_NAMES, PRECISIONS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("benchmarks", nargs="*", default=BENCHMARKS, help=f"any of {BENCHMARKS}")
    parser.add_argument("--epochs", type=int, help="override the recipe's epochs")
    parser.add_argument("--lr", type=float, help="override the recipe's learning rate")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--batch-size", type=int, help="override the recipe's batch size")
    parser.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                        help="random crop + mirror (photos) / random shift (digits); default: the recipe's")
    parser.add_argument("--vflip", action=argparse.BooleanOptionalAction, default=None,
                        help="photos: random vertical flips too (default: the dataset's setting)")
    parser.add_argument("--rotate", type=float,
                        help="photos: random turns of up to this many degrees (default: the recipe's)")
    parser.add_argument("--jitter", type=float,
                        help="photos: random brightness/colour-balance factors 1 +- this (default: the recipe's)")
    parser.add_argument("--hidden-dropout", type=float,
                        help="dropout after hidden dense layers (default: the model's: LFC 0.2 via the "
                             "recipe, CNV none)")
    parser.add_argument("--loss", choices=LOSS_NAMES,
                        help="training loss (default: the recipe's; cross-entropy: cnvW1A1 only)")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="number format of the training steps (bf16: bfloat16 products)")
    parser.add_argument("--keep", choices=KEEP_CHOICES, default="best",
                        help="which epoch the archive holds: best validation (default) or last")
    parser.add_argument("--ema", type=float, default=0.0,
                        help="decay of the weight average that is validated and exported (0: off)")
    parser.add_argument("--distill", type=float, default=0.0,
                        help="weight of the distillation term from a float teacher (0: off)")
    parser.add_argument("--teacher-epochs", type=int, help="epochs of the float teacher (default: the recipe's)")
    parser.add_argument("--teacher", type=Path, help="teacher.pt of an earlier run on the same split")
    parser.add_argument("--init-from", type=Path,
                        help="parameter folder whose network is the starting point (e.g. BNN-PYNQ's cifar10/cnvW1A1)")
    parser.add_argument("--tag", help="name of a recipe variant: results go to train-<benchmark>-<tag>.json")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, help="torch threads (1 for background runs on a shared machine)")
    parser.add_argument("--resume", type=Path, metavar="RUN_DIR",
                        help="continue an interrupted run from its checkpoint (one benchmark only)")
    args = parser.parse_args()
    if args.resume and len(args.benchmarks) != 1:
        parser.error("--resume continues one run: name exactly one benchmark")
    unknown = set(args.benchmarks) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmarks {sorted(unknown)}; choose from {BENCHMARKS}")
    os.environ.setdefault("BNNCTL_DATA", str(HERE.parent.parent / "shared" / "data"))
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"{'benchmark':20} {'epochs':>6} {'wall s':>8} {'device':>6} {'s/epoch':>8} "
          f"{'float err':>9} {'hw err':>8}")
    from bnnctl.errors import BnnctlError

    for name in args.benchmarks:
        try:
            f = run_one(name, args)
        except BnnctlError as exc:  # Ctrl-C (the run says how to resume it) or a user error
            print(f"[{name}] {exc}", file=sys.stderr)
            sys.exit(getattr(exc, "exit_code", 1))
        print(f"{name:20} {f['epochs']:>6} {f['wall_seconds']:>8.0f} {f['device']:>6} "
              f"{f['seconds_per_epoch']:>8.2f} {100 * f['float_test_error']:>8.2f}% "
              f"{100 * f['hardware_test_error']:>7.2f}%", flush=True)


if __name__ == "__main__":
    main()
