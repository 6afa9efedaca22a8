"""The compiled bit-packed engine (issue 5): XNOR-popcount layers on packed words, AVX-512 /
AVX2 / NEON chosen at run time, threads over the batch or within a layer.

Bit-exact with the numpy reference engine (spec §4.3); `available()` is False when the C
extension was not built (no compiler at install time), and the caller then uses numpy.
"""

from __future__ import annotations

import importlib
import os
import weakref

import numpy as np

from bnnctl.errors import BnnctlError
from bnnctl.infer.fastbnn.pack import PackedModel, UnsupportedModel, pack_network
from bnnctl.model import BinarizedNetwork

try:
    _ext = importlib.import_module("bnnctl.infer.fastbnn._fastbnn")
except ModuleNotFoundError:  # not built: pip install without a C compiler
    _ext = None
    IMPORT_ERROR = "the C extension was not compiled when bnnctl was installed"
except ImportError as exc:  # built but unloadable (e.g. copied from another platform)
    _ext = None
    IMPORT_ERROR = f"the C extension does not load: {exc}"
else:
    IMPORT_ERROR = ""

__all__ = ["available", "isas", "default_threads", "run_network", "packed", "UnsupportedModel"]

ISA_ENV = "BNNCTL_FAST_ISA"  # force a variant (tests, benchmarks): avx512, avx2, popcnt, neon, generic
THREADS_ENV = "BNNCTL_THREADS"


def available() -> bool:
    return _ext is not None


def isas() -> list[str]:
    """Instruction-set variants this CPU can run, best first (empty when not built)."""
    return list(_ext.isas()) if _ext is not None else []


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_threads(threads: int | None = None) -> int:
    """The argument if given, else $BNNCTL_THREADS, else the CPUs this process may use."""
    if threads is None:
        env = os.environ.get(THREADS_ENV, "").strip()
        if env:
            try:
                threads = int(env)
            except ValueError:
                raise BnnctlError(f"{THREADS_ENV}={env!r}: expected a whole number of threads") from None
        else:
            threads = _cpu_count()
    if threads < 1:
        raise BnnctlError(f"thread count must be at least 1, got {threads}")
    return threads


class _Entry:
    """Packed copy of one model, plus what it was packed from to notice replaced arrays."""

    def __init__(self, model: BinarizedNetwork):
        self.key = _arrays_key(model)
        self.packed: PackedModel = pack_network(model)
        self.capsule = _ext.build_model(*self.packed.header, self.packed.layers)


def _arrays_key(model: BinarizedNetwork) -> tuple:
    return tuple((id(layer.weights), id(layer.thresholds)) for layer in model.layers)


# id(model) -> _Entry; the entry goes when the model is garbage collected. A dataclass is not
# hashable, so a WeakKeyDictionary cannot hold it. Arrays changed in place are not noticed.
_CACHE: dict[int, _Entry] = {}


def _entry(model: BinarizedNetwork) -> _Entry:
    entry = _CACHE.get(id(model))
    if entry is None or entry.key != _arrays_key(model):
        entry = _Entry(model)
        if id(model) not in _CACHE:
            weakref.finalize(model, _CACHE.pop, id(model), None)
        _CACHE[id(model)] = entry
    return entry


def packed(model: BinarizedNetwork) -> PackedModel:
    """The packed form of a model (cached per model object)."""
    if _ext is None:
        raise BnnctlError(f"the fast engine is not built here ({IMPORT_ERROR})")
    return _entry(model).packed


def run_network(model: BinarizedNetwork, inputs: np.ndarray, threads: int | None = None,
                isa: str | None = None, split_images: bool | None = None) -> np.ndarray:
    """Same contract as numpy_engine.run_network: CNV int8 (N, 32, 32, 3) codes -> int16 scores
    (N, 64); LFC uint8 (N, 832) 0/1 bits -> uint64 output words (N,).

    threads: at most this many (default `default_threads()`). With fewer images than threads,
    split_images decides whether one image's layers are shared by several threads: True always,
    False never, None (default) only while the machine has idle CPUs (by the load average): on
    a busy machine a preempted team member stalls the others for a scheduler tick.
    isa: force an instruction-set variant (default: $BNNCTL_FAST_ISA, else the best)."""
    if _ext is None:
        raise BnnctlError(f"the fast engine is not built here ({IMPORT_ERROR})")
    entry = _entry(model)
    is_cnv = model.spec.is_cnv
    n = len(inputs)
    x = np.ascontiguousarray(inputs, dtype=np.int8 if is_cnv else np.uint8)
    if x.size != n * entry.packed.header[1]:
        raise BnnctlError(f"fast engine: {model.name} expects {entry.packed.header[1]} input values per image, "
                          f"got shape {tuple(np.shape(inputs))}")
    out = np.zeros((n, entry.packed.out_rows), np.int16) if is_cnv else np.zeros(n, np.uint64)
    if n:
        try:
            split = -1 if split_images is None else int(bool(split_images))
            _ext.run(entry.capsule, x, out, n, default_threads(threads), isa or os.environ.get(ISA_ENV) or None,
                     split)
        except ValueError as exc:  # e.g. an instruction set this CPU lacks
            raise BnnctlError(str(exc)) from None
    return out
