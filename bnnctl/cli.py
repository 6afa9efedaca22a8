"""The `bnnctl` command line: a click group whose subcommands live in bnnctl/commands/."""

from __future__ import annotations

import importlib
import sys

import click

from bnnctl import __version__
from bnnctl.errors import BnnctlError

# Module name in bnnctl.commands -> click command attribute(s). Listed in the data-flow order.
COMMANDS = [
    ("train", "train"),
    ("binarize", "binarize"),
    ("deploy", "deploy"),
    ("deploy", "boards"),
    ("infer", "infer"),
    ("eval", "eval_cmd"),
    ("bench", "bench"),
    ("status", "status"),
]


class OrderedGroup(click.Group):
    def list_commands(self, ctx):
        return list(self.commands)


@click.group(cls=OrderedGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="bnnctl")
def cli():
    """Binarized neural networks for Xilinx BNN-PYNQ boards: train, convert, deploy, infer.

    \b
    The usual flow, each command picking up what the previous one wrote
    (recorded in .bnnctl-state.json in the current folder, see `bnnctl status`):
      bnnctl train cucumber9          train a CNV/LFC network (needs bnnctl[train])
      bnnctl binarize                 .npz -> BNN-PYNQ parameter folder
      bnnctl deploy --board pynq      copy the folder to the board over SSH
      bnnctl infer image.png --backend hw   classify on the board (or --backend sw here)
    """


def _register() -> None:
    for module_name, attribute in COMMANDS:
        try:
            module = importlib.import_module(f"bnnctl.commands.{module_name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"bnnctl.commands.{module_name}":
                continue  # command not part of this build
            raise
        command = getattr(module, attribute, None)
        if command is not None:
            cli.add_command(command)


_register()


def main(argv: list[str] | None = None) -> None:
    try:
        cli.main(args=argv, prog_name="bnnctl", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except BnnctlError as exc:
        click.echo(f"bnnctl: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
