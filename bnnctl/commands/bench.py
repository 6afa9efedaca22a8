"""`bnnctl bench`: speed of a local inference engine (images/s, usec per image, peak RSS)."""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path

import click
import numpy as np

from bnnctl.commands.common import JSON_OPTION, emit_json, network_option, show_warnings_as_lines
from bnnctl.convert.folder import read_params_folder
from bnnctl.errors import BnnctlError
from bnnctl.infer import fastbnn
from bnnctl.infer.classify import encode_inputs
from bnnctl.infer.engines import ENGINES, get_engine
from bnnctl.model import BinarizedLayer, BinarizedNetwork
from bnnctl.topology import NetworkSpec, get_network


def synthetic_network(spec: NetworkSpec, rng: np.random.Generator) -> BinarizedNetwork:
    """Random weights and thresholds of the right shapes: speed does not depend on the values."""
    layers = []
    for s in spec.layers:
        if s.weight_bits == 1:
            w = np.where(rng.random((s.mh, s.mw)) < 0.5, -1, 1).astype(np.int8)
        else:
            w = rng.integers(-1, 2, (s.mh, s.mw)).astype(np.int8)
        thresholds = None
        if s.thresholds:
            # around the middle of the accumulator's range, so activations are mixed
            centre = s.fan_in // 2 if s.input == "xnor" else 0
            spread = max(1, int(np.sqrt(s.fan_in)))
            t = rng.integers(centre - spread, centre + spread + 1, (s.mh, s.thresholds))
            thresholds = np.sort(t, axis=1).astype(np.int64)
        layers.append(BinarizedLayer(spec=s, weights=w, thresholds=thresholds))
    classes = [str(i) for i in range(min(10, spec.max_classes))]
    return BinarizedNetwork(spec=spec, layers=layers, classes=classes)


def random_pixels(spec: NetworkSpec, count: int, rng: np.random.Generator) -> np.ndarray:
    if spec.is_cnv:
        return rng.integers(0, 256, (count, spec.input_height, spec.input_width, spec.input_channels), dtype=np.uint8)
    return rng.integers(0, 256, (count, spec.input_height, spec.input_width), dtype=np.uint8)


def peak_rss_mib() -> float:
    """Peak resident set size of this process.

    Linux: VmHWM of /proc/self/status, because ru_maxrss survives execve and would report the
    parent's peak when bench is started from a large process. Elsewhere ru_maxrss (KiB on
    Linux/BSD, bytes on macOS)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def time_engine(run, model, inputs, repeat: int) -> float:
    """Best wall time of `repeat` runs after one warm-up run (which also packs the model)."""
    run(model, inputs[:1])
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        run(model, inputs)
        best = min(best, time.perf_counter() - start)
    return best


@click.command()
@network_option(help="Network to time (default: cnvW1A1, or the one of --params).")
@click.option("--batch", "-b", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Images per inference call.")
@click.option("--engine", type=click.Choice(ENGINES), default="auto", show_default=True)
@click.option("--params", "-p", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Parameter folder to time (default: random parameters of --network).")
@click.option("--threads", "-t", type=click.IntRange(min=1),
              help="Threads of the fast engine (default: $BNNCTL_THREADS, else all CPUs).")
@click.option("--isa", help="Instruction-set variant of the fast engine (default: the best this CPU has).")
@click.option("--repeat", type=click.IntRange(min=1), default=3, show_default=True,
              help="Timed runs; the best one is reported.")
@JSON_OPTION
def bench(network, batch, engine, params, threads, isa, repeat, as_json):
    """Time a local inference engine on BATCH random images.

    \b
    Prints images/s, microseconds per image and the process's peak RSS.
    Inputs are random pixels, pre-processed as for `infer` (not timed).

    \b
    Examples:
      bnnctl bench --network cnvW1A1 --batch 1000
      bnnctl bench --network lfcW1A1 --batch 10000 --threads 2 --json
      bnnctl bench --params params/cifar10/cnvW1A1 --batch 1 --engine numpy
    """
    show_warnings_as_lines()
    rng = np.random.default_rng(0)
    if params:
        model = read_params_folder(params, network)
    else:
        model = synthetic_network(get_network(network or "cnvW1A1"), rng)
    engine_name, run = get_engine(engine)
    used_isa, used_threads = None, None
    if engine_name == "fast":
        used_threads = fastbnn.default_threads(threads)
        if isa and isa not in fastbnn.isas():
            raise BnnctlError(f"--isa {isa}: not available here (this CPU has: {', '.join(fastbnn.isas())})")
        used_isa = isa or fastbnn.isas()[0]

        def run(m, x):
            return fastbnn.run_network(m, x, threads=used_threads, isa=used_isa)
    elif threads or isa:
        raise BnnctlError("--threads and --isa apply to the fast engine only")
    inputs = encode_inputs(model, random_pixels(model.spec, batch, rng))
    seconds = time_engine(run, model, inputs, repeat)
    result = {
        "network": model.name, "params": str(params) if params else "synthetic", "batch": batch,
        "engine": engine_name, "isa": used_isa, "threads": used_threads, "repeat": repeat,
        "seconds": seconds, "images_per_second": batch / seconds, "usec_per_image": seconds * 1e6 / batch,
        "peak_rss_mib": peak_rss_mib(),
    }
    if as_json:
        emit_json(result)
        return
    detail = f" ({used_isa}, {used_threads} thread{'s' if used_threads != 1 else ''})" if used_isa else ""
    click.echo(f"{model.name}, {batch} image{'s' if batch != 1 else ''}, engine {engine_name}{detail}, "
               f"{result['params']} parameters")
    click.echo(f"  {result['images_per_second']:.1f} images/s, {result['usec_per_image']:.2f} usec per image "
               f"(best of {repeat})")
    click.echo(f"  peak RSS: {result['peak_rss_mib']:.1f} MiB")
