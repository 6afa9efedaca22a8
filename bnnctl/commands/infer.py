"""`bnnctl infer`: classify images, CIFAR-10 records or MNIST idx3 files."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from bnnctl.commands.common import JSON_OPTION, emit_json, network_option, require, show_warnings_as_lines
from bnnctl.convert.folder import read_params_folder
from bnnctl.errors import BnnctlError
from bnnctl.infer.classify import classify_pixels
from bnnctl.infer.engines import ENGINES
from bnnctl.infer.preprocess import load_input_files
from bnnctl.state import load_state


def result_records(names, classification, class_names, is_cnv):
    records = []
    for i, name in enumerate(names):
        cls = int(classification.classes[i])
        out = classification.outputs[i]
        scores = [int(v) for v in out] if is_cnv else [int(out)]
        records.append({"input": name, "class": cls,
                        "name": class_names[cls] if cls < len(class_names) else "", "scores": scores})
    return records


def print_results(records, timing_lines, details: bool, is_cnv: bool) -> None:
    for r in records:
        click.echo(f"{r['input']}: {r['class']} {r['name']}")
        if details:
            click.echo(f"  scores: {r['scores']}" if is_cnv else f"  output word: {r['scores'][0]:#x}")
    for line in timing_lines:
        click.echo(line)


@click.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--params", "-p", "params", type=click.Path(path_type=Path),
              help="Parameter folder (local), or with --board the dataset name on the board. "
                   "Default: the folder of the last binarize/deploy.")
@network_option(help="Network of the parameter folder. Default: detected from the folder's files.")
@click.option("--backend", type=click.Choice(["sw", "hw"]), default="sw", show_default=True,
              help="sw: bit-exact software engine (here, or on the board with --board); hw: the board's FPGA.")
@click.option("--board", help="Run on this board over SSH (see `bnnctl boards`). With --backend hw, "
                              "default: the board of the last deploy.")
@click.option("--engine", type=click.Choice(ENGINES), default="auto", show_default=True,
              help="Local software engine; all are bit-exact.")
@click.option("--rule", type=click.Choice(["auto", "single", "multiple"]), default="auto", show_default=True,
              help="Board class rule (spec §4.4): 'single' as classify_image/classify_mnist, 'multiple' as "
                   "classify_images/classify_mnists; auto = single for one input, multiple for several.")
@click.option("--details", is_flag=True, help="Also print the scores (CNV) or the output word (LFC).")
@JSON_OPTION
def infer(inputs, params, network, backend, board, engine, rule, details, as_json):
    """Classify INPUT... with a parameter folder, bit-exact with the BNN-PYNQ hardware.

    \b
    INPUT: image files (any format Pillow reads), folders (searched recursively, sorted),
    CIFAR-10 binary record files (.bin, 3073 bytes a record) and MNIST idx3 files.
    Images are pre-processed exactly as the board does (Pillow<=6 thumbnail to 32x32 on a
    white canvas for CNV; 28x28 grey, pixel >= 128 is ink, for LFC).

    \b
    Examples:
      bnnctl infer deer.jpg --params params/cifar10/cnvW1A1 --details
      bnnctl infer t10k-images-idx3-ubyte --params params/mnist/lfcW1A1 --json
      bnnctl infer image.png --backend hw --board pynq
    """
    show_warnings_as_lines()
    state = load_state()
    if backend == "hw" and not board:
        board = state.get("board")  # the board of the last deploy
    if board or backend == "hw":
        if not board:
            raise BnnctlError("--backend hw runs on a board: add --board NAME (see `bnnctl boards`)")
        try:
            from bnnctl.deploy.remote_infer import run_remote_infer
        except ModuleNotFoundError:
            raise BnnctlError("inference on a board is not available in this build") from None
        run_remote_infer(inputs=inputs, params=params, network=network, backend=backend, board=board,
                         rule=rule, details=details, as_json=as_json, state=state)
        return

    params = require(params or (Path(state["params"]) if state.get("params") else None), "--params",
                     "give the parameter folder (bnnctl infer IMAGE --params DIR)")
    model = read_params_folder(params, network)
    items = load_input_files(inputs, model.spec.topology)
    pixels = np.stack([item.pixels for item in items])
    result = classify_pixels(model, pixels, rule=rule, engine=engine)
    records = result_records([item.name for item in items], result, model.classes, model.spec.is_cnv)
    if as_json:
        emit_json({"backend": "sw", "network": model.name, "params": str(params), "engine": result.engine,
                   "rule": result.rule, "results": records, "timing": result.timing.as_json()})
    else:
        print_results(records, result.timing.lines(), details, model.spec.is_cnv)
