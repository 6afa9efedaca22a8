"""bnnctl's board-side inference program. RUNS ON THE BOARD (copied there by `bnnctl infer --board`).

It classifies inputs that the host has already pre-processed (spec bnn-pynq-format.md §4.1/§4.2,
§9: boards run old Pillow versions, so the host sends CIFAR-10 records or an MNIST idx3 file)
with the board's own `bnn` package (spec §5): CnvClassifier / LfcClassifier with RUNTIME_HW
(the FPGA) or RUNTIME_SW (the same C++ compiled for the ARM).

Compatibility: the Python 3.6 of PYNQ images v2.3-v2.5, standard library + numpy + `bnn` only
(no f-strings with `=`, no walrus, no dataclasses, no `from __future__ import annotations`).

Output: the C library prints to this process's stdout too, so the result is one JSON object on
a line of its own that starts with MARKER; the host takes the last such line. Failures that
the host can explain get a JSON error object (exit 3); anything else is a traceback on stderr.
"""

import argparse
import json
import os
import sys
import traceback

MARKER = "@@BNNCTL-RESULT@@ "
CIFAR_RECORD = 3073  # 1 label byte + 3 x 1024 (spec §4.1.1)
IDX3_HEADER = 16  # magic, count, rows, cols as big-endian 32-bit (spec §4.2)
MNIST_PIXELS = 784
# spec §5: the bnn package accepts these BOARD values and maps them to its platforms.
BOARD_PLATFORM = {"Pynq-Z1": "pynqZ1-Z2", "Pynq-Z2": "pynqZ1-Z2", "Ultra96": "ultra96"}
RUNTIMES = ("python_hw", "python_sw")


class Failure(Exception):
    def __init__(self, kind, message, **extra):
        Exception.__init__(self, message)
        self.kind = kind
        self.extra = extra


def emit(obj):
    # A newline first: the C library may have left a line without one on stdout.
    sys.stdout.write("\n" + MARKER + json.dumps(obj, sort_keys=True) + "\n")
    sys.stdout.flush()


def split_inputs(path, topology, workdir):
    """One file per image, for the single-image calls that read only the first record (spec §4.1.1)."""
    with open(path, "rb") as f:
        data = f.read()
    paths = []
    if topology == "cnv":
        count = len(data) // CIFAR_RECORD
        chunks = [data[i * CIFAR_RECORD:(i + 1) * CIFAR_RECORD] for i in range(count)]
    else:
        header = bytearray(data[:IDX3_HEADER])
        header[4:8] = (1).to_bytes(4, "big")
        count = int.from_bytes(data[4:8], "big")
        chunks = [bytes(header) + data[IDX3_HEADER + i * MNIST_PIXELS:IDX3_HEADER + (i + 1) * MNIST_PIXELS]
                  for i in range(count)]
    for i, chunk in enumerate(chunks):
        one = os.path.join(workdir, "single-%05d.bin" % i)
        with open(one, "wb") as f:
            f.write(chunk)
        paths.append(one)
    return paths


def count_inputs(path, topology):
    size = os.path.getsize(path)
    if topology == "cnv":
        return size // CIFAR_RECORD
    with open(path, "rb") as f:
        return int.from_bytes(f.read(IDX3_HEADER)[4:8], "big")


def check_overlay(bnn, network, runtime, platform):
    """The paths of spec §5, checked before the library would fail with a less clear message."""
    root = os.path.dirname(os.path.realpath(bnn.__file__))
    lib = os.path.join(root, "libraries", platform, "%s-%s-%s.so" % (runtime, network, platform))
    needed = [lib]
    if runtime == "python_hw":
        needed.append(os.path.join(root, "bitstreams", platform, "%s-%s.bit" % (network, platform)))
    missing = [p for p in needed if not os.path.isfile(p)]
    if missing:
        raise Failure("overlay_missing", "overlay %s (%s) is not installed for platform %s: %s missing"
                      % (network, runtime, platform, ", ".join(missing)))


def usec_of(classifier):
    value = getattr(classifier, "usecPerImage", None)
    if value is None:
        value = classifier.bnn.usecPerImage
    return float(value)


def classify(classifier, topology, rule, path, workdir):
    """Returns (predictions, scores or None, [(usec per image, images)] per library call)."""
    calls = []
    if topology == "cnv":
        if rule == "multiple":
            predictions = [int(c) for c in classifier.classify_cifars(path)]
            calls.append((usec_of(classifier), len(predictions)))
            flat = [int(v) for v in classifier.classify_cifars_details(path)]
        else:
            predictions, flat = [], []
            for one in split_inputs(path, topology, workdir):
                predictions.append(int(classifier.classify_cifar(one)))
                calls.append((usec_of(classifier), 1))
                flat.extend(int(v) for v in classifier.classify_cifar_details(one))
        n = len(classifier.classes)
        scores = [flat[i * n:(i + 1) * n] for i in range(len(predictions))]
        return predictions, scores, calls
    # LfcClassifier has no detailed call (spec §5): the board reports classes only.
    if rule == "multiple":
        predictions = [int(c) for c in classifier.classify_mnists(path)]
        calls.append((usec_of(classifier), len(predictions)))
    else:
        predictions = []
        for one in split_inputs(path, topology, workdir):
            predictions.append(int(classifier.classify_mnist(one)))
            calls.append((usec_of(classifier), 1))
    return predictions, None, calls


def run(args):
    topology = args.network[:3]
    if topology not in ("cnv", "lfc") or args.runtime not in RUNTIMES:
        raise Failure("usage", "unknown network %r or runtime %r" % (args.network, args.runtime))
    if not os.environ.get("BOARD") and args.board_env:
        os.environ["BOARD"] = args.board_env  # the bnn package refuses to import without it (spec §5)
    board = os.environ.get("BOARD", "")
    if board not in BOARD_PLATFORM:
        raise Failure("board_env", "BOARD=%r is not a board the bnn package supports (%s)"
                      % (board, ", ".join(sorted(BOARD_PLATFORM))))
    try:
        import bnn
    except ImportError as exc:
        raise Failure("no_bnn", "the bnn package is not installed for %s (%s)" % (sys.executable, exc))
    available = list(bnn.available_params(args.network))
    if args.params not in available:
        raise Failure("params_missing", "no params %r for %s on this board" % (args.params, args.network),
                      available=available)
    check_overlay(bnn, args.network, args.runtime, BOARD_PLATFORM[board])
    count = count_inputs(args.input, topology)
    if count < 1:
        raise Failure("usage", "%s holds no input" % args.input)
    cls = bnn.CnvClassifier if topology == "cnv" else bnn.LfcClassifier
    classifier = cls(args.network, args.params, args.runtime)
    predictions, scores, calls = classify(classifier, topology, args.rule, args.input,
                                          os.path.dirname(os.path.abspath(args.input)))
    emit({"ok": True, "network": args.network, "params": args.params, "runtime": args.runtime,
          "rule": args.rule, "board_env": board, "python": "%d.%d.%d" % sys.version_info[:3],
          "class_names": [str(c) for c in classifier.classes], "predictions": predictions,
          "scores": scores, "calls": [{"usec_per_image": u, "images": n} for u, n in calls]})


def main(argv=None):
    p = argparse.ArgumentParser(prog="board_infer.py", description="classify pre-processed inputs with bnn")
    p.add_argument("--network", required=True)
    p.add_argument("--params", required=True, help="dataset name under bnn/params/")
    p.add_argument("--runtime", required=True, choices=RUNTIMES)
    p.add_argument("--rule", required=True, choices=("single", "multiple"))
    p.add_argument("--input", required=True, help="CIFAR-10 record file (cnv) or idx3 file (lfc)")
    p.add_argument("--board-env", default="", help="BOARD value to use when the environment has none")
    args = p.parse_args(argv)
    try:
        run(args)
    except Failure as exc:
        result = {"ok": False, "error": exc.kind, "message": str(exc)}
        result.update(exc.extra)
        emit(result)
        return 3
    except Exception:  # noqa: BLE001 - the host shows this traceback as the remote failure
        traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
