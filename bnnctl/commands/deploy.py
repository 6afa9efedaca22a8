"""`bnnctl deploy` (parameter folder -> board) and `bnnctl boards` (profiles, `check`)."""

from __future__ import annotations

from pathlib import Path

import click

from bnnctl.commands.common import JSON_OPTION, emit_json, network_option, require, same_path, show_warnings_as_lines
from bnnctl.deploy.probe import BoardWork, describe, echo_lines, probe
from bnnctl.deploy.profiles import get_profile, load_profiles, user_boards_file
from bnnctl.deploy.remote_infer import check_name
from bnnctl.deploy.ssh import BoardSession, fingerprint
from bnnctl.deploy.upload import deploy as run_deploy
from bnnctl.errors import BnnctlError
from bnnctl.state import load_state, update_state
from bnnctl.topology import available_networks


def connection_options(func):
    """--board plus the per-call overrides of the profile's connection settings."""
    options = [
        click.option("--board", "-b", help="Board profile (see `bnnctl boards`). Default: the board of the last deploy."),
        click.option("--host", help="Host name or address (overrides the profile)."),
        click.option("--port", type=click.IntRange(1, 65535), help="SSH port (overrides the profile)."),
        click.option("--user", help="Login user (overrides the profile)."),
        click.option("--identity", "-i", type=click.Path(dir_okay=False, path_type=Path),
                     help="Private key file to log in with (besides the ssh agent and ~/.ssh/id_*)."),
        click.option("--known-hosts", type=click.Path(dir_okay=False, path_type=Path),
                     help="known_hosts file to check the board's host key against. Default: ~/.ssh/known_hosts."),
        click.option("--accept-new-host-key", is_flag=True,
                     help="Trust an unknown host key on first contact and add it to known_hosts "
                          "(a changed key is refused regardless)."),
        click.option("--connect-timeout", type=click.FloatRange(min=0.1), help="Seconds to wait for the board."),
        click.option("--command-timeout", type=click.FloatRange(min=1), help="Seconds a remote step may take."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def resolve_profile(board, host, port, user, identity, known_hosts, connect_timeout, command_timeout, state):
    board = require(board or state.get("board"), "--board", "add --board NAME (see `bnnctl boards`)")
    profile = get_profile(board)
    return profile.with_overrides(
        host=host, port=port, user=user,
        identity=str(identity.expanduser().resolve()) if identity else None,
        known_hosts=str(known_hosts.expanduser().resolve()) if known_hosts else None,
        connect_timeout=connect_timeout, command_timeout=command_timeout)


def _default_name(folder: Path, network: str | None, state: dict) -> str:
    if same_path(folder, state.get("params")) and state.get("params_name"):
        return state["params_name"]
    # binarize writes params/<name>/<network>/: the folder's parent names the dataset
    resolved = folder.resolve()
    if resolved.name == network or resolved.name in available_networks():
        return resolved.parent.name
    raise BnnctlError(f"{folder}: cannot tell the dataset name it is deployed under; add --name NAME "
                      f"(the board folder is bnn/params/<NAME>/<NETWORK>)")


@click.command()
@click.argument("params_dir", required=False, type=click.Path(file_okay=False, path_type=Path))
@connection_options
@click.option("--name", help="Dataset name on the board: the folder becomes bnn/params/<NAME>/<NETWORK>/. "
                             "Default: the name given at binarize, or the folder's parent folder name.")
@network_option(help="Network of the folder. Default: detected from its files.")
@click.option("--dry-run", is_flag=True, help="Validate, connect and compare, but change nothing on the board.")
@JSON_OPTION
def deploy(params_dir, board, host, port, user, identity, known_hosts, accept_new_host_key, connect_timeout,
           command_timeout, name, network, dry_run, as_json):
    """Copy a parameter folder to a board, safely, so CnvClassifier/LfcClassifier find it.

    \b
    The folder is validated here first. On the board it lands in bnn/params/<NAME>/<NETWORK>/:
    files are uploaded to a temporary folder, each sha256 is verified on the board, then the
    folder is swapped in with a rename (via sudo where it is root-owned; the password comes from
    $BNNCTL_SUDO_PASSWORD, the login password or a prompt, and is only ever sent on stdin).
    Until that swap the previous version is untouched; unchanged files are not uploaded again.
    PARAMS_DIR defaults to the folder of the last `bnnctl binarize`.

    \b
    Examples:
      bnnctl deploy --board pynq
      bnnctl deploy params/cifar10/cnvW1A1 --board pynq-z2 --host 10.0.0.7 --name cifar10
    """
    show_warnings_as_lines()
    state = load_state()
    folder = require(params_dir or (Path(state["params"]) if state.get("params") else None), "PARAMS_DIR",
                     "give the parameter folder (bnnctl deploy params/NAME/NETWORK --board pynq)")
    if not folder.is_dir():
        raise BnnctlError(f"{folder}: no such parameter folder")
    profile = resolve_profile(board, host, port, user, identity, known_hosts, connect_timeout, command_timeout, state)
    name = check_name(name or _default_name(folder, network, state), "--name")
    progress = None if as_json else (lambda message: click.echo(message, err=True))
    report = run_deploy(folder, profile, name, network, dry_run=dry_run, accept_new_host_key=accept_new_host_key,
                        progress=progress)
    if not dry_run:
        update_state(board=profile.name, params_name=name, network=report["network"], deployed={
            "board": profile.name, "host": profile.host, "name": name, "network": report["network"],
            "target": report["target"], "source": report["source"], "files": report["files"],
            "at": report.get("deployed_at") or load_state().get("updated", "")})
    if as_json:
        emit_json(report)
        return
    _print_report(report)


def _size(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 100_000 else f"{n / 1e3:.1f} kB" if n >= 1000 else f"{n} bytes"


def _print_report(r: dict) -> None:
    where = f"{r['board']} ({r['user']}@{r['host']}:{r['port']})"
    target = f"bnn/params/{r['name']}/{r['network']}"
    if r["up_to_date"]:
        click.echo(f"Board {where} already has {target} identical to {r['source']}: nothing uploaded.")
        return
    size = _size(r["bytes_uploaded"])
    removed = f", {len(r['removed'])} removed" if r["removed"] else ""
    if r["dry_run"]:
        click.echo(f"Dry run: would upload {len(r['uploaded'])} of {r['files']} files ({size}) to {where}, "
                   f"{r['unchanged']} unchanged{removed}; target {r['target']}"
                   f"{' (via sudo)' if r['sudo'] else ''}. Nothing was changed.")
        return
    action = "replaced the previous version" if r["replaced"] else "new"
    click.echo(f"Deployed {r['source']} to {where}:")
    click.echo(f"  target    {r['target']} ({action}{', via sudo' if r['sudo'] else ''})")
    click.echo(f"  uploaded  {len(r['uploaded'])} of {r['files']} files ({size}), {r['unchanged']} unchanged"
               f"{removed}; every sha256 verified on the board")
    click.echo(f"Classify there: bnnctl infer IMAGE --backend hw --board {r['board']} --params {r['name']}")


# ------------------------------------------------------------------------------------------ boards

@click.group(invoke_without_command=True)
@JSON_OPTION
@click.pass_context
def boards(ctx, as_json):
    """List the board profiles; `bnnctl boards check --board NAME` probes one.

    \b
    Built-in profiles: configs/boards/*.toml (stock PYNQ images: host 192.168.2.99, user xilinx).
    Your own settings and boards: $BNNCTL_BOARDS_FILE, else $XDG_CONFIG_HOME/bnnctl/boards.toml,
    else ~/.config/bnnctl/boards.toml, e.g.
    \b
      [pynq]              # change the PYNQ-Z1/Z2 profile
      host = "10.0.0.7"
      [lab-ultra96]       # a board of your own, based on a profile
      base = "ultra96"
      host = "ultra96.lab"
      identity = "~/.ssh/id_ed25519_boards"
    """
    if ctx.invoked_subcommand is not None:
        return
    profiles = load_profiles()
    if as_json:
        emit_json({"user_file": str(user_boards_file()), "boards": [p.as_json() for p in profiles.values()]})
        return
    for p in profiles.values():
        aliases = f" (alias: {', '.join(p.aliases)})" if p.aliases else ""
        click.echo(f"{p.name:14} {p.platform:10} {p.address:28} {p.description}{aliases}")
    click.echo(f"Your settings: {user_boards_file()}")


@boards.command("check")
@connection_options
@JSON_OPTION
def check(board, host, port, user, identity, known_hosts, accept_new_host_key, connect_timeout, command_timeout,
          as_json):
    """Connect to a board and report what is on it (python, bnn, overlays, params, disk).

    Read-only, except that --accept-new-host-key records a new host key in known_hosts.
    """
    state = load_state()
    profile = resolve_profile(board, host, port, user, identity, known_hosts, connect_timeout, command_timeout, state)
    with BoardSession(profile, accept_new_host_key=accept_new_host_key) as session:
        work = BoardWork.open(session)
        try:
            result = probe(work)
        finally:
            work.close()
    if as_json:
        key = session.host_key
        emit_json({"board": profile.name, "host": profile.host, "port": profile.port, "user": profile.user,
                   "platform": profile.platform,
                   "host_key": f"{key.get_name()} {fingerprint(key)}" if key is not None else None,
                   "host_key_added": session.added_host_key, **result.raw})
        return
    echo_lines(describe(result, profile, session))

