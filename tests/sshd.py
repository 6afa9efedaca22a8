"""A real OpenSSH server for the deploy tests, on 127.0.0.1 and a free port.

`start_sshd(folder)` generates a host key and a client key, writes an sshd_config, runs
`sshd -D -e -f <config>` as the current user (root in CI) and waits for its banner. No part of
SSH is mocked: bnnctl talks to this server exactly as it would to a board.

`TestUsers` creates throw-away login users (with a password, with or without sudo rights) for
the password and sudo tests; that needs root, real `sudo` (Debian package `sudo`) and
useradd, and is undone at teardown.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

SSHD_CANDIDATES = ("/usr/sbin/sshd", "/usr/local/sbin/sshd")
APT_HINT = "apt-get install -y openssh-server"


def find_sshd() -> str | None:
    found = shutil.which("sshd")
    if found:
        return found
    return next((p for p in SSHD_CANDIDATES if os.access(p, os.X_OK)), None)


def missing_reason() -> str | None:
    """Why the SSH tests cannot run here, or None."""
    if find_sshd() is None:
        return f"OpenSSH server (sshd) is not installed ({APT_HINT})"
    if shutil.which("ssh-keygen") is None:
        return "ssh-keygen is not installed (apt-get install -y openssh-client)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path: Path, comment: str) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                   check=True, capture_output=True)
    return path


def ssh_fingerprint(pub: Path) -> str:
    """`SHA256:...` as ssh-keygen prints it (independent of bnnctl's own computation)."""
    out = subprocess.run(["ssh-keygen", "-lf", str(pub)], check=True, capture_output=True, text=True).stdout
    return out.split()[1]


@dataclass
class SshServer:
    folder: Path
    port: int
    host_key: Path
    client_key: Path
    proc: subprocess.Popen | None = None

    @property
    def log(self) -> Path:
        return self.folder / "sshd.log"

    @property
    def known_hosts_name(self) -> str:
        return f"[127.0.0.1]:{self.port}"

    def known_hosts_line(self) -> str:
        kind, blob = (self.host_key.with_suffix(".pub")).read_text().split()[:2]
        return f"{self.known_hosts_name} {kind} {blob}\n"

    def fingerprint(self) -> str:
        return ssh_fingerprint(self.host_key.with_suffix(".pub"))

    def authorize(self, user: str, public_key: Path) -> None:
        keys = self.folder / "authorized_keys"
        path = keys / user
        with open(path, "a") as f:
            f.write(public_key.read_text())
        os.chmod(path, 0o644)

    def start(self) -> None:
        sshd = find_sshd()
        self.proc = subprocess.Popen([sshd, "-D", "-e", "-f", str(self.folder / "sshd_config")],
                                     stdout=subprocess.DEVNULL, stderr=open(self.log, "ab"))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    if s.recv(64).startswith(b"SSH-2.0"):
                        return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"sshd did not answer on port {self.port}: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def start_sshd(folder: Path) -> SshServer:
    """Generate keys and config in `folder` (must be readable by other users for TestUsers)."""
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o755)
    host_key = keygen(folder / "host_ed25519", "bnnctl-test-host")
    client_key = keygen(folder / "client_ed25519", "bnnctl-test-client")
    (folder / "authorized_keys").mkdir()
    os.chmod(folder / "authorized_keys", 0o755)
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation folder
    for attempt in range(3):
        port = free_port()
        config = f"""\
Port {port}
ListenAddress 127.0.0.1
HostKey {host_key}
PidFile {folder}/sshd.pid
AuthorizedKeysFile {folder}/authorized_keys/%u
PermitRootLogin yes
PubkeyAuthentication yes
PasswordAuthentication yes
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
MaxAuthTries 10
MaxStartups 100
LoginGraceTime 30
LogLevel VERBOSE
Subsystem sftp internal-sftp
"""
        (folder / "sshd_config").write_text(config)
        server = SshServer(folder, port, host_key, client_key)
        server.authorize(os.environ.get("USER") or _current_user(), client_key.with_suffix(".pub"))
        try:
            server.start()
            return server
        except RuntimeError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def _current_user() -> str:
    import pwd

    return pwd.getpwuid(os.geteuid()).pw_name


# --------------------------------------------------------------------------------------- users

def users_missing_reason() -> str | None:
    if os.geteuid() != 0:
        return "creating test users needs root"
    for tool in ("useradd", "userdel", "chpasswd"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if shutil.which("sudo") is None:
        return "sudo is not installed (apt-get install -y sudo)"
    return None


@dataclass
class TestUsers:
    """Throw-away accounts named bnt<random>...; removed by cleanup()."""

    folder: Path
    created: list[str] = field(default_factory=list)
    sudoers: list[Path] = field(default_factory=list)
    tag: str = field(default_factory=lambda: secrets.token_hex(3))

    __test__ = False  # not a pytest test class

    def create(self, suffix: str, password: str, sudo: bool) -> str:
        name = f"bnt{self.tag}{suffix}"
        home = self.folder / f"home-{name}"
        subprocess.run(["useradd", "-m", "-d", str(home), "-s", "/bin/sh", name], check=True, capture_output=True)
        self.created.append(name)
        subprocess.run(["chpasswd"], input=f"{name}:{password}\n", text=True, check=True, capture_output=True)
        if sudo:
            path = Path(f"/etc/sudoers.d/bnnctl-test-{name}")
            path.write_text(f"{name} ALL=(ALL) ALL\n")
            os.chmod(path, 0o440)
            self.sudoers.append(path)
        return name

    def cleanup(self) -> None:
        for path in self.sudoers:
            path.unlink(missing_ok=True)
        for name in self.created:
            subprocess.run(["userdel", "-r", "-f", name], capture_output=True)


# ------------------------------------------------------------------------------- fault injection

class CuttingProxy:
    """A TCP relay in front of sshd that drops the connection after `cut_after` bytes from the
    client: a real connection loss in the middle of a transfer (no mock of SSH involved)."""

    def __init__(self, target_port: int, cut_after: int):
        import threading

        self.target_port = target_port
        self.cut_after = cut_after
        self.sent = 0
        self.cut = threading.Event()
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(4)
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        import threading

        try:
            client, _ = self.listener.accept()
        except OSError:
            return
        server = socket.create_connection(("127.0.0.1", self.target_port))

        def pump(src, dst, count):
            try:
                while not self.cut.is_set():
                    data = src.recv(16384)
                    if not data:
                        break
                    if count:
                        self.sent += len(data)
                        if self.sent > self.cut_after:
                            self.cut.set()
                            break
                    dst.sendall(data)
            except OSError:
                pass
            for s in (client, server):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        up = threading.Thread(target=pump, args=(client, server, True), daemon=True)
        up.start()
        pump(server, client, False)
        up.join(5)
        client.close()
        server.close()

    def close(self) -> None:
        self.listener.close()
