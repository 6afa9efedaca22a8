"""EMULATION engine: the arithmetic behind the emulated board's `bnn` package (NOT HARDWARE).

Run by the emulated package in a subprocess with the test machine's python, so the emulated
board computes with bnnctl's own bit-exact numpy engine (spec §4). Usage:
    engine.py REQUEST.json                  -> JSON {"classes", "scores", "count", "usec"}
    engine.py --to-cifar OUT.bin PICTURE... -> CIFAR-10 records made with bnnctl's pre-processing
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from bnnctl.convert.folder import read_params_folder
from bnnctl.infer.classify import encode_inputs
from bnnctl.infer.numpy_engine import run_network
from bnnctl.infer.preprocess import cifar_records_bytes, image_to_cifar_pixels, parse_cifar_records, parse_idx3
from bnnctl.infer.rules import decide


def classify(request: dict) -> dict:
    model = read_params_folder(request["params_dir"], request["network"])
    data = Path(request["input"]).read_bytes()
    if model.spec.is_cnv:
        pixels = parse_cifar_records(data, request["input"])[1]
    else:
        pixels = parse_idx3(data, request["input"])
    if request["first_only"]:
        pixels = pixels[:1]  # the single-image calls read only the first image (spec §4.1.1, §4.2)
    start = time.perf_counter()
    outputs = run_network(model, encode_inputs(model, pixels))
    usec = (time.perf_counter() - start) * 1e6
    n = request["n_classes"]
    classes = decide(model.spec.is_cnv, outputs, n, request["rule"])
    scores = outputs[:, :n].astype(int).tolist() if model.spec.is_cnv else None
    return {"classes": [int(c) for c in classes], "scores": scores, "count": len(pixels), "usec": usec}


def main(argv: list[str]) -> int:
    if argv[:1] == ["--to-cifar"]:
        pixels = np.stack([image_to_cifar_pixels(p) for p in argv[2:]])
        Path(argv[1]).write_bytes(cifar_records_bytes(pixels))
        return 0
    request = json.loads(Path(argv[0]).read_text())
    sys.stdout.write(json.dumps(classify(request)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
