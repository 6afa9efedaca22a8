"""`bnnctl infer --board`: classify on a board with its own `bnn` package (hw or sw runtime).

Inputs are pre-processed here, on the host (spec bnn-pynq-format.md §4.1/§4.2, §9: boards run
old Pillow versions whose thumbnails differ), and sent as CIFAR-10 records (CNV) or one idx3
file (LFC). hw/board_infer.py runs on the board and answers with one JSON object; the results
are printed with the same functions, lines and JSON shape as a local `bnnctl infer`.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from types import SimpleNamespace

import click
import numpy as np

from bnnctl.commands.common import emit_json
from bnnctl.commands.infer import print_results, result_records
from bnnctl.deploy.probe import (BnnMissing, BoardWork, OverlayMissing, last_json, probe, remote_failure,
                                 require_bnn, require_overlay)
from bnnctl.deploy.profiles import get_profile
from bnnctl.deploy.ssh import BoardError, BoardSession
from bnnctl.errors import BnnctlError
from bnnctl.infer.classify import pick_rule
from bnnctl.infer.preprocess import cifar_records_bytes, idx3_bytes, load_input_files, stack_pixels
from bnnctl.infer.timing import Timing
from bnnctl.topology import available_networks, get_network

MARKER = "@@BNNCTL-RESULT@@ "  # must equal hw/board_infer.py's MARKER
RUNTIME = {"hw": "python_hw", "sw": "python_sw"}  # spec §5 RUNTIME_HW / RUNTIME_SW
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class ParamsNotDeployed(BoardError):
    pass


def board_program() -> Path:
    """hw/board_infer.py: beside the package in a checkout, or inside it in an installed wheel."""
    here = Path(__file__).resolve().parent.parent  # bnnctl/
    for candidate in (here / "hw" / "board_infer.py", here.parent / "hw" / "board_infer.py"):
        if candidate.is_file():
            return candidate
    raise BnnctlError("hw/board_infer.py not found: the bnnctl installation is incomplete")


def check_name(name: str, option: str = "--params") -> str:
    if not NAME_RE.match(name):
        hint = " (a local folder must be deployed first: bnnctl deploy DIR --board B)" if Path(name).is_dir() else ""
        raise BnnctlError(f"{option} {name}: with --board this is the dataset name on the board "
                          f"(bnn/params/<NAME>/<NETWORK>), e.g. {option} cifar10{hint}")
    return name


def _state_defaults(state: dict, board: str) -> tuple[str | None, str | None]:
    """(params name, network) recorded by the last deploy to this board, else by binarize."""
    deployed = state.get("deployed") or {}
    if deployed.get("board") == board and deployed.get("name"):
        return deployed["name"], deployed.get("network")
    return state.get("params_name"), state.get("network")


def use_sudo(profile, uid: int, runtime: str) -> bool:
    # On a PYNQ image the hw runtime needs root (bitstream download, /dev/mem, CMA buffers).
    if profile.sudo_infer == "always":
        return uid != 0
    if profile.sudo_infer == "never":
        return False
    return runtime == "python_hw" and uid != 0


def _fail(answer: dict, profile, name: str, network: str) -> BoardError:
    kind = answer.get("error")
    message = answer.get("message", "")
    if kind == "no_bnn":
        return BnnMissing(f"board {profile.name}: {message}")
    if kind == "params_missing":
        have = ", ".join(answer.get("available", [])) or "none"
        return ParamsNotDeployed(f"board {profile.name}: params {name}/{network} are not deployed "
                                 f"(available for {network}: {have}); run bnnctl deploy first")
    if kind == "overlay_missing":
        return OverlayMissing(f"board {profile.name}: {message}")
    return BoardError(f"board {profile.name}: inference failed: {message}")


def run_remote_infer(*, inputs, params, network, backend, board, rule, details, as_json, state) -> None:
    profile = get_profile(board)
    runtime = RUNTIME[backend]
    name_default, network_default = _state_defaults(state, profile.name)
    name = check_name(str(params)) if params else None
    if name is None:
        name = name_default
    elif name != name_default:
        network_default = None  # the recorded network belongs to other params
    network = network or network_default
    # Pre-process first when the network is known: a bad input fails before any connection.
    items = load_input_files(inputs, get_network(network).topology) if network else None

    with BoardSession(profile) as session:
        work = BoardWork.open(session)
        try:
            info = probe(work)
            require_bnn(info, profile)
            on_board = info.raw.get("params", {})
            if name is None:
                raise BnnctlError(f"no --params given and none recorded in the workspace state; give the dataset "
                                  f"name on the board (present: {', '.join(on_board) or 'none'})")
            if network is None:
                nets = [n for n in on_board.get(name, []) if n in available_networks()]
                if len(nets) != 1:
                    raise (ParamsNotDeployed(f"board {profile.name}: no params named {name} "
                                             f"(present: {', '.join(on_board) or 'none'}); run bnnctl deploy first")
                           if not nets else
                           BnnctlError(f"board {profile.name}: params {name} exist for {', '.join(nets)}; "
                                       f"give --network"))
                network = nets[0]
            if network not in on_board.get(name, []):
                raise _fail({"error": "params_missing", "available": info.params_for(network)}, profile, name, network)
            require_overlay(info, profile, network, (runtime,))
            spec = get_network(network)
            if items is None:
                items = load_input_files(inputs, spec.topology)
            pixels = stack_pixels(items)
            payload = cifar_records_bytes(pixels) if spec.is_cnv else idx3_bytes(pixels)
            chosen_rule = pick_rule(rule, len(items))

            start = time.perf_counter()
            work.put("board_infer.py", board_program().read_bytes())
            remote_input = work.put("inputs.bin", payload)
            result = work.run_python(
                "board_infer.py",
                ["--network", network, "--params", name, "--runtime", runtime, "--rule", chosen_rule,
                 "--input", remote_input, "--board-env", profile.board_env],
                sudo=use_sudo(profile, info.uid, runtime), what="inference")
            end_to_end = (time.perf_counter() - start) * 1e6
        finally:
            work.close()

    answer = last_json(result.text, MARKER)
    if answer is None:
        raise remote_failure(result, f"board {profile.name}: the inference program (hw/board_infer.py)")
    if not answer.get("ok"):
        raise _fail(answer, profile, name, network)
    _report(answer, items, spec, profile, backend, chosen_rule, end_to_end, details, as_json)


def _report(answer: dict, items, spec, profile, backend: str, rule: str, end_to_end: float, details: bool,
            as_json: bool) -> None:
    class_names = answer["class_names"]
    predictions = np.asarray(answer["predictions"], dtype=np.int64)
    if len(predictions) != len(items):
        raise BoardError(f"board {profile.name}: answered for {len(predictions)} inputs, {len(items)} were sent")
    names = [item.name for item in items]
    if spec.is_cnv:
        outputs = np.asarray(answer["scores"], dtype=np.int64).reshape(len(items), len(class_names))
        records = result_records(names, SimpleNamespace(classes=predictions, outputs=outputs), class_names, True)
    else:
        # The board's LfcClassifier returns classes only (spec §5): no output word to report.
        placeholder = np.zeros(len(items), dtype=np.uint64)
        records = result_records(names, SimpleNamespace(classes=predictions, outputs=placeholder), class_names, False)
        for record in records:
            record["scores"] = None
    calls = answer["calls"]
    usec = sum(c["usec_per_image"] * c["images"] for c in calls)
    timing = Timing.from_duration(usec, len(items))
    if as_json:
        emit_json({"backend": backend, "board": profile.name, "host": profile.host, "network": spec.name,
                   "params": answer["params"], "engine": answer["runtime"], "rule": rule, "results": records,
                   "timing": {**timing.as_json(), "usec_end_to_end": end_to_end},
                   "board_python": answer.get("python"), "board_env": answer.get("board_env")})
        return
    click.echo(f"Board {profile.name} ({profile.host}), runtime {answer['runtime']}, "
               f"params {answer['params']}/{spec.name}")
    if details and not spec.is_cnv:
        click.echo("bnnctl: note: the board's LfcClassifier reports classes only; no output words to show", err=True)
    print_results(records, timing.lines(), details and spec.is_cnv, spec.is_cnv)
    click.echo(f"End to end (upload, board run, results back): {end_to_end / 1000:.1f} ms")
