"""Small helpers shared by the click commands: JSON output, defaults from the workspace state."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import click

from bnnctl.errors import BnnctlError
from bnnctl.topology import available_networks

JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")


def network_option(**kwargs):
    return click.option("--network", "-n", type=click.Choice(available_networks()), **kwargs)


def emit_json(obj) -> None:
    click.echo(json.dumps(obj, indent=2))


def network_from_filename(path: Path) -> str | None:
    """`cucumber9-cnvW1A1.npz` -> 'cnvW1A1' (the name `bnnctl train` gives its archives)."""
    for name in available_networks():
        if re.search(rf"(^|[-_.]){name}($|[-_.])", path.stem):
            return name
    return None


def dataset_from_filename(path: Path, network: str) -> str:
    stem = path.stem
    for sep in ("-", "_"):
        suffix = f"{sep}{network}"
        if stem.endswith(suffix) and len(stem) > len(suffix):
            return stem[: -len(suffix)]
    return stem


def same_path(a, b) -> bool:
    return a is not None and b is not None and Path(a).resolve() == Path(b).resolve()


def show_warnings_as_lines():
    """Library warnings (legacy folders, ...) are shown as one 'warning:' line each."""

    def _show(message, category, filename, lineno, file=None, line=None):
        click.echo(f"bnnctl: warning: {message}", err=True)

    warnings.showwarning = _show


def require(value, what: str, hint: str):
    if value is None:
        raise BnnctlError(f"no {what} given and none recorded in the workspace state; {hint}")
    return value
