"""Board-side helper of `bnnctl deploy` and `bnnctl boards check`. RUNS ON THE BOARD.

bnnctl copies this file to a private temporary folder on the board and runs it with the board's
python (as root through sudo where the parameter folders are root-owned). It must therefore run
on the Python 3.6 of PYNQ images v2.3-v2.5 with the standard library only: no f-strings with
`=`, no walrus, no dataclasses, no `from __future__ import annotations`, no numpy, and it must
never import the `bnn` package (that needs the BOARD variable and the FPGA, spec §5).

Operations (one per run, result as one JSON object on stdout):
  probe    python version, where `bnn` lives, installed overlays and params, free disk space
  hashes   size and sha256 of every file of a folder
  prepare  build the new folder beside the target from the staged uploads and the unchanged
           files of the current folder, and verify every sha256 there
  commit   swap the prepared folder into place (two renames, signals ignored)
  abort    remove a prepared folder
Until `commit`, the current folder is never touched, so a failure at any step (or a dropped
connection between steps) leaves the board's params exactly as they were.
"""

import argparse
import errno
import glob
import hashlib
import importlib.util
import json
import os
import platform
import re
import shutil
import signal
import sys
import tempfile
import time

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
RUNTIMES = ("python_hw", "python_sw")  # spec §5 RUNTIME_HW / RUNTIME_SW
NEW_TAG = ".bnnctl-new-"
OLD_TAG = ".bnnctl-old-"


class HelperError(Exception):
    def __init__(self, kind, message):
        Exception.__init__(self, message)
        self.kind = kind


def emit(obj):
    sys.stdout.write(json.dumps(obj, sort_keys=True) + "\n")
    sys.stdout.flush()


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            chunk = f.read(1 << 20)
            if not chunk:
                break
            digest.update(chunk)
    return digest.hexdigest()


# ------------------------------------------------------------------------------------------ probe

def find_bnn(default_dir):
    """The bnn package folder, located without importing it (spec §5: import needs BOARD + FPGA)."""
    try:
        spec = importlib.util.find_spec("bnn")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            if os.path.isdir(location):
                return os.path.realpath(location), "python import path"
    if default_dir and os.path.isfile(os.path.join(default_dir, "__init__.py")):
        return os.path.realpath(default_dir), "profile bnn_dir"
    return None, None


def list_overlays(bnn_dir):
    """{platform: {network: {"bit": bool, "python_hw": bool, "python_sw": bool}}} from the paths of
    spec §5: bitstreams/<platform>/<network>-<platform>.bit, libraries/<platform>/<runtime>-<network>-<platform>.so."""
    overlays = {}
    bit_root = os.path.join(bnn_dir, "bitstreams")
    lib_root = os.path.join(bnn_dir, "libraries")
    platforms = set()
    for root in (bit_root, lib_root):
        if os.path.isdir(root):
            platforms.update(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    for plat in sorted(platforms):
        nets = {}
        suffix = "-" + plat
        bit_dir = os.path.join(bit_root, plat)
        if os.path.isdir(bit_dir):
            for name in os.listdir(bit_dir):
                if name.endswith(suffix + ".bit"):
                    nets.setdefault(name[:-len(suffix + ".bit")], {})["bit"] = True
        lib_dir = os.path.join(lib_root, plat)
        if os.path.isdir(lib_dir):
            for name in os.listdir(lib_dir):
                for runtime in RUNTIMES:
                    prefix = runtime + "-"
                    if name.startswith(prefix) and name.endswith(suffix + ".so"):
                        nets.setdefault(name[len(prefix):-len(suffix + ".so")], {})[runtime] = True
        overlays[plat] = {}
        for net, found in sorted(nets.items()):
            overlays[plat][net] = {"bit": bool(found.get("bit")), "python_hw": bool(found.get("python_hw")),
                                   "python_sw": bool(found.get("python_sw"))}
    return overlays


def list_params(params_dir):
    """{dataset: [networks]} as available_params() sees them (a sub-folder per network)."""
    out = {}
    if not os.path.isdir(params_dir):
        return out
    for dataset in sorted(os.listdir(params_dir)):
        folder = os.path.join(params_dir, dataset)
        if dataset.startswith(".") or not os.path.isdir(folder):
            continue
        out[dataset] = sorted(n for n in os.listdir(folder)
                              if not n.startswith(".") and os.path.isdir(os.path.join(folder, n)))
    return out


def free_bytes(path):
    while path and not os.path.exists(path):
        path = os.path.dirname(path)
    st = os.statvfs(path or "/")
    return st.f_bavail * st.f_frsize


def writable(path):
    return os.path.isdir(path) and os.access(path, os.W_OK | os.X_OK)


def tidy(folder, keep):
    """Remove this user's work folders that failed runs left in `folder` (older than an hour)."""
    now = time.time()
    for path in glob.glob(os.path.join(folder, "bnnctl-work.*")):
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if path != keep and st.st_uid == os.getuid() and now - st.st_mtime > 3600 and os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)


def op_probe(args):
    if args.tidy:
        tidy(os.path.dirname(args.tidy), args.tidy)
    bnn_dir, found_by = find_bnn(args.bnn_dir)
    info = {
        "ok": True,
        "python": "%d.%d.%d" % sys.version_info[:3],
        "python_executable": sys.executable,
        "machine": platform.machine(),
        "hostname": platform.node(),
        "uid": os.getuid(),
        "board_env": os.environ.get("BOARD"),
        "bnn_dir": bnn_dir,
        "bnn_found_by": found_by,
    }
    if bnn_dir is None:
        emit(info)
        return
    params_dir = os.path.join(bnn_dir, "params")
    info.update({
        "params_dir": params_dir,
        "overlays": list_overlays(bnn_dir),
        "params": list_params(params_dir),
        "free_bytes": free_bytes(params_dir),
        "params_writable": writable(params_dir),
    })
    if args.name and args.network:
        parent = os.path.join(params_dir, args.name)
        target = os.path.join(parent, args.network)
        info["target"] = {
            "path": target,
            "exists": os.path.isdir(target),
            # renaming the target and creating the temp folder beside it need write access to
            # its parent; a missing parent is created in params/
            "writable": writable(parent) if os.path.isdir(parent) else writable(params_dir),
            "readable": (not os.path.isdir(target)) or os.access(target, os.R_OK | os.X_OK),
        }
        if info["target"]["exists"] and info["target"]["readable"]:
            # one round trip less for deploy, which compares these with the local files
            files, other = folder_hashes(target)
            info["target"].update({"files": files, "other": other})
    emit(info)


# ----------------------------------------------------------------------------------------- hashes

def folder_hashes(folder):
    files, other = {}, []
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if os.path.isfile(path) and not os.path.islink(path):
            files[name] = {"size": os.path.getsize(path), "sha256": sha256_of(path)}
        else:
            other.append(name)
    return files, other


def op_hashes(args):
    folder = args.folder
    if not os.path.isdir(folder):
        emit({"ok": True, "exists": False, "files": {}, "other": []})
        return
    files, other = folder_hashes(folder)
    emit({"ok": True, "exists": True, "files": files, "other": other})


# ------------------------------------------------------------------------- prepare / commit / abort

def target_paths(args):
    """Check the names (this may run as root) and return (parent, target)."""
    root = os.path.realpath(args.params_root)
    if os.path.basename(root) != "params" or not os.path.isdir(root):
        raise HelperError("bad_path", "%s is not a bnn params folder" % args.params_root)
    for value in (args.name, args.network):
        if not NAME_RE.match(value):
            raise HelperError("bad_path", "invalid folder name %r" % value)
    parent = os.path.join(root, args.name)
    return parent, os.path.join(parent, args.network)


def check_tmp(parent, network, tmp):
    real = os.path.realpath(tmp)
    if os.path.dirname(real) != parent or not os.path.basename(real).startswith("." + network + NEW_TAG):
        raise HelperError("bad_path", "%s is not a prepared folder of %s" % (tmp, network))
    return real


def read_manifest(path):
    with open(path) as f:
        manifest = json.load(f)["files"]
    for name in manifest:
        if not NAME_RE.match(name):
            raise HelperError("bad_path", "invalid file name %r in manifest" % name)
    return manifest


def fsync_path(path, directory=False):
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def recover(parent, network, target):
    """Undo what an interrupted earlier deploy left: restore the old folder if the swap was cut
    between its two renames, and drop stale temporary folders."""
    olds = sorted(glob.glob(os.path.join(parent, "." + network + OLD_TAG + "*")), key=os.path.getmtime)
    if not os.path.isdir(target) and olds:
        os.rename(olds.pop(), target)
    for stale in olds + glob.glob(os.path.join(parent, "." + network + NEW_TAG + "*")):
        shutil.rmtree(stale, ignore_errors=True)


def op_prepare(args):
    parent, target = target_paths(args)
    manifest = read_manifest(args.manifest)
    created_parent = not os.path.isdir(parent)
    if created_parent:
        os.makedirs(parent)
        os.chmod(parent, 0o755)
    recover(parent, args.network, target)
    tmp = tempfile.mkdtemp(prefix="." + args.network + NEW_TAG, dir=parent)
    try:
        os.chmod(tmp, 0o755)
        for name in sorted(manifest):
            staged = os.path.join(args.staging, name)
            source = staged if os.path.isfile(staged) else os.path.join(target, name)
            if not os.path.isfile(source):
                raise HelperError("missing_source", "%s was neither uploaded nor present on the board" % name)
            dest = os.path.join(tmp, name)
            shutil.copyfile(source, dest)
            os.chmod(dest, 0o644)
            fsync_path(dest)
        # Every file's checksum is verified where it will live, not where it was uploaded.
        for name, want in sorted(manifest.items()):
            path = os.path.join(tmp, name)
            size = os.path.getsize(path)
            digest = sha256_of(path)
            if size != want["size"] or digest != want["sha256"]:
                raise HelperError("checksum", "%s: sha256 %s (%d bytes) on the board, expected %s (%d bytes)"
                                  % (name, digest, size, want["sha256"], want["size"]))
        fsync_path(tmp, directory=True)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if created_parent:
            try:
                os.rmdir(parent)  # leave params/ exactly as it was
            except OSError:
                pass
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise HelperError("disk_full", "no space left on the board's disk (%d bytes free)" % free_bytes(parent))
        raise
    emit({"ok": True, "tmp": tmp})


def op_commit(args):
    parent, target = target_paths(args)
    manifest = read_manifest(args.manifest)
    tmp = check_tmp(parent, args.network, args.tmp)
    if not os.path.isdir(tmp):
        raise HelperError("missing_tmp", "prepared folder %s is gone (another deploy running?)" % tmp)
    present = set(os.listdir(tmp))
    if present != set(manifest):
        raise HelperError("checksum", "prepared folder %s does not hold the expected files" % tmp)
    # The two renames must not be split by a hang-up of the SSH session: ignore the signals a
    # dropped connection or an impatient user would send (SIGPIPE is already ignored by Python).
    for sig in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    old = None
    if os.path.isdir(target):
        old = os.path.join(parent, "." + args.network + OLD_TAG + os.urandom(6).hex())
        os.rename(target, old)
    try:
        os.rename(tmp, target)
    except BaseException:
        if old is not None:
            os.rename(old, target)
        raise
    fsync_path(parent, directory=True)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    emit({"ok": True, "replaced": old is not None, "path": target})


def op_abort(args):
    parent, _ = target_paths(args)
    tmp = check_tmp(parent, args.network, args.tmp)
    shutil.rmtree(tmp, ignore_errors=True)
    emit({"ok": True})


# ------------------------------------------------------------------------------------------- main

def parser():
    p = argparse.ArgumentParser(prog="board_helper.py", description="bnnctl's board-side deploy helper")
    sub = p.add_subparsers(dest="op")
    probe = sub.add_parser("probe")
    probe.add_argument("--bnn-dir", default="")
    probe.add_argument("--name", default="")
    probe.add_argument("--network", default="")
    probe.add_argument("--tidy", default="", help="this run's work folder; older ones beside it are removed")
    hashes = sub.add_parser("hashes")
    hashes.add_argument("folder")
    for name in ("prepare", "commit", "abort"):
        q = sub.add_parser(name)
        q.add_argument("--params-root", required=True)
        q.add_argument("--name", required=True)
        q.add_argument("--network", required=True)
        if name == "prepare":
            q.add_argument("--staging", required=True)
        if name in ("prepare", "commit"):
            q.add_argument("--manifest", required=True)
        if name in ("commit", "abort"):
            q.add_argument("--tmp", required=True)
    return p


OPS = {"probe": op_probe, "hashes": op_hashes, "prepare": op_prepare, "commit": op_commit, "abort": op_abort}


def main(argv=None):
    args = parser().parse_args(argv)
    if args.op not in OPS:
        parser().print_usage(sys.stderr)
        return 2
    try:
        OPS[args.op](args)
    except HelperError as exc:
        emit({"ok": False, "error": exc.kind, "message": str(exc)})
        return 1
    except OSError as exc:
        kind = "disk_full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else (
            "permission" if exc.errno in (errno.EACCES, errno.EPERM) else "os_error")
        emit({"ok": False, "error": kind, "message": "%s: %s" % (exc.filename or args.op, exc.strerror)})
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
