"""`bnnctl deploy`, `bnnctl boards` and `bnnctl infer --board` against a real OpenSSH server.

The server is a real sshd on 127.0.0.1 (tests/sshd.py); the "board" behind it is an EMULATED
BOARD (tests/emulated_board/): a temporary site-packages with a test double of BNN-PYNQ's `bnn`
package that computes with bnnctl's own numpy engine. Nothing here touches hardware, and
nothing of SSH is mocked. Tests that need sshd skip with the reason when it is not installed
(CI installs it: apt-get install -y openssh-server sudo).
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bnnctl.convert.folder import write_params_folder
from bnnctl.convert.quantize import binarize_archive
from bnnctl.topology import get_network
from tests.clirun import Run, assert_user_error, bnnctl
from tests.emulated_board import EmulatedBoard
from tests.floatref import random_archive
from tests.sshd import CuttingProxy, TestUsers, keygen, missing_reason, start_sshd, users_missing_reason

REPO = Path(__file__).resolve().parents[1]
PY36 = Path("/root/.pyenv/versions/3.6.15/bin/python3.6")
BOARD_SIDE = [REPO / "hw" / "board_infer.py", REPO / "bnnctl" / "deploy" / "board_helper.py",
              REPO / "tests" / "emulated_board" / "package" / "bnn" / "bnn.py"]


# ------------------------------------------------------------------------------------ fixtures

def world_readable_tmpdir(prefix: str) -> Path:
    # Not pytest's tmp_path: its parents are private to root, and the sudo tests log in as
    # other users who must reach the server's authorized_keys and the emulated board.
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    os.chmod(path, 0o755)
    return path


@pytest.fixture(scope="module")
def server():
    reason = missing_reason()
    if reason:
        pytest.skip(reason)
    folder = world_readable_tmpdir("bnnctl-test-sshd-")
    srv = start_sshd(folder / "sshd")
    yield srv
    srv.stop()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Parameter folders made in-process (fast); the end-to-end tests use the CLI instead."""
    root = tmp_path_factory.mktemp("folders")
    out = {}
    for key, network, seed in (("cnv", "cnvW1A1", 1), ("cnv_b", "cnvW1A1", 2), ("lfc", "lfcW1A1", 3)):
        archive = root / f"{key}.npz"
        np.savez(archive, *random_archive(network, 10, np.random.default_rng(seed)))
        model = binarize_archive(archive, get_network(network), [f"c{i}" for i in range(10)])
        out[key] = write_params_folder(model, root / key / "toys" / network)
    return out


@dataclass
class Workspace:
    """The user's side: a working folder, HOME with its own known_hosts, a boards file."""

    path: Path
    server: object
    board: EmulatedBoard
    env: dict = field(default_factory=dict)

    @property
    def known_hosts(self) -> Path:
        return self.path / "home" / ".ssh" / "known_hosts"

    @property
    def remote_tmp(self) -> Path:
        return self.board.root / "tmp"

    def add_profile(self, name: str, **values) -> None:
        lines = [f"\n[{name}]"]
        for key, value in values.items():
            if isinstance(value, dict):
                inner = ", ".join(f"{k} = {json.dumps(v)}" for k, v in value.items())
                lines.append(f"{key} = {{ {inner} }}")
            else:
                lines.append(f"{key} = {json.dumps(value)}")
        with open(self.path / "boards.toml", "a") as f:
            f.write("\n".join(lines) + "\n")

    def run(self, *args, env: dict | None = None, **kw) -> Run:
        return bnnctl(*args, cwd=self.path, env={**self.env, **(env or {})}, **kw)

    def nothing_sent(self, before: dict) -> bool:
        return self.board.tree() == before and not any(self.remote_tmp.iterdir())


def make_board(root: Path, networks=None, **kw) -> EmulatedBoard:
    board = EmulatedBoard(root, **kw).build(**({"networks": networks} if networks else {}))
    tmp = root / "tmp"
    tmp.mkdir()
    os.chmod(tmp, 0o1777)  # the board's /tmp
    return board


@pytest.fixture
def ws(tmp_path, server):
    root = world_readable_tmpdir("bnnctl-test-board-")
    board = make_board(root)
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "known_hosts").write_text(server.known_hosts_line())
    space = Workspace(tmp_path, server, board, env={
        "HOME": str(home), "BNNCTL_BOARDS_FILE": str(tmp_path / "boards.toml"), "XDG_CONFIG_HOME": str(home / ".config"),
        "SSH_AUTH_SOCK": "", "BNNCTL_SSH_PASSWORD": "", "BNNCTL_SUDO_PASSWORD": ""})
    (tmp_path / "boards.toml").write_text("# boards of the deploy tests: an EMULATED board behind a real sshd\n")
    space.add_profile("emu", base="pynq-z1", host="127.0.0.1", port=server.port, user=_me(),
                      identity=str(server.client_key), python=sys.executable, remote_tmp=str(root / "tmp"),
                      env={"PYTHONPATH": str(board.site_packages)}, connect_timeout=10, command_timeout=120)
    yield space
    shutil.rmtree(root, ignore_errors=True)


def _me() -> str:
    import pwd

    return pwd.getpwuid(os.geteuid()).pw_name


def pictures(folder: Path) -> list[Path]:
    rng = np.random.default_rng(7)
    folder.mkdir(exist_ok=True)
    paths = []
    for i, size in enumerate([(40, 30), (20, 50), (32, 32)]):
        path = folder / f"pic{i}.png"
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def idx3(path: Path, count: int) -> Path:
    rng = np.random.default_rng(11)
    images = (rng.random((count, 28, 28)) > 0.6).astype(np.uint8) * 255
    path.write_bytes(bytes.fromhex("00000803") + count.to_bytes(4, "big") + bytes.fromhex("0000001c0000001c")
                     + images.tobytes())
    return path


def ok(run: Run) -> Run:
    assert run.code == 0, f"exit {run.code}\nstdout: {run.out}\nstderr: {run.err}"
    return run


# ------------------------------------------------------------------------ profiles (no server)

def test_boards_lists_the_builtin_profiles(tmp_path):
    run = ok(bnnctl("boards", "--json", cwd=tmp_path, env={"XDG_CONFIG_HOME": str(tmp_path), "BNNCTL_BOARDS_FILE": ""}))
    boards = {b["name"]: b for b in run.json()["boards"]}
    assert set(boards) == {"pynq-z1", "pynq-z2", "ultra96"}
    assert boards["pynq-z1"]["platform"] == boards["pynq-z2"]["platform"] == "pynqZ1-Z2"
    assert boards["ultra96"]["platform"] == "ultra96"
    assert boards["pynq-z1"]["aliases"] == ["pynq"]
    for b in boards.values():
        assert (b["host"], b["port"], b["user"], b["python"]) == ("192.168.2.99", 22, "xilinx", "python3")
        assert b["bnn_dir"] == "/usr/local/lib/python3.6/dist-packages/bnn"
    assert run.json()["user_file"] == str(tmp_path / "bnnctl" / "boards.toml")  # XDG_CONFIG_HOME honoured
    text = ok(bnnctl("boards", cwd=tmp_path, env={"XDG_CONFIG_HOME": str(tmp_path), "BNNCTL_BOARDS_FILE": ""})).out
    assert "pynq-z1" in text and "alias: pynq" in text


def test_user_boards_file_overrides_and_adds(tmp_path, monkeypatch):
    from bnnctl.deploy.profiles import get_profile

    (tmp_path / "bnnctl").mkdir()
    (tmp_path / "bnnctl" / "boards.toml").write_text(
        '[pynq]\nhost = "10.0.0.7"\n\n[lab]\nbase = "ultra96"\nhost = "u96.lab"\nidentity = "keys/id"\n')
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.delenv("BNNCTL_BOARDS_FILE", raising=False)
    assert get_profile("pynq").name == "pynq-z1" and get_profile("pynq").host == "10.0.0.7"
    assert get_profile("pynq-z2").host == "192.168.2.99"
    lab = get_profile("lab")
    assert (lab.platform, lab.board_env, lab.host) == ("ultra96", "Ultra96", "u96.lab")
    assert lab.identity == str(tmp_path / "bnnctl" / "keys" / "id")  # relative to the boards file


def test_profile_errors_are_one_line(tmp_path):
    bad = tmp_path / "boards.toml"
    bad.write_text('[pynq]\nhots = "x"\n')
    assert_user_error(bnnctl("boards", cwd=tmp_path, env={"BNNCTL_BOARDS_FILE": str(bad)}), "unknown keys", "hots")
    bad.write_text('[mine]\nhost = "x"\n')
    assert_user_error(bnnctl("boards", cwd=tmp_path, env={"BNNCTL_BOARDS_FILE": str(bad)}), "base")
    run = bnnctl("boards", "check", "--board", "nosuch", cwd=tmp_path, env={"BNNCTL_BOARDS_FILE": ""})
    assert_user_error(run, "no such board profile", "pynq-z1")


def test_hw_backend_needs_a_board(tmp_path):
    assert_user_error(bnnctl("infer", "x.png", "--backend", "hw", cwd=tmp_path), "--board")


def test_board_side_programs_parse_as_python36():
    # A static guard that runs everywhere; test_python36_board runs them under a real 3.6.
    for path in BOARD_SIDE:
        source = path.read_text()
        tree = ast.parse(source, filename=str(path), feature_version=(3, 6))
        imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        imported |= {a.name for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names}
        assert not imported & {"__future__", "dataclasses"}, (path, imported)


def test_remote_commands_are_quoted():
    from bnnctl.deploy.ssh import command_line

    assert command_line(["echo", "a b", "$(reboot)", "x;y", "it's"]) == \
        "echo 'a b' '$(reboot)' 'x;y' 'it'\"'\"'s'"
    with pytest.raises(TypeError):
        command_line("echo hi")  # type: ignore[arg-type]  # a string is never a command


def test_unreachable_board(tmp_path):
    from tests.sshd import free_port

    run = bnnctl("boards", "check", "--board", "pynq", "--host", "127.0.0.1", "--port", str(free_port()),
                 cwd=tmp_path, env={"HOME": str(tmp_path), "BNNCTL_BOARDS_FILE": ""})
    assert_user_error(run, "pynq-z1 unreachable", "connection refused")


# -------------------------------------------------------------------------------- end to end

def test_end_to_end_cnv_on_emulated_board(ws, data_dir):
    """The whole chain with bare commands: train -> binarize -> deploy -> infer on the EMULATED board."""
    # A tiny real training run (1 epoch on a subset of CUCUMBER-9) stands in for a full one.
    trained = ok(ws.run("train", "cucumber9", "--epochs", "1", "--limit", "300", "--test-limit", "100",
                        "--threads", "1", "--json", env={"BNNCTL_DATA": str(data_dir)}, timeout=300)).json()
    assert Path(trained["npz"]).name == "cucumber9-cnvW1A1.npz"
    ok(ws.run("binarize"))  # archive, network and classes from the workspace state
    deployed = ok(ws.run("deploy", "--board", "emu", "--json")).json()  # folder + name from the state
    assert deployed["name"] == "cucumber9" and deployed["network"] == "cnvW1A1" and len(deployed["uploaded"]) == 179
    target = ws.board.params_dir / "cucumber9" / "cnvW1A1"
    assert {p.name: p.read_bytes() for p in target.iterdir()} == \
        {p.name: p.read_bytes() for p in (ws.path / "params/cucumber9/cnvW1A1").iterdir() if p.name != "config.h"}
    assert (target / "classes.txt").read_text() == "2L\nBM\nBL\nM\nS\nL\n2S\nBS\nC"
    status = ok(ws.run("status", "--json")).json()
    assert status["board"] == "emu" and status["deployed"]["name"] == "cucumber9"

    # a re-deploy of unchanged files uploads nothing
    again = ok(ws.run("deploy", "--board", "emu", "--json")).json()
    assert again["up_to_date"] and again["uploaded"] == []

    pics = pictures(ws.path / "pics")
    local = ok(ws.run("infer", *pics, "--json")).json()
    hw = ok(ws.run("infer", *pics, "--backend", "hw", "--json")).json()  # the board of the last deploy
    assert hw["backend"] == "hw" and hw["board"] == "emu" and hw["params"] == "cucumber9" and hw["rule"] == "multiple"
    assert hw["results"] == local["results"]  # same inputs, classes, names and scores
    assert hw["timing"]["usec_per_image"] > 0 and hw["timing"]["usec_end_to_end"] > 0

    one = ok(ws.run("infer", pics[0], "--backend", "sw", "--board", "emu", "--details"))
    local_one = ok(ws.run("infer", pics[0], "--details"))
    assert one.out.splitlines()[1:3] == local_one.out.splitlines()[:2]  # "name: class" and scores lines
    assert "Board emu" in one.out and "runtime python_sw" in one.out and "End to end" in one.out
    assert one.out.count("Inference took") == 1 and "usec per image" not in one.out  # single-image printout


def test_end_to_end_lfc_on_emulated_board(ws):
    rng = np.random.default_rng(6)
    # (the chain with a real training run is test_end_to_end_cnv_on_emulated_board)
    np.savez(ws.path / "digits-lfcW1A1.npz", *random_archive("lfcW1A1", 10, rng))
    ok(ws.run("binarize", "digits-lfcW1A1.npz"))
    ok(ws.run("deploy", "--board", "emu"))
    images = idx3(ws.path / "five.idx3", 5)
    for rule in ("multiple", "single"):
        local = ok(ws.run("infer", images, "--rule", rule, "--json")).json()
        hw = ok(ws.run("infer", images, "--rule", rule, "--backend", "hw", "--board", "emu", "--params", "digits",
                       "--json")).json()
        assert [(r["input"], r["class"], r["name"]) for r in hw["results"]] == \
            [(r["input"], r["class"], r["name"]) for r in local["results"]]
        # the board's LfcClassifier returns classes only (spec §5)
        assert all(r["scores"] is None for r in hw["results"])


# ------------------------------------------------------------------------------------ faults

def test_connection_killed_during_upload(ws, folders):
    ok(ws.run("deploy", folders["cnv"], "--board", "emu"))
    before = ws.board.tree()
    proxy = CuttingProxy(ws.server.port, cut_after=300_000)  # well into the 1 MB upload
    with open(ws.known_hosts, "a") as f:
        f.write(ws.server.known_hosts_line().replace(f":{ws.server.port}", f":{proxy.port}"))
    try:
        run = ws.run("deploy", folders["cnv_b"], "--board", "emu", "--port", str(proxy.port))
    finally:
        proxy.close()
    assert proxy.cut.is_set()
    assert_user_error(run, "connection to board emu lost", "uploading", "unchanged")
    assert [line for line in run.err.splitlines() if not line.startswith("uploading")] == \
        [run.err.strip().splitlines()[-1]]  # the progress line and the error: no paramiko log noise
    assert ws.board.tree() == before  # exactly as before: no file touched, no temporary folder
    retry = ok(ws.run("deploy", folders["cnv_b"], "--board", "emu", "--json")).json()
    assert retry["replaced"] and len(retry["uploaded"]) > 100
    target = ws.board.params_dir / "toys" / "cnvW1A1"
    assert all((target / p.name).read_bytes() == p.read_bytes() for p in folders["cnv_b"].glob("*.bin"))
    assert sorted(p.name for p in target.parent.iterdir()) == ["cnvW1A1"]


def test_unknown_host_key_refused_before_anything_is_sent(ws, folders):
    ws.known_hosts.write_text("")
    before = ws.board.tree()
    run = ws.run("deploy", folders["cnv"], "--board", "emu")
    assert_user_error(run, "unknown", ws.server.fingerprint(), "--accept-new-host-key")
    assert ws.nothing_sent(before)
    check = ok(ws.run("boards", "check", "--board", "emu", "--accept-new-host-key", "--json")).json()
    assert check["host_key_added"] and check["host_key"].endswith(ws.server.fingerprint())
    assert ws.server.known_hosts_name in ws.known_hosts.read_text()
    ok(ws.run("deploy", folders["cnv"], "--board", "emu"))  # known now, no option needed


def test_changed_host_key_always_refused(ws, folders):
    other = keygen(ws.path / "other_host_key", "impostor")
    kind, blob = other.with_suffix(".pub").read_text().split()[:2]
    ws.known_hosts.write_text(f"{ws.server.known_hosts_name} {kind} {blob}\n")
    before = ws.board.tree()
    run = ws.run("deploy", folders["cnv"], "--board", "emu", "--accept-new-host-key")
    assert_user_error(run, "CHANGED", ws.server.fingerprint(), "ssh-keygen -R")
    assert ws.nothing_sent(before)
    assert ws.known_hosts.read_text() == f"{ws.server.known_hosts_name} {kind} {blob}\n"


def test_wrong_password(ws):
    ws.add_profile("emu-pw", base="emu", identity="")
    run = ws.run("boards", "check", "--board", "emu-pw", env={"BNNCTL_SSH_PASSWORD": "not-the-password-42"})
    assert_user_error(run, "authentication failed", "$BNNCTL_SSH_PASSWORD was refused")
    assert "not-the-password-42" not in run.out + run.err
    run = ws.run("boards", "check", "--board", "emu-pw")
    assert_user_error(run, "authentication failed", "--identity", "ssh-copy-id")


def test_board_without_bnn(ws, server, folders):
    root = world_readable_tmpdir("bnnctl-test-bare-")
    try:
        bare = make_board(root, with_bnn=False)
        ws.add_profile("bare", base="emu", remote_tmp=str(root / "tmp"), env={"PYTHONPATH": str(bare.site_packages)},
                       bnn_dir=str(bare.site_packages / "bnn"))
        run = ws.run("deploy", folders["cnv"], "--board", "bare")
        assert_user_error(run, "bnn package is not installed", "sudo pip3 install git+https://github.com/Xilinx/BNN-PYNQ.git")
        run = ws.run("infer", "x.bin", "--board", "bare", "--params", "toys", "--network", "cnvW1A1")
        assert run.code != 0  # x.bin does not exist: refused before connecting
        (ws.path / "x.bin").write_bytes(bytes(3073))
        run = ws.run("infer", "x.bin", "--board", "bare", "--params", "toys", "--network", "cnvW1A1")
        assert_user_error(run, "bnn package is not installed")
        assert not any(bare.site_packages.iterdir()) and not any((root / "tmp").iterdir())
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_overlay_missing_and_params_not_deployed(ws, folders):
    root = world_readable_tmpdir("bnnctl-test-lfconly-")
    try:
        lfc_only = make_board(root, networks=("lfcW1A1",))
        ws.add_profile("lfc-only", base="emu", remote_tmp=str(root / "tmp"),
                       env={"PYTHONPATH": str(lfc_only.site_packages)})
        before = lfc_only.tree()
        run = ws.run("deploy", folders["cnv"], "--board", "lfc-only")
        assert_user_error(run, "overlay cnvW1A1 for pynqZ1-Z2 is not installed", "lfcW1A1")
        assert lfc_only.tree() == before
    finally:
        shutil.rmtree(root, ignore_errors=True)
    (ws.path / "x.bin").write_bytes(bytes(3073))
    run = ws.run("infer", "x.bin", "--board", "emu", "--params", "nope", "--network", "cnvW1A1")
    assert_user_error(run, "params nope/cnvW1A1 are not deployed", "bnnctl deploy")


def test_remote_program_crash_shows_its_stderr(ws, folders):
    ws.board.add_params("toys", "cnvW1A1", folders["cnv"])  # pre-installed, as an image ships params
    (ws.path / "x.bin").write_bytes(bytes(3073))
    ws.board.set_faults(crash="exception")
    run = ws.run("infer", "x.bin", "--board", "emu", "--backend", "hw", "--params", "toys")
    assert_user_error(run, "board_infer.py) failed (exit 1)", "RuntimeError: emulated accelerator fault")
    assert "bnnctl: board stderr:" in run.err  # the remote traceback's lines, marked as the board's
    ws.board.set_faults(crash="abort")
    run = ws.run("infer", "x.bin", "--board", "emu", "--backend", "hw", "--params", "toys")
    assert run.code != 0 and "Traceback" not in run.err and "board_infer.py)" in run.err


def test_command_timeout(ws, folders):
    ws.board.add_params("toys", "lfcW1A1", folders["lfc"])
    idx = idx3(ws.path / "one.idx3", 1)
    ws.board.set_faults(delay=8)
    ws.add_profile("emu-slow", base="emu", command_timeout=2)
    run = ws.run("infer", idx, "--board", "emu-slow", "--params", "toys")
    assert_user_error(run, "did not finish within 2 s", "command timeout")


# -------------------------------------------------------------------------- sudo, real users

@pytest.fixture(scope="module")
def users(server):
    reason = users_missing_reason()
    if reason:
        pytest.skip(reason)
    folder = world_readable_tmpdir("bnnctl-test-users-")
    accounts = TestUsers(folder)
    try:
        names = {"sudoer": accounts.create("s", "sudo-pass-1", sudo=True),
                 "plain": accounts.create("p", "plain-pass-2", sudo=False)}
        server.authorize(names["sudoer"], server.client_key.with_suffix(".pub"))
        yield names
    finally:
        accounts.cleanup()
        shutil.rmtree(folder, ignore_errors=True)


def system_python() -> str:
    # The test users cannot enter /root (where pyenv's pythons live); the deploy helper needs the
    # standard library only, so any world-readable python3 will do as the board's python.
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if os.access(candidate, os.X_OK):
            return candidate
    pytest.skip("no system python3 that other users can run")


def test_sudo_deploy_into_root_owned_params(ws, users, folders):
    py = system_python()
    ws.add_profile("emu-sudo", base="emu", user=users["sudoer"], identity="", python=py)
    ws.add_profile("emu-sudo-key", base="emu", user=users["sudoer"], python=py)
    ws.add_profile("emu-plain", base="emu", user=users["plain"], identity="", python=py)
    assert ws.board.params_dir.stat().st_uid == 0  # root-owned, as on a PYNQ image
    before = ws.board.tree()

    # password login; sudo gets the same password on stdin
    run = ok(ws.run("deploy", folders["cnv"], "--board", "emu-sudo", "--json",
                    env={"BNNCTL_SSH_PASSWORD": "sudo-pass-1"}))
    assert run.json()["sudo"] and "sudo-pass-1" not in run.out + run.err
    target = ws.board.params_dir / "toys" / "cnvW1A1"
    assert target.stat().st_uid == 0 and (target / "0-0-weights.bin").stat().st_uid == 0
    deployed = ws.board.tree()
    assert deployed != before

    # wrong sudo password: refused, nothing changed
    run = ws.run("deploy", folders["cnv_b"], "--board", "emu-sudo",
                 env={"BNNCTL_SSH_PASSWORD": "sudo-pass-1", "BNNCTL_SUDO_PASSWORD": "wrong-sudo-pw"})
    assert_user_error(run, "sudo refused", "wrong password")
    assert "wrong-sudo-pw" not in run.out + run.err
    assert ws.board.tree() == deployed

    # key login and no password anywhere (no terminal to ask in): a clear error
    run = ws.run("deploy", folders["cnv_b"], "--board", "emu-sudo-key")
    assert_user_error(run, "sudo needs", "$BNNCTL_SUDO_PASSWORD")
    # a user without sudo rights
    run = ws.run("deploy", folders["cnv_b"], "--board", "emu-plain", env={"BNNCTL_SSH_PASSWORD": "plain-pass-2"})
    assert_user_error(run, "sudo refused", "may not run commands as root")
    assert ws.board.tree() == deployed

    run = ok(ws.run("deploy", folders["cnv_b"], "--board", "emu-sudo-key", env={"BNNCTL_SUDO_PASSWORD": "sudo-pass-1"}))
    assert "via sudo" in run.out
    assert all((target / p.name).read_bytes() == p.read_bytes() for p in folders["cnv_b"].glob("*.bin"))


# --------------------------------------------------------------------------------- python 3.6

def test_python36_board(ws, folders):
    """The board side (helper, hw/board_infer.py, the emulated bnn) under a real Python 3.6."""
    if not PY36.exists():
        pytest.skip(f"{PY36} not installed")
    if subprocess.run([str(PY36), "-c", "import numpy"], capture_output=True).returncode != 0:
        pytest.skip(f"numpy missing for {PY36} (pip install 'numpy<1.20')")
    for path in BOARD_SIDE:
        subprocess.run([str(PY36), "-m", "py_compile", str(path)], check=True, capture_output=True)
    ws.add_profile("emu36", base="emu", python=str(PY36))
    ok(ws.run("deploy", folders["cnv"], "--board", "emu36"))
    check = ok(ws.run("boards", "check", "--board", "emu36", "--json")).json()
    assert check["python"].startswith("3.6.")
    records = ws.path / "two.bin"
    records.write_bytes(np.random.default_rng(3).integers(0, 256, 2 * 3073, dtype=np.uint8).tobytes())
    local = ok(ws.run("infer", records, "--params", folders["cnv"], "--json")).json()
    board = ok(ws.run("infer", records, "--board", "emu36", "--params", "toys", "--json")).json()
    assert board["board_python"].startswith("3.6.") and board["results"] == local["results"]


# ------------------------------------------------------------------- board helper, in place

HELPER = REPO / "bnnctl" / "deploy" / "board_helper.py"


def helper(*args) -> dict:
    run = subprocess.run([sys.executable, str(HELPER), *map(str, args)], capture_output=True, text=True)
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_helper_checksum_failure_and_interrupted_swap(tmp_path):
    params = tmp_path / "bnn" / "params"
    target = params / "toys" / "lfcW1A1"
    target.mkdir(parents=True)
    (target / "a.bin").write_bytes(b"old")
    staging = tmp_path / "stage"
    staging.mkdir()
    (staging / "a.bin").write_bytes(b"new, but corrupted on the way")
    manifest = tmp_path / "manifest.json"
    import hashlib

    manifest.write_text(json.dumps({"files": {"a.bin": {"size": 3, "sha256": hashlib.sha256(b"new").hexdigest()}}}))
    common = ["--params-root", params, "--name", "toys", "--network", "lfcW1A1"]
    answer = helper("prepare", *common, "--staging", staging, "--manifest", manifest)
    assert answer["error"] == "checksum"
    assert sorted(p.name for p in target.parent.iterdir()) == ["lfcW1A1"] and (target / "a.bin").read_bytes() == b"old"

    # a swap cut between its two renames left only the old copy: the next run restores it
    old = target.parent / ".lfcW1A1.bnnctl-old-1234"
    target.rename(old)
    (staging / "a.bin").write_bytes(b"new")
    answer = helper("prepare", *common, "--staging", staging, "--manifest", manifest)
    assert answer["ok"] and (target / "a.bin").read_bytes() == b"old" and not old.exists()
    assert helper("commit", *common, "--tmp", answer["tmp"], "--manifest", manifest)["replaced"]
    assert (target / "a.bin").read_bytes() == b"new"
    assert sorted(p.name for p in target.parent.iterdir()) == ["lfcW1A1"]
    # a failed first deploy of a new name leaves no empty dataset folder behind
    answer = helper("prepare", "--params-root", params, "--name", "fresh", "--network", "lfcW1A1",
                    "--staging", tmp_path / "empty", "--manifest", manifest)
    assert answer["error"] == "missing_source" and not (params / "fresh").exists()
    # paths outside a bnn params folder are refused (this may run as root)
    assert helper("prepare", "--params-root", tmp_path, "--name", "x", "--network", "y", "--staging", staging,
                  "--manifest", manifest)["error"] == "bad_path"


def test_disk_space_is_checked_before_upload():
    from bnnctl.deploy.profiles import get_profile
    from bnnctl.deploy.upload import DiskFull, LocalFile, Plan, check_space

    files = {"a": LocalFile("a", bytes(600_000)), "b": LocalFile("b", bytes(400_000))}
    plan = Plan(target="/t", params_root="/p", changed=["a"], unchanged=["b"], removed=[], existed=True,
                sudo=False, free_bytes=2_000_000)
    with pytest.raises(DiskFull, match="disk full"):
        check_space(plan, files, get_profile("pynq"))
    plan.free_bytes = 10_000_000
    check_space(plan, files, get_profile("pynq"))
