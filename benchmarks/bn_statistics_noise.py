"""How much of a CNV run's test error is the noise of its batch-norm statistics?

The running statistics a run exports are a momentum-0.1 average, i.e. mostly the last ~10
training batches (augmented crops, flips, turns). With the weights frozen this script
re-measures them from the run's last checkpoint in three ways and reports the validation and
hardware-exact test errors (bit-exact engine, board rule) of each:

* `momentum`: one more training-mode pass at momentum 0.1, as training ends (another draw of
  the same noise);
* `precise`: statistics reset and averaged over one whole augmented pass of the training split
  (every batch weighs the same; "precise BN");
* `clean`: the same average over the training images without augmentation.

    BNNCTL_DATA=../shared/data .venv/bin/python benchmarks/bn_statistics_noise.py RUN_DIR [RUN_DIR ...]

Results: benchmarks/results/bn-statistics-noise.json (README, Training).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def measure(run_dir: Path, draws: int) -> dict:
    import torch
    from torch import nn

    from bnnctl.topology import get_network
    from bnnctl.train.checkpoint import CHECKPOINT_NAME, load_checkpoint
    from bnnctl.train.data import load_training_data, shuffled_batches
    from bnnctl.train.layers import BN_MOMENTUM
    from bnnctl.train.trainer import Run, TrainConfig, epoch_generators, evaluate, training_autocast

    stored = load_checkpoint(run_dir / CHECKPOINT_NAME)
    config = TrainConfig(**stored["config"])
    data = load_training_data(config, get_network(config.network))
    device = torch.device("cpu")
    scratch = Path(tempfile.mkdtemp(prefix="bn-noise-"))
    run = Run(config, scratch, device, data, log=lambda line: None, progress=False)
    run.restore(stored)
    model = run.model
    trained = copy.deepcopy(model.state_dict())
    # torch batch-norms only: the A2 networks' ScaleOnlyNorm keeps a momentum scale that cannot
    # change a sign-based decision, so it is left as trained
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    def errors(state: dict) -> dict:
        test, _ = run.test_weights(state, run.epoch, scratch / "probe.npz")
        valid = evaluate(model, run.inputs, run.valid_x, run.valid_y)
        return {"valid_error": round(valid, 5), "hardware_test_errors": test.hardware_errors,
                "float_test_error": round(test.float_error, 5)}

    def one_pass(draw: int, precise: bool, augmented: bool) -> dict:
        model.load_state_dict(trained)
        if precise:
            for norm in norms:
                norm.reset_running_stats()
                norm.momentum = None  # cumulative average over the pass
        model.train()
        # draws far from the training epochs' generator seeds
        generator = epoch_generators(config.seed, 100_000 + draw)
        # the run's own forward pass (bf16 runs measured their statistics under autocast)
        with torch.no_grad(), training_autocast(config, device):
            for idx in shuffled_batches(len(run.train_y), config.batch_size, generator, device):
                model(run.inputs(run.train_x[idx], generator if augmented else None))
        for norm in norms:
            norm.momentum = BN_MOMENTUM
        return {k: v.detach().clone() for k, v in model.state_dict().items()}

    result = {"run_dir": str(run_dir), "epoch": run.epoch, "config": stored["config"],
              "as_trained": errors(trained)}
    for kind, precise, augmented in (("momentum", False, True), ("precise", True, True),
                                     ("clean", True, False)):
        n = draws if augmented else 1  # without augmentation the pass is the same every time
        result[kind] = [errors(one_pass(d, precise, augmented)) for d in range(n)]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR")
    parser.add_argument("--draws", type=int, default=3, help="passes per augmented kind")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "bn-statistics-noise.json")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    rows = []
    for run_dir in args.runs:
        start = time.time()
        row = measure(run_dir, args.draws)
        row["seconds"] = round(time.time() - start, 1)
        rows.append(row)
        counts = {k: [d["hardware_test_errors"] for d in row[k]] for k in ("momentum", "precise", "clean")}
        print(f"{run_dir.name}: epoch {row['epoch']}, as trained {row['as_trained']['hardware_test_errors']}, "
              f"momentum {counts['momentum']}, precise {counts['precise']}, clean {counts['clean']} "
              f"test errors ({row['seconds']} s)", flush=True)
    figures = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{platform.node()} ({os.cpu_count()} cpus)",
               "torch_threads": args.threads, "draws": args.draws, "runs": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    tmp.replace(args.out)


if __name__ == "__main__":
    main()
