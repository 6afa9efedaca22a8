"""Training-step speed: milliseconds per optimizer step of `bnnctl train` on this machine.

    .venv/bin/python benchmarks/bench_train_step.py                  # 1 thread, 5 rounds
    .venv/bin/python benchmarks/bench_train_step.py --threads 2 --rounds 7

One step = forward, squared hinge loss, backward, Adam, weight clipping: `trainer.train_step`,
the inner loop of bnnctl/train/trainer.py, on random inputs of the recipe's batch size (data loading and
augmentation excluded; they are the same for every variant). Variants, measured in the same
run and interleaved round by round because the machine is shared and noisy:

* baseline - fp32 with the quantisers written as comparison + select
  (`where(x >= 0, 1, -1)`, `-1 + [x >= -0.5] + [x >= 0.5]`), the form bnnctl used before;
* fp32     - the current quantisers (sign-based, same values; tests/test_train.py);
* bf16     - the current quantisers and `--precision bf16` (bfloat16 products).

Reported: median ms/step per variant and the speed-ups against the baseline.
Results: benchmarks/results/train-step-<date>.json and the README's "Training speed" table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import torch  # noqa: E402

import bnnctl.train.quant as quant  # noqa: E402
from bnnctl.topology import get_network  # noqa: E402
from bnnctl.train.models import BnnModel  # noqa: E402
from bnnctl.train.recipe import recipe_for  # noqa: E402
from bnnctl.train.trainer import TrainConfig, squared_hinge, train_step  # noqa: E402

NETWORKS = ["lfcW1A1", "cnvW1A1", "cnvW2A2"]
VARIANTS = ["baseline", "fp32", "bf16"]


def comparison_binary(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))


def comparison_ternary(x: torch.Tensor) -> torch.Tensor:
    return (x >= -0.5).to(x.dtype) + (x >= 0.5).to(x.dtype) - 1.0


CURRENT = (quant.binary, quant.ternary)


def use_quantisers(variant: str) -> None:
    # quantize() looks the two functions up in its module at call time
    quant.binary, quant.ternary = (comparison_binary, comparison_ternary) if variant == "baseline" else CURRENT


class Stepper:
    """A network, its optimizer and a fixed random batch, ready to take training steps."""

    def __init__(self, network: str, precision: str):
        spec = get_network(network)
        self.batch = recipe_for(spec.topology).batch_size
        torch.manual_seed(0)
        self.model = BnnModel(spec, 10)
        self.model.train()
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=0.01)
        shape = (3, 32, 32) if spec.is_cnv else (784,)
        # CNV inputs are codes q/128, LFC inputs +-1, as the trainer feeds them
        raw = torch.randint(-128, 128, (self.batch, *shape)).float()
        self.x = raw / 128 if spec.is_cnv else torch.where(raw >= 0, 1.0, -1.0)
        self.y = torch.randint(0, 10, (self.batch,))
        self.config = TrainConfig(dataset="bench", network=network, epochs=1, batch_size=self.batch, lr=0.01,
                                  precision=precision)

    def step(self) -> None:
        train_step(self.model, self.optimizer, squared_hinge, self.x, self.y, self.config, torch.device("cpu"))


def ms_per_step(stepper: Stepper, steps: int) -> float:
    stepper.step()  # warm-up (allocations, kernel selection)
    start = time.perf_counter()
    for _ in range(steps):
        stepper.step()
    return (time.perf_counter() - start) / steps * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1, as the background runs)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds per variant (median reported)")
    parser.add_argument("--steps", type=int, default=10, help="steps per round")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    rows = []
    print(f"{'network':9} {'batch':>5} " + " ".join(f"{v + ' ms':>12}" for v in VARIANTS)
          + f" {'fp32/base':>10} {'bf16/base':>10}", flush=True)
    for network in NETWORKS:
        steppers = {}
        for variant in VARIANTS:
            steppers[variant] = Stepper(network, "bf16" if variant == "bf16" else "fp32")
        times: dict[str, list[float]] = {v: [] for v in VARIANTS}
        for _ in range(args.rounds):
            for variant in VARIANTS:
                use_quantisers(variant)
                times[variant].append(ms_per_step(steppers[variant], args.steps))
        use_quantisers("fp32")
        median = {v: statistics.median(t) for v, t in times.items()}
        row = {"network": network, "batch": steppers["fp32"].batch,
               "ms_per_step": {v: round(m, 2) for v, m in median.items()},
               "speedup_fp32": round(median["baseline"] / median["fp32"], 2),
               "speedup_bf16": round(median["baseline"] / median["bf16"], 2),
               "rounds_ms": {v: [round(t, 2) for t in ts] for v, ts in times.items()}}
        rows.append(row)
        print(f"{network:9} {row['batch']:>5} " + " ".join(f"{median[v]:>12.1f}" for v in VARIANTS)
              + f" {row['speedup_fp32']:>9.2f}x {row['speedup_bf16']:>9.2f}x", flush=True)

    result = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{platform.node()} ({os.cpu_count()} cpus)",
              "cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
              "threads": args.threads, "rounds": args.rounds, "steps": args.steps,
              "command": " ".join([Path(sys.executable).name, *sys.argv]), "rows": rows}
    out = HERE / "results" / f"train-step-{time.strftime('%Y-%m-%d')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
