"""The BNN-PYNQ parameter folder: `<L>-<P>-weights.bin`, `<L>-<P>-thres.bin`, `classes.txt`.

Writer and reader of the exact file format of spec §3.5/§3.6 (little-endian 64-bit words, rows
dealt round-robin over PEs, SIMD lanes LSB-first). The board loads these files blindly, so the
reader checks every size against the folding table before anything uses the folder.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bnnctl.convert.config_h import config_h_text
from bnnctl.errors import BnnctlError, DataError
from bnnctl.fsutil import atomic_directory
from bnnctl.model import BinarizedLayer, BinarizedNetwork
from bnnctl.topology import LayerSpec, NetworkSpec, available_networks, get_network

CLASSES_FILE = "classes.txt"


class LegacyFolderWarning(UserWarning):
    """A folder in one of the legacy layouts of spec §3.9: loads, but not as written today."""


# ---------------------------------------------------------------------------- packing (§3.5)

def pack_weights(layer: LayerSpec, weights: np.ndarray) -> list[np.ndarray]:
    """(mh, mw) int8 matrix -> one uint64 word array per PE."""
    bits = layer.weight_bits
    if bits == 1:
        codes = (weights > 0).astype(np.uint64)  # bit 1 = +1
    else:
        codes = (weights.astype(np.int64) & 3).astype(np.uint64)  # two's complement lanes
    # (tmem, pe, synapse folds, simd): row nf*PE + p, column sf*SIMD + j
    codes = codes.reshape(layer.tmem, layer.pe, layer.synapse_folds, layer.simd)
    shifts = (np.arange(layer.simd, dtype=np.uint64) * np.uint64(bits))
    words = np.bitwise_or.reduce(codes << shifts, axis=3)
    return [words[:, p, :].reshape(-1) for p in range(layer.pe)]


def unpack_weights(layer: LayerSpec, per_pe: list[np.ndarray]) -> np.ndarray:
    bits = layer.weight_bits
    words = np.stack([w.reshape(layer.tmem, layer.synapse_folds) for w in per_pe], axis=1)
    shifts = np.arange(layer.simd, dtype=np.uint64) * np.uint64(bits)
    codes = (words[..., None] >> shifts) & np.uint64((1 << bits) - 1)
    used = np.uint64((1 << (layer.simd * bits)) - 1) if layer.simd * bits < 64 else np.uint64(2**64 - 1)
    if np.any(words & ~used):
        warnings.warn(f"layer {layer.index}: weight words have bits set above SIMD*WPI; the hardware ignores them",
                      LegacyFolderWarning, stacklevel=3)
    codes = codes.reshape(layer.mh, layer.mw).astype(np.int8)
    if bits == 1:
        return np.where(codes == 1, 1, -1).astype(np.int8)
    return np.where(codes >= 2, codes - 4, codes).astype(np.int8)


def pack_thresholds(layer: LayerSpec, thresholds: np.ndarray) -> list[np.ndarray]:
    t = thresholds.reshape(layer.tmem, layer.pe, layer.thresholds)
    return [t[:, p, :].reshape(-1) for p in range(layer.pe)]


def unpack_thresholds(layer: LayerSpec, per_pe: list[np.ndarray]) -> np.ndarray:
    t = np.stack([a.reshape(layer.tmem, layer.thresholds) for a in per_pe], axis=1)
    return t.reshape(layer.mh, layer.thresholds)


# ---------------------------------------------------------------------------- writing (§3.6)

def classes_text(classes: list[str], newline: str = "\n") -> str:
    # No trailing newline: the board would read it as one more, empty, class (spec §3.6, §4.6).
    return newline.join(classes)


def folder_files(model: BinarizedNetwork) -> dict[str, bytes]:
    """Every file of the folder and its bytes, in the order the board loads them."""
    files: dict[str, bytes] = {}
    for layer in model.layers:
        spec = layer.spec
        for p, words in enumerate(pack_weights(spec, layer.weights)):
            files[f"{spec.index}-{p}-weights.bin"] = words.astype("<u8").tobytes()
        if spec.thresholds:
            for p, values in enumerate(pack_thresholds(spec, layer.thresholds)):
                files[f"{spec.index}-{p}-thres.bin"] = values.astype("<i8").tobytes()
    files[CLASSES_FILE] = classes_text(model.classes, model.classes_newline).encode("utf-8")
    return files


def check_classes(classes: list[str], spec: NetworkSpec) -> None:
    if not 1 <= len(classes) <= spec.max_classes:
        raise BnnctlError(f"{len(classes)} classes given; the overlays support 1..{spec.max_classes}")
    for name in classes:
        if "\n" in name or "\r" in name or name != name.strip():
            raise BnnctlError(f"class name {name!r}: names must be one line without leading/trailing spaces")


def write_params_folder(model: BinarizedNetwork, out_dir: str | Path, force: bool = False,
                        with_config_h: bool = True) -> Path:
    """Write atomically: a temp folder beside `out_dir`, renamed into place when complete."""
    check_classes(model.classes, model.spec)
    files = folder_files(model)
    expected = model.spec.expected_files()
    for name, size in expected.items():  # never write a folder the board would zero-fill
        if len(files[name]) != size:
            raise AssertionError(f"internal error: {name} is {len(files[name])} bytes, expected {size}")
    with atomic_directory(out_dir, force=force) as tmp:
        for name, data in files.items():
            (tmp / name).write_bytes(data)
        if with_config_h:
            (tmp / "config.h").write_text(config_h_text(model.spec), encoding="utf-8")
    return Path(out_dir)


# ---------------------------------------------------------------------------- reading

@dataclass
class FolderCheck:
    """How well a folder's files fit one network's folding table."""

    network: str
    missing: list[str]
    wrong: list[tuple[str, int, int]]  # name, actual size, expected size
    legacy_short: list[tuple[str, int, int]]  # output layer stored for fewer rows (spec §3.9)

    @property
    def fits(self) -> bool:
        return not self.missing and not self.wrong


def check_folder(folder: Path, spec: NetworkSpec) -> FolderCheck:
    missing, wrong, legacy = [], [], []
    out = spec.output_layer
    for name, size in spec.expected_files().items():
        path = folder / name
        if not path.is_file():
            missing.append(name)
            continue
        actual = path.stat().st_size
        if actual == size:
            continue
        # Legacy folders store the output layer for fewer rows; the board zero-fills the rest.
        is_output = name.startswith(f"{out.index}-")
        unit = out.synapse_folds * 8 if name.endswith("weights.bin") else out.thresholds * 8
        if is_output and 0 < actual < size and actual % unit == 0:
            legacy.append((name, actual, size))
        else:
            wrong.append((name, actual, size))
    return FolderCheck(spec.name, missing, wrong, legacy)


def detect_network(folder: Path) -> str:
    fitting = [n for n in available_networks() if check_folder(folder, get_network(n)).fits]
    if len(fitting) == 1:
        return fitting[0]
    if not fitting:
        raise BnnctlError(f"{folder}: not a parameter folder of any known network "
                          f"({', '.join(available_networks())}); check the path")
    raise BnnctlError(f"{folder}: fits several networks ({', '.join(fitting)}); give --network")


def _describe_misfit(folder: Path, check: FolderCheck) -> str:
    if check.missing:
        first = check.missing[0]
        more = f" (and {len(check.missing) - 1} more)" if len(check.missing) > 1 else ""
        return f"{folder}: {first} is missing{more}; expected a complete {check.network} folder"
    name, actual, size = check.wrong[0]
    return f"{folder}: {name} is {actual} bytes, a {check.network} folder needs {size}"


def _read_words(path: Path, dtype: str, count: int) -> np.ndarray:
    data = np.fromfile(path, dtype=dtype)
    if data.size < count:  # legacy short file: the board leaves the rest at 0 (spec §3.9)
        data = np.concatenate([data, np.zeros(count - data.size, dtype=dtype)])
    return data[:count]


def read_classes(folder: Path) -> tuple[list[str], str]:
    """Class names as the board reads them (each line stripped, empty lines kept, spec §4.6),
    and the file's line ending, so that a rewrite is byte-identical."""
    path = folder / CLASSES_FILE
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise BnnctlError(f"{path}: missing; the board needs the class names") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text") from None
    newline = "\r\n" if "\r\n" in text else "\n"
    classes = [line.strip() for line in text.split("\n")]
    return classes, newline


def read_params_folder(folder: str | Path, network: str | None = None) -> BinarizedNetwork:
    """Load a parameter folder into the integer model, checking every file's size.

    Missing or wrongly sized files are errors naming the file. Legacy folders (spec §3.9) whose
    output layer is stored for fewer rows load zero-filled, as on the board, with a warning.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise BnnctlError(f"{folder}: no such parameter folder")
    if network is None:
        network = detect_network(folder)
    spec = get_network(network)
    check = check_folder(folder, spec)
    if not check.fits:
        message = _describe_misfit(folder, check)
        others = [n for n in available_networks() if n != network and check_folder(folder, get_network(n)).fits]
        if others:
            message += f" (it looks like a {others[0]} folder)"
        raise BnnctlError(message)
    for name, actual, size in check.legacy_short:
        warnings.warn(f"{folder / name}: {actual} of {size} bytes (legacy layout); the rest loads as zeros as on the board",
                      LegacyFolderWarning, stacklevel=2)
    classes, newline = read_classes(folder)
    layers = []
    for layer in spec.layers:
        per_pe = [_read_words(folder / f"{layer.index}-{p}-weights.bin", "<u8", layer.wmem) for p in range(layer.pe)]
        weights = unpack_weights(layer, per_pe)
        thresholds = None
        if layer.thresholds:
            per_pe_t = [_read_words(folder / f"{layer.index}-{p}-thres.bin", "<i8", layer.tmem * layer.thresholds)
                        for p in range(layer.pe)]
            thresholds = unpack_thresholds(layer, per_pe_t)
        layers.append(BinarizedLayer(spec=layer, weights=weights, thresholds=thresholds))
    return BinarizedNetwork(spec=spec, layers=layers, classes=classes, classes_newline=newline)
