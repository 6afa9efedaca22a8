"""`bnnctl status`: what the workspace state says the bare commands will use."""

from __future__ import annotations

import click

from bnnctl.commands.common import JSON_OPTION, emit_json
from bnnctl.state import KEYS, load_state, state_path


@click.command()
@JSON_OPTION
def status(as_json):
    """Show the workspace state (.bnnctl-state.json in the current folder).

    Each command records what it produced there (run folder, archive, parameter folder,
    network, classes, board); the next command uses it as its default. Explicit arguments
    always win. Delete the file to start afresh.
    """
    state = load_state()
    if as_json:
        emit_json({"state_file": str(state_path()), **state})
        return
    if not state:
        click.echo(f"No workspace state in {state_path().parent} yet (start with `bnnctl train` or `bnnctl binarize`).")
        return
    click.echo(f"Workspace state: {state_path()}")
    for key in KEYS:
        if key in state:
            value = state[key]
            if isinstance(value, list):
                value = ", ".join(map(str, value))
            elif isinstance(value, dict):
                value = ", ".join(f"{k}={v}" for k, v in value.items())
            click.echo(f"  {key:12} {value}")
    if "updated" in state:
        click.echo(f"  {'updated':12} {state['updated']}")
