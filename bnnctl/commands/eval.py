"""`bnnctl eval`: accuracy, per-class accuracy and confusion matrix over a labelled set."""

from __future__ import annotations

from pathlib import Path

import click

from bnnctl.commands.common import JSON_OPTION, emit_json, network_option, require, show_warnings_as_lines
from bnnctl.convert.folder import read_params_folder
from bnnctl.errors import BnnctlError
from bnnctl.infer.engines import ENGINES
from bnnctl.infer.evaluate import evaluate
from bnnctl.state import load_state


def print_report(ev, title: str) -> None:
    click.echo(f"{title}: {ev.count} images, {ev.errors} errors")
    click.echo(f"Accuracy: {ev.accuracy:.2f} %  (class rule: {ev.classification.rule}, engine: {ev.classification.engine})")
    click.echo("Per-class accuracy:")
    width = max(len(n) for n in ev.class_names) if ev.class_names else 1
    matrix = ev.confusion()
    for i, (name, acc) in enumerate(zip(ev.class_names, ev.per_class_accuracy())):
        shown = f"{acc:6.2f} %" if acc is not None else "     - "
        click.echo(f"  {i:2} {name:{width}}  {shown}  ({int(matrix[i].sum())} images)")
    click.echo("Confusion matrix (rows: true class, columns: predicted):")
    cell = max(4, len(str(matrix.max())) + 1)
    click.echo("    " + "".join(f"{j:>{cell}}" for j in range(len(matrix))))
    for i, row in enumerate(matrix):
        click.echo(f"  {i:2}" + "".join(f"{v:>{cell}}" for v in row))
    for line in ev.classification.timing.lines():
        click.echo(line)


@click.command("eval")
@click.argument("folder", required=False, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--params", "-p", type=click.Path(path_type=Path),
              help="Parameter folder. Default: the folder of the last binarize.")
@network_option(help="Network of the parameter folder. Default: detected from the folder.")
@click.option("--dataset", "-d", type=click.Choice(["mnist", "cifar10", "cucumber9"]),
              help="Evaluate on a standard dataset's split (instead of FOLDER).")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where the dataset files are. Default: $BNNCTL_DATA, then the user cache (downloading if needed).")
@click.option("--split", type=click.Choice(["test", "train"]), default="test", show_default=True)
@click.option("--limit", type=click.IntRange(min=1), help="Only the first N images.")
@click.option("--rule", type=click.Choice(["single", "multiple"]), default="multiple", show_default=True,
              help="Board class rule (spec §4.4); 'multiple' is what classify_cifars/classify_mnists use.")
@click.option("--engine", type=click.Choice(ENGINES), default="auto", show_default=True)
@JSON_OPTION
def eval_cmd(folder, params, network, dataset, data_dir, split, limit, rule, engine, as_json):
    """Accuracy of a parameter folder over a labelled set, bit-exact with the board.

    \b
    Either --dataset (mnist, cifar10, cucumber9: the original file layouts, from --data-dir,
    $BNNCTL_DATA or the user cache) or FOLDER with one sub-folder of images per class
    (sub-folder names sorted must match the folder's classes.txt order).

    \b
    Examples:
      bnnctl eval --params params/mnist/lfcW1A1 --dataset mnist --data-dir data/mnist
      bnnctl eval photos/ --params params/cucumber9/cnvW1A1 --json
    """
    from bnnctl.data.datasets import load_dataset, load_image_folder

    show_warnings_as_lines()
    state = load_state()
    params = require(params or (Path(state["params"]) if state.get("params") else None), "--params",
                     "give the parameter folder (bnnctl eval --params DIR ...)")
    if (folder is None) == (dataset is None):
        raise BnnctlError("give either --dataset NAME or a FOLDER of class sub-folders (not both)")
    model = read_params_folder(params, network)
    if dataset:
        data = load_dataset(dataset, split, data_dir=data_dir, progress=not as_json)
        title = f"{dataset} {split}"
    else:
        data = load_image_folder(folder, model.spec.topology)
        title = str(folder)
    want = "cnv" if model.spec.is_cnv else "lfc"
    if (data.images.ndim == 4) != (want == "cnv"):
        raise BnnctlError(f"{title}: images are {data.images.shape[1:]} but {model.name} needs "
                          f"{'32x32 RGB' if want == 'cnv' else '28x28 grey'} inputs")
    if len(data.classes) != model.num_classes:
        raise BnnctlError(f"{title} has {len(data.classes)} classes but {params}/classes.txt has {model.num_classes}")
    images, labels = data.images, data.labels
    if limit:
        images, labels = images[:limit], labels[:limit]
    ev = evaluate(model, images, labels, rule=rule, engine=engine)
    if as_json:
        emit_json({"params": str(params), "network": model.name, "set": title, **ev.as_json()})
    else:
        print_report(ev, title)
