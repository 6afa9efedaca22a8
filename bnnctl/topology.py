"""Network topologies and their folding, loaded from configs/networks/*.toml.

A `NetworkSpec` is pure geometry: how many layers, their shapes, the input kind each layer's
arithmetic uses (spec §3.1), and how the overlay folds each matrix onto PEs/SIMD lanes (§1.4).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from bnnctl.errors import BnnctlError

INPUT_KINDS = ("fix8", "xnor", "bipolar", "int2")


def configs_dir() -> Path:
    """configs/ ships inside the wheel as bnnctl/configs; a source checkout has it at the top."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "configs", here.parent / "configs"):
        if (candidate / "networks").is_dir():
            return candidate
    raise BnnctlError("configs/networks not found: the bnnctl installation is incomplete")


def config_files(kind: str) -> dict[str, Path]:
    """configs/<kind>/*.toml (networks, datasets, boards) by name, sorted."""
    return {p.stem: p for p in sorted((configs_dir() / kind).glob("*.toml"))}


@dataclass(frozen=True)
class LayerSpec:
    index: int
    kind: str  # "conv" or "dense"
    input: str  # arithmetic of spec §3.1: fix8 | xnor | bipolar | int2
    weight_bits: int
    activation_bits: int  # output precision; 0 for the CNV score layer (raw accumulators)
    thresholds: int  # API: thresholds per neuron, 0 = none
    simd: int
    pe: int
    wmem: int
    tmem: int
    output: bool = False
    # conv geometry (kernel 3, stride 1, valid)
    in_dim: int = 0
    kernel: int = 0
    in_channels: int = 0
    out_channels: int = 0
    pool: bool = False
    # dense geometry
    in_features: int = 0
    out_features: int = 0
    padded_in_features: int = 0

    @property
    def out_dim(self) -> int:
        return self.in_dim - self.kernel + 1 if self.kind == "conv" else 1

    @property
    def pooled_dim(self) -> int:
        return self.out_dim // 2 if self.pool else self.out_dim

    @property
    def fan_in(self) -> int:
        """Unpadded input count of one neuron (spec §3.3's fanin / n_in)."""
        if self.kind == "conv":
            return self.in_channels * self.kernel * self.kernel
        return self.in_features

    @property
    def rows(self) -> int:
        """Neurons, before padding to a multiple of PE."""
        return self.out_channels if self.kind == "conv" else self.out_features

    @property
    def mw(self) -> int:
        """Matrix width as folded in hardware (columns padded to a multiple of SIMD)."""
        width = self.padded_in_features or self.fan_in
        return -(-width // self.simd) * self.simd

    @property
    def mh(self) -> int:
        return -(-self.rows // self.pe) * self.pe

    @property
    def pad_cols(self) -> int:
        return self.mw - self.fan_in

    @property
    def synapse_folds(self) -> int:
        return self.mw // self.simd

    @property
    def input_bits(self) -> int:
        return {"fix8": 8, "xnor": 1, "bipolar": 1, "int2": 2}[self.input]

    @property
    def weight_file_bytes(self) -> int:
        return self.wmem * 8

    @property
    def thres_file_bytes(self) -> int:
        return self.tmem * self.thresholds * 8


@dataclass(frozen=True)
class NetworkSpec:
    name: str
    topology: str  # "cnv" or "lfc"
    weight_bits: int
    activation_bits: int
    platforms: tuple[str, ...]
    input_kind: str  # "rgb" (CNV) or "binary" (LFC)
    input_height: int
    input_width: int
    input_channels: int
    max_classes: int
    layers: tuple[LayerSpec, ...]

    @property
    def is_cnv(self) -> bool:
        return self.topology == "cnv"

    @property
    def output_layer(self) -> LayerSpec:
        return self.layers[-1]

    @property
    def output_kind(self) -> str:
        """What the board decides on (spec §4.4): "bits" (LFC: thresholded output bits),
        "popcounts" (CNV whose output layer reads 1-bit activations: scores >= 0, so the largest
        wins) or "signed" (CNV with 2-bit activations: the largest wins only if it is > 0)."""
        if not self.is_cnv:
            return "bits"
        return "popcounts" if self.output_layer.input == "xnor" else "signed"

    def expected_files(self) -> dict[str, int]:
        """Every file of a current-format parameter folder and its exact size (spec §3.6)."""
        files = {}
        for layer in self.layers:
            for pe in range(layer.pe):
                files[f"{layer.index}-{pe}-weights.bin"] = layer.weight_file_bytes
                if layer.thresholds:
                    files[f"{layer.index}-{pe}-thres.bin"] = layer.thres_file_bytes
        return files


def _layer_from_table(index: int, table: dict, source: Path) -> LayerSpec:
    known = set(LayerSpec.__dataclass_fields__) - {"index"}
    unknown = set(table) - known
    if unknown:
        raise BnnctlError(f"{source}: layer {index}: unknown keys {sorted(unknown)}")
    try:
        layer = LayerSpec(index=index, **table)
    except TypeError as exc:
        raise BnnctlError(f"{source}: layer {index}: {exc}") from None
    if layer.input not in INPUT_KINDS:
        raise BnnctlError(f"{source}: layer {index}: input must be one of {INPUT_KINDS}")
    # The folding table must be self-consistent (spec §1.4: WMEM = MW*MH/(SIMD*PE), TMEM = MH/PE).
    if layer.wmem != layer.mw * layer.mh // (layer.simd * layer.pe) or layer.tmem != layer.mh // layer.pe:
        raise BnnctlError(f"{source}: layer {index}: WMEM/TMEM do not match MW={layer.mw}, MH={layer.mh}")
    return layer


def load_network_file(path: Path) -> NetworkSpec:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise BnnctlError(f"{path}: cannot read network config ({exc})") from None
    layers = tuple(_layer_from_table(i, t, path) for i, t in enumerate(data.get("layers", [])))
    inp = data["input"]
    return NetworkSpec(
        name=data["name"], topology=data["topology"], weight_bits=data["weight_bits"],
        activation_bits=data["activation_bits"], platforms=tuple(data["platforms"]),
        input_kind=inp["kind"], input_height=inp["height"], input_width=inp["width"],
        input_channels=inp["channels"], max_classes=data["max_classes"], layers=layers)


@functools.lru_cache(maxsize=None)
def available_networks() -> tuple[str, ...]:
    return tuple(config_files("networks"))


@functools.lru_cache(maxsize=None)
def get_network(name: str) -> NetworkSpec:
    if name not in available_networks():
        raise BnnctlError(f"unknown network '{name}': expected one of {', '.join(available_networks())}")
    return load_network_file(config_files("networks")[name])
