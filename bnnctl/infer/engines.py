"""Choice of inference engine. All engines are bit-exact with the numpy reference (spec §4)."""

from __future__ import annotations

from typing import Callable

import numpy as np

from bnnctl.errors import BnnctlError
from bnnctl.infer import numpy_engine
from bnnctl.model import BinarizedNetwork

EngineFn = Callable[[BinarizedNetwork, np.ndarray], np.ndarray]

ENGINES = ("auto", "numpy")


def get_engine(name: str = "auto") -> tuple[str, EngineFn]:
    """(engine name, run function). 'auto' picks the fastest engine available here."""
    if name not in ENGINES:
        raise BnnctlError(f"--engine {name}: expected one of {', '.join(ENGINES)}")
    return "numpy", numpy_engine.run_network
