"""Choice of inference engine. All engines are bit-exact with the numpy reference (spec §4)."""

from __future__ import annotations

import warnings
from typing import Callable

import numpy as np

from bnnctl.errors import BnnctlError
from bnnctl.infer import fastbnn, numpy_engine
from bnnctl.model import BinarizedNetwork

EngineFn = Callable[[BinarizedNetwork, np.ndarray], np.ndarray]

# auto: the compiled engine when it was built at install time, else numpy.
ENGINES = ("auto", "fast", "numpy")

_warned = False


def _warn_no_fast_engine() -> None:
    """One line, once per process: the install had no C compiler (or the build failed)."""
    global _warned
    if not _warned:
        _warned = True
        warnings.warn("the compiled fast engine is not built; using the slower numpy engine "
                      "(reinstall bnnctl with a C compiler to get it)", RuntimeWarning, stacklevel=3)


def _fast_or_numpy(model: BinarizedNetwork, inputs: np.ndarray) -> np.ndarray:
    """'auto' with the fast engine: a network geometry it does not handle (a custom network
    config) runs on numpy instead of failing."""
    try:
        return fastbnn.run_network(model, inputs)
    except fastbnn.UnsupportedModel as exc:
        warnings.warn(f"{exc}; using the numpy engine", RuntimeWarning, stacklevel=2)
        return numpy_engine.run_network(model, inputs)


def get_engine(name: str = "auto") -> tuple[str, EngineFn]:
    """(engine name, run function). 'auto' picks the fastest engine available here."""
    if name not in ENGINES:
        raise BnnctlError(f"--engine {name}: expected one of {', '.join(ENGINES)}")
    if name == "numpy":
        return "numpy", numpy_engine.run_network
    if fastbnn.available():
        return "fast", fastbnn.run_network if name == "fast" else _fast_or_numpy
    if name == "fast":
        raise BnnctlError(f"--engine fast: the compiled engine is not built here ({fastbnn.IMPORT_ERROR}); "
                          "reinstall bnnctl with a C compiler or use --engine numpy")
    _warn_no_fast_engine()
    return "numpy", numpy_engine.run_network
