"""`bnnctl binarize`: trained .npz archive -> BNN-PYNQ parameter folder."""

from __future__ import annotations

from pathlib import Path

import click

from bnnctl.commands.common import (JSON_OPTION, dataset_from_filename, emit_json, network_from_filename,
                                    network_option, require, same_path)
from bnnctl.convert.folder import write_params_folder
from bnnctl.convert.quantize import binarize_archive
from bnnctl.errors import BnnctlError
from bnnctl.state import load_state, update_state
from bnnctl.topology import get_network


def parse_classes(value: str) -> list[str]:
    """--classes FILE (one name a line) or --classes a,b,c."""
    path = Path(value)
    if path.is_file():
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise BnnctlError(f"--classes {value}: cannot read class names ({exc})") from None
        while lines and not lines[-1].strip():
            lines.pop()  # a trailing newline in a user's file is not an extra class
        names = [line.strip() for line in lines]
    elif "," in value or not ("/" in value or value.endswith(".txt")):
        names = [n.strip() for n in value.split(",")]
    else:
        raise BnnctlError(f"--classes {value}: no such file (give a file with one name a line, or a,b,c)")
    if not names or any(not n for n in names):
        raise BnnctlError(f"--classes {value}: class names must not be empty")
    return names


@click.command()
@click.argument("model", required=False, type=click.Path(dir_okay=False, path_type=Path))
@network_option(help="Network the archive was trained as. Default: from the workspace state or the file name "
                     "(e.g. cucumber9-cnvW1A1.npz).")
@click.option("--classes", "-c", "classes_arg", metavar="FILE|a,b,c",
              help="Class names: a file with one name a line, or a comma-separated list. Default: classes.txt "
                   "beside the archive, else the workspace state, else 0,1,2,...")
@click.option("-o", "--out", type=click.Path(file_okay=False, path_type=Path),
              help="Output folder. Default: params/<name>/<network>.")
@click.option("--name", help="Dataset name the folder is deployed under on the board "
                             "(bnn/params/<name>/<network>). Default: the training dataset or the archive name.")
@click.option("--force", is_flag=True, help="Replace a non-empty output folder.")
@JSON_OPTION
def binarize(model, network, classes_arg, out, name, force, as_json):
    """Convert a trained archive (Lasagne .npz layout) into a BNN-PYNQ parameter folder.

    \b
    Writes <L>-<P>-weights.bin, <L>-<P>-thres.bin, classes.txt and config.h, byte for byte
    as the BNN-PYNQ converter (finnthesizer) does, so the folder loads into the existing
    overlays. MODEL defaults to the archive of the last `bnnctl train`.

    \b
    Example:
      bnnctl binarize runs/cucumber9-cnvW1A1/cucumber9-cnvW1A1.npz --network cnvW1A1 -o params/cucumber9/cnvW1A1
    """
    state = load_state()
    from_state = model is None
    model = require(model or (Path(state["npz"]) if state.get("npz") else None), "MODEL archive",
                    "give the .npz path (bnnctl binarize MODEL.npz --network NET)")
    if not model.is_file():
        raise BnnctlError(f"{model}: no such archive")
    same_run = from_state or same_path(model, state.get("npz"))
    network = network or (state.get("network") if same_run else None) or network_from_filename(model)
    network = require(network, "--network", "add --network cnvW1A1|cnvW1A2|cnvW2A2|lfcW1A1|lfcW1A2")
    spec = get_network(network)

    if classes_arg:
        classes = parse_classes(classes_arg)
    elif (model.parent / "classes.txt").is_file():
        classes = parse_classes(str(model.parent / "classes.txt"))
    elif same_run and state.get("classes"):
        classes = list(state["classes"])
    else:
        classes = None
    if name is None:
        name = state.get("dataset") if same_run and state.get("dataset") else dataset_from_filename(model, network)
    out = out or Path("params") / name / network

    net = binarize_archive(model, spec, classes)
    if classes is None:
        click.echo(f"bnnctl: warning: no class names given; using 0..{net.num_classes - 1} (see --classes)", err=True)
    write_params_folder(net, out, force=force)
    update_state(params=out.resolve(), params_name=name, network=network, classes=net.classes)
    summary = {"params": str(out), "network": network, "name": name, "classes": net.classes,
               "files": len(list(out.iterdir())), "bytes": sum(p.stat().st_size for p in out.iterdir())}
    if as_json:
        emit_json(summary)
    else:
        click.echo(f"Wrote {summary['files']} files ({summary['bytes']:,} bytes) to {out}")
        click.echo(f"network {network}, {net.num_classes} classes: {', '.join(net.classes)}")
