"""Best-validation epoch against last epoch, on finished benchmark runs (`--keep best|last`).

    BNNCTL_DATA=../shared/data .venv/bin/python benchmarks/compare_kept_epochs.py [RUN_DIR...]

For every finished run folder (default: benchmarks/logs/runs/*, written by train_accuracy.py)
the archive of the best validation epoch was tested when the run ended (metrics.json); this
script exports the last epoch's weights from the run's checkpoint, converts them as
`bnnctl binarize` does and counts the hardware-exact test errors the same way. Runs made since
`--keep` exists record both figures themselves (metrics.json "test.compared"); they are read,
not recomputed. Results (all runs only): benchmarks/results/kept-epochs-<date>.json and the
README.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def last_epoch_errors(run_dir: Path, metrics: dict, data_cache: dict) -> tuple[int, int]:
    """(last epoch, its hardware-exact test errors) from the run's checkpoint."""
    import torch

    from bnnctl.topology import get_network
    from bnnctl.train.data import load_training_data
    from bnnctl.train.export import save_archive
    from bnnctl.train.hwtest import hardware_error
    from bnnctl.train.models import BnnModel
    from bnnctl.train.trainer import TrainConfig

    known = {name for name in TrainConfig.__dataclass_fields__}
    config = TrainConfig(**{k: v for k, v in metrics["config"].items() if k in known})
    spec = get_network(config.network)
    key = (config.dataset, config.seed, config.valid_fraction, config.network[:3])
    if key not in data_cache:
        data_cache[key] = load_training_data(config, spec)
    data = data_cache[key]
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    model = BnnModel(spec, len(data.classes), hidden_dropout=config.hidden_dropout)
    model.load_state_dict(checkpoint["model"])
    with tempfile.TemporaryDirectory() as scratch:
        npz = Path(scratch) / "last.npz"
        save_archive(model, npz)
        hw = hardware_error(npz, spec, data.classes, data.test_pixels, data.test_labels)
    return checkpoint["epoch"], hw.errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="*", type=Path, help="run folders (default: benchmarks/logs/runs/*)")
    args = parser.parse_args()
    os.environ.setdefault("BNNCTL_DATA", str(HERE.parent.parent / "shared" / "data"))
    import torch

    torch.set_num_threads(1)
    runs = args.runs or sorted((HERE / "logs" / "runs").glob("*"))
    rows, cache = [], {}
    print(f"{'run':52} {'best ep':>7} {'errors':>6} {'last ep':>7} {'errors':>6} {'images':>6}")
    for run_dir in runs:
        path = run_dir / "metrics.json"
        if not path.is_file():
            continue
        metrics = json.loads(path.read_text(encoding="utf-8"))
        if metrics.get("status") != "done":
            continue
        test = metrics["test"]
        if "compared" in test:
            best, last = test["compared"]["best"], test["compared"]["last"]
            last_epoch, last_errors = last["epoch"], last["hardware_errors"]
            best_epoch, best_errors = best["epoch"], best["hardware_errors"]
        else:
            best_epoch, best_errors = metrics["best_epoch"], test["hardware_errors"]
            last_epoch, last_errors = last_epoch_errors(run_dir, metrics, cache)
        row = {"run": run_dir.name, "network": metrics["network"], "dataset": metrics["dataset"],
               "images": test["images"], "best_epoch": best_epoch, "best_errors": best_errors,
               "last_epoch": last_epoch, "last_errors": last_errors}
        rows.append(row)
        print(f"{run_dir.name:52} {best_epoch:>7} {best_errors:>6} {last_epoch:>7} {last_errors:>6} "
              f"{test['images']:>6}", flush=True)
    if not rows:
        sys.exit("no finished runs found")
    better = sum(r["last_errors"] < r["best_errors"] for r in rows)
    worse = sum(r["last_errors"] > r["best_errors"] for r in rows)
    total_best = sum(r["best_errors"] for r in rows)
    total_last = sum(r["last_errors"] for r in rows)
    print(f"{len(rows)} runs: last epoch fewer errors in {better}, more in {worse}, equal in "
          f"{len(rows) - better - worse}; total errors {total_best} (best validation) against {total_last} (last)")
    if args.runs:
        return  # a chosen subset is printed only; the results file covers all runs
    out = HERE / "results" / f"kept-epochs-{time.strftime('%Y-%m-%d')}.json"
    out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M"), "rows": rows,
                               "summary": {"runs": len(rows), "last_better": better, "last_worse": worse,
                                           "total_best_errors": total_best, "total_last_errors": total_last}},
                              indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
