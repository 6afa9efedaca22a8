"""`bnnctl deploy`: copy a validated parameter folder to bnn/params/<NAME>/<NETWORK>/ on a board.

The sequence (issue 4; spec bnn-pynq-format.md §9 "Deploy"):
1. validate the folder locally (sizes against the folding table, spec §1.4/§3.6): the board
   would silently zero-fill a short file (§3.9);
2. probe the board (bnn location, overlay for network + platform, free space, ownership);
3. compare sha256 with what the board has and upload only the files that differ, into a
   private staging folder;
4. on the board, build the new folder beside the target, verify every sha256 there, then swap
   it in with two renames (sudo where the folder is root-owned).
The current folder is untouched until the swap, so any failure leaves it exactly as it was.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

from bnnctl.convert.folder import CLASSES_FILE, read_params_folder
from bnnctl.deploy.probe import BoardWork, probe, require_bnn, require_overlay
from bnnctl.deploy.profiles import BoardProfile
from bnnctl.deploy.ssh import BoardError, BoardSession, ConnectionLost
from bnnctl.errors import BnnctlError

DISK_MARGIN = 1 << 20  # keep a MiB free: a full root filesystem makes a PYNQ image misbehave


class DiskFull(BoardError):
    pass


@dataclass(frozen=True)
class LocalFile:
    name: str
    data: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def entry(self) -> dict:
        return {"size": len(self.data), "sha256": self.sha256}


def local_files(folder: Path, network: str | None) -> tuple[str, dict[str, LocalFile]]:
    """Validate the folder (raises a one-line error naming the bad file) and read the files the
    board loads: every weight/threshold file and classes.txt (config.h is not needed, §3.6)."""
    model = read_params_folder(folder, network)
    names = [n for n in model.spec.expected_files() if (folder / n).is_file()] + [CLASSES_FILE]
    files = {}
    for name in names:
        try:
            files[name] = LocalFile(name, (folder / name).read_bytes())
        except OSError as exc:
            raise BnnctlError(f"{folder / name}: cannot read ({exc.strerror})") from None
    return model.name, files


@dataclass
class Plan:
    target: str
    params_root: str
    changed: list[str]
    unchanged: list[str]
    removed: list[str]
    existed: bool
    sudo: bool
    free_bytes: int

    @property
    def up_to_date(self) -> bool:
        return self.existed and not self.changed and not self.removed


def make_plan(work: BoardWork, name: str, network: str, files: dict[str, LocalFile]) -> Plan:
    profile = work.profile
    info = probe(work, name, network)
    require_bnn(info, profile)
    require_overlay(info, profile, network, ("python_hw",))
    target = info.raw["target"]
    sudo = info.uid != 0 and not target["writable"]
    if sudo:
        work.ensure_sudo()  # a refusal is reported now, before anything is uploaded
    if not target["exists"]:
        current = {"files": {}, "other": []}
    elif "files" in target:
        current = target  # the probe hashed the folder already
    else:  # not readable by the login user
        current = work.helper("hashes", [target["path"]], sudo=True)
        if not current.get("ok"):
            raise BoardError(f"board {profile.name}: cannot read {target['path']}: {current.get('message')}")
    on_board = current["files"]
    changed = [n for n, f in files.items() if on_board.get(n) != f.entry]
    unchanged = [n for n in files if n not in changed]
    removed = sorted(set(on_board) - set(files)) + sorted(current.get("other", []))
    return Plan(target=target["path"], params_root=info.params_dir, changed=changed, unchanged=unchanged,
                removed=removed, existed=target["exists"], sudo=sudo, free_bytes=info.free_bytes)


def check_space(plan: Plan, files: dict[str, LocalFile], profile: BoardProfile) -> None:
    # The new folder is built complete beside the old one, and the changed files are staged too.
    need = sum(len(f.data) for f in files.values()) + sum(len(files[n].data) for n in plan.changed)
    if plan.free_bytes < need + DISK_MARGIN:
        raise DiskFull(f"board {profile.name}: disk full: {plan.free_bytes / 1e6:.1f} MB free at {plan.params_root}, "
                       f"the deploy needs {(need + DISK_MARGIN) / 1e6:.1f} MB; free some space on the board")


def _fail(answer: dict, profile: BoardProfile, step: str) -> BoardError:
    kind, message = answer.get("error"), answer.get("message")
    if kind == "disk_full":
        return DiskFull(f"board {profile.name}: disk full while {step}: {message}; the params are unchanged")
    if kind == "checksum":
        return BoardError(f"board {profile.name}: sha256 check failed while {step}: {message}; "
                          f"the params are unchanged, deploy again")
    return BoardError(f"board {profile.name}: {step} failed: {message}; the params are unchanged")


def deploy(folder: Path, profile: BoardProfile, name: str, network: str | None, dry_run: bool = False,
           accept_new_host_key: bool = False, progress=None) -> dict:
    """Run the whole deploy; returns the report printed by the command (and recorded in the state)."""
    network, files = local_files(folder, network)
    report = {"board": profile.name, "host": profile.host, "port": profile.port, "user": profile.user,
              "name": name, "network": network, "source": str(folder.resolve()), "files": len(files),
              "dry_run": dry_run}
    say = progress or (lambda message: None)
    with BoardSession(profile, accept_new_host_key=accept_new_host_key) as session:
        report["host_key_added"] = session.added_host_key
        work = BoardWork.open(session)
        try:
            plan = make_plan(work, name, network, files)
            report.update({"target": plan.target, "uploaded": plan.changed, "unchanged": len(plan.unchanged),
                           "removed": plan.removed, "sudo": plan.sudo, "existed": plan.existed,
                           "bytes_uploaded": sum(len(files[n].data) for n in plan.changed),
                           "up_to_date": plan.up_to_date, "replaced": False})
            if plan.up_to_date:
                report["uploaded"] = []
                return report
            check_space(plan, files, profile)
            if dry_run:
                return report
            say(f"uploading {len(plan.changed)} of {len(files)} files to {profile.name} ...")
            staging = f"{work.path}/stage"
            session.mkdir_private(staging)
            # Staged files are readable only by the login user (private folder); as root, the
            # prepare step reads them from there.
            for n in plan.changed:
                session.put_bytes(f"{staging}/{n}", files[n].data)
            manifest = work.put("manifest.json",
                                json.dumps({"files": {n: f.entry for n, f in files.items()}}).encode())
            common = ["--params-root", plan.params_root, "--name", name, "--network", network]
            say("verifying sha256 on the board ...")
            prepared = work.helper("prepare", [*common, "--staging", staging, "--manifest", manifest], sudo=plan.sudo)
            if not prepared.get("ok"):
                raise _fail(prepared, profile, "preparing the new folder")
            try:
                committed = work.helper("commit", [*common, "--tmp", prepared["tmp"], "--manifest", manifest],
                                        sudo=plan.sudo)
            except ConnectionLost:
                raise ConnectionLost(
                    f"connection to board {profile.name} lost while swapping the new folder into place: the board "
                    f"holds either the previous or the new complete folder, never a mix; run the deploy again") from None
            if not committed.get("ok"):
                failure = _fail(committed, profile, "swapping the new folder into place")
                try:
                    work.helper("abort", [*common, "--tmp", prepared["tmp"]], sudo=plan.sudo)
                except BoardError:
                    pass  # the next deploy removes a stale prepared folder anyway
                raise failure
            report["replaced"] = bool(committed.get("replaced"))
            report["deployed_at"] = time.strftime("%Y-%m-%dT%H:%M:%S")
            return report
        except ConnectionLost as exc:
            message = str(exc)
            if "swapping" not in message:
                message += "; the board's params are unchanged (the upload went to a private temporary folder)"
            raise ConnectionLost(message) from None
        finally:
            work.close()
