"""EMULATION -- NOT HARDWARE: a test double of BNN-PYNQ's `bnn.py` (spec bnn-pynq-format.md §5).

What is emulated, for bnnctl's deploy/infer tests:
* the module constants, the paths bitstreams/<platform>/, libraries/<platform>/, params/<dataset>/<network>/,
  and the BOARD environment check at import (RuntimeError("Board not supported"));
* available_params, PynqBNN, CnvClassifier, LfcClassifier with the file-based calls
  (classify_cifar(s)[_details], classify_path(s), classify_mnist(s)) and the board's printouts,
  including the C library's lines written straight to file descriptor 1;
* the class rules and the timing attribute usecPerImage (float32, spec §4.4/§4.5).
The arithmetic is NOT done here: each inference runs bnnctl's numpy engine in a subprocess
(the python named in emulation.json), so this file itself stays Python 3.6-compatible like the
board's. The "timing" is the engine's compute time on the test machine, not an FPGA's.
Calls that take PIL images (classify_image[s], image_to_cifar) are not emulated: bnnctl sends
pre-processed records instead (spec §9).
"""

import json
import os
import subprocess
import tempfile

import numpy as np

RUNTIME_HW = "python_hw"
RUNTIME_SW = "python_sw"
NETWORK_CNVW1A1 = "cnvW1A1"
NETWORK_CNVW1A2 = "cnvW1A2"
NETWORK_CNVW2A2 = "cnvW2A2"
NETWORK_LFCW1A1 = "lfcW1A1"
NETWORK_LFCW1A2 = "lfcW1A2"

_BOARD = os.environ.get("BOARD")
if _BOARD == "Ultra96":
    PLATFORM = "ultra96"
elif _BOARD in ("Pynq-Z1", "Pynq-Z2"):
    PLATFORM = "pynqZ1-Z2"
else:
    raise RuntimeError("Board not supported")

BNN_ROOT_DIR = os.path.dirname(os.path.realpath(__file__))
BNN_LIB_DIR = os.path.join(BNN_ROOT_DIR, "libraries", PLATFORM)
BNN_BIT_DIR = os.path.join(BNN_ROOT_DIR, "bitstreams", PLATFORM)
BNN_PARAM_DIR = os.path.join(BNN_ROOT_DIR, "params")

with open(os.path.join(BNN_ROOT_DIR, "emulation.json")) as _f:
    EMULATION = json.load(_f)


def _c_print(text):
    # The C library's printouts bypass Python's buffered sys.stdout, as in the real .so.
    os.write(1, (text + "\n").encode())


def available_params(network):
    datasets = []
    for dataset in os.listdir(BNN_PARAM_DIR):
        if os.path.isdir(os.path.join(BNN_PARAM_DIR, dataset, network)):
            datasets.append(dataset)
    return datasets


class _EmulatedPL(object):
    """Stands in for pynq.PL: remembers which (emulated) bitstream was "downloaded"."""
    bitfile_name = None


PL = _EmulatedPL()


class PynqBNN(object):
    def __init__(self, runtime, network, load_overlay=True):
        self.runtime = runtime
        self.network = network
        self.bitstream_path = None
        self.usecPerImage = 0.0
        self.classes = []
        self.params_dir = None
        if runtime == RUNTIME_HW:
            self.bitstream_path = os.path.join(BNN_BIT_DIR, "%s-%s.bit" % (network, PLATFORM))
            if PL.bitfile_name != self.bitstream_path:
                if not load_overlay:
                    raise RuntimeError("Incorrect Overlay loaded")
                if not os.path.isfile(self.bitstream_path):
                    raise IOError("Bitstream file %s does not exist." % self.bitstream_path)
                PL.bitfile_name = self.bitstream_path
        library = os.path.join(BNN_LIB_DIR, "%s-%s-%s.so" % (runtime, network, PLATFORM))
        if not os.path.isfile(library):
            raise OSError("cannot load library '%s': No such file or directory" % library)
        fault = EMULATION.get("faults", {}).get("crash")
        if fault == "exception":
            raise RuntimeError("emulated accelerator fault (injected by the test)")
        if fault == "abort":
            os.abort()

    def load_parameters(self, params):
        path = params if os.path.isabs(params) else os.path.join(BNN_PARAM_DIR, params)
        if not os.path.isdir(path):
            print('\nERROR: No such parameter directory "' + path + '"')
            return
        _c_print("Setting network weights and thresholds in accelerator...")
        with open(os.path.join(path, "classes.txt"), "rb") as f:
            text = f.read().decode("utf-8")
        # spec §4.6: line by line, each stripped, empty lines kept
        self.classes = [line.strip() for line in text.split("\n")]
        self.params_dir = path

    def _engine(self, path, first_only, rule):
        delay = EMULATION.get("faults", {}).get("delay")
        if delay:
            import time
            time.sleep(float(delay))
        request = {"network": self.network, "params_dir": self.params_dir, "input": path,
                   "first_only": first_only, "rule": rule, "n_classes": len(self.classes)}
        fd, req_path = tempfile.mkstemp(suffix=".json")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(request, f)
            out = subprocess.check_output([EMULATION["engine_python"], EMULATION["engine_script"], req_path])
        finally:
            os.unlink(req_path)
        result = json.loads(out.decode())
        count = result["count"]
        if self.network.startswith("cnv"):
            _c_print("Packing and interleaving CIFAR-10 inputs...")
            _c_print("Running prebuilt CIFAR-10 test for %d images..." % count)
        else:
            _c_print("Running prebinarized test for %d images..." % count)
        usec = int(result["usec"])
        self.usecPerImage = float(np.float32(usec / float(max(count, 1))))
        _c_print("Inference took %d microseconds, %g usec per image" % (usec, self.usecPerImage))
        _c_print("Classification rate: %g images per second" % (1e6 / max(self.usecPerImage, 1e-9)))
        return result

    def inference(self, path):
        return int(self._engine(path, True, "single")["classes"][0])

    def detailed_inference(self, path):
        if not self.network.startswith("cnv"):
            raise NotImplementedError("EMULATION: detailed LFC inference is not specified, so not emulated")
        return np.array(self._engine(path, True, "single")["scores"][0], dtype=np.int32)

    def inference_multiple(self, path):
        return np.array(self._engine(path, False, "multiple")["classes"], dtype=np.int32)

    def inference_multiple_detail(self, path):
        if not self.network.startswith("cnv"):
            raise NotImplementedError("EMULATION: detailed LFC inference is not specified, so not emulated")
        scores = self._engine(path, False, "multiple")["scores"]
        return np.array([v for row in scores for v in row], dtype=np.int32)

    def class_name(self, index):
        return self.classes[index]


def _print_single(usec):
    print("Inference took %.2f microseconds" % usec)
    print("Classification rate: %.2f images per second" % (1000000.0 / max(usec, 1e-9)))


def _print_multiple(usec, count):
    print("Inference took %.2f microseconds, %.2f usec per image" % (usec * count, usec))
    print("Classification rate: %.2f images per second" % (1000000.0 / max(usec, 1e-9)))


class _Classifier(object):
    def __init__(self, network, params, runtime=RUNTIME_HW):
        if params not in available_params(network):
            print("ERROR: parameters are not availlable for " + network)  # (sic), as the real package
            return
        self.net = network
        self.params = params
        self.runtime = runtime
        self.usecPerImage = 0.0
        self.bnn = PynqBNN(runtime, network)
        self.bnn.load_parameters(os.path.join(params, network))  # params/<dataset>/<network> (spec §5)
        self.classes = self.bnn.classes

    def _single(self, value):
        self.usecPerImage = self.bnn.usecPerImage
        _print_single(self.usecPerImage)
        return value

    def _multiple(self, value, count):
        self.usecPerImage = self.bnn.usecPerImage
        _print_multiple(self.usecPerImage, count)
        return value

    def class_name(self, index):
        return self.bnn.class_name(index)


class CnvClassifier(_Classifier):
    def classify_cifar(self, path):
        return self._single(self.bnn.inference(path))

    def classify_cifar_details(self, path):
        return self._single(self.bnn.detailed_inference(path))

    def classify_cifars(self, path):
        result = self.bnn.inference_multiple(path)
        return self._multiple(result, len(result))

    def classify_cifars_details(self, path):
        result = self.bnn.inference_multiple_detail(path)
        return self._multiple(result, len(result) // max(len(self.classes), 1))

    def _records_of_paths(self, paths):
        # Pre-processing of picture files with the board's Pillow <= 6 rules is delegated to
        # bnnctl (spec §4.1) in the engine's process, since this emulation has no Pillow of its own.
        fd, records = tempfile.mkstemp(suffix=".bin")
        os.close(fd)
        subprocess.check_call([EMULATION["engine_python"], EMULATION["engine_script"], "--to-cifar", records]
                              + list(paths))
        return records

    def classify_path(self, path):
        records = self._records_of_paths([path])
        try:
            return self.classify_cifar(records)
        finally:
            os.unlink(records)

    def classify_paths(self, paths):
        records = self._records_of_paths(paths)
        try:
            return self.classify_cifars(records)
        finally:
            os.unlink(records)

    def classify_image(self, img):
        raise NotImplementedError("EMULATION: PIL image calls are not emulated; bnnctl sends CIFAR records")

    classify_image_details = classify_images = classify_images_details = image_to_cifar = classify_image


class LfcClassifier(_Classifier):
    def classify_mnist(self, path):
        return self._single(self.bnn.inference(path))

    def classify_mnists(self, path):
        result = self.bnn.inference_multiple(path)
        return self._multiple(result, len(result))
