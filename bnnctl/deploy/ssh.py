"""One SSH session with a board (paramiko): host-key policy, authentication, commands, files.

Security rules (issue 4):
* Host keys are checked strictly against known_hosts. An unknown key is refused with its SHA256
  fingerprint unless the caller explicitly accepts new keys; a changed key is always refused.
  Both happen inside `connect`, before authentication, so nothing is sent to an unverified host.
* Authentication: an explicit identity, the ssh agent and the default ~/.ssh/id_* keys, then a
  password from an environment variable or an interactive prompt. Passwords never appear in a
  command line, an error message or a log.
* Commands are argv lists joined with shlex.quote only: nothing the user typed reaches the
  remote shell unquoted.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import shlex
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import click
import paramiko

from bnnctl.deploy.profiles import BoardProfile
from bnnctl.errors import BnnctlError

ACCEPT_OPTION = "--accept-new-host-key"

# paramiko logs transport failures (e.g. "Socket exception: Connection reset") at ERROR level;
# without a handler Python would print them raw to stderr next to our one-line error.
logging.getLogger("paramiko").addHandler(logging.NullHandler())


class BoardError(BnnctlError):
    """Something about the board or the way to it; one line, non-zero exit."""


class BoardUnreachable(BoardError):
    pass


class AuthenticationFailed(BoardError):
    pass


class HostKeyRefused(BoardError):
    pass


class ConnectionLost(BoardError):
    pass


class RemoteTimeout(BoardError):
    pass


@dataclass
class RemoteResult:
    code: int
    out: bytes
    err: bytes

    @property
    def text(self) -> str:
        return self.out.decode("utf-8", "replace")

    @property
    def err_text(self) -> str:
        return self.err.decode("utf-8", "replace")


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's `SHA256:...` fingerprint (base64 without padding), as `ssh-keygen -lf` prints."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def command_line(argv: list[str]) -> str:
    """The only way a remote command is built: every word quoted for the POSIX shell."""
    if not isinstance(argv, (list, tuple)) or not argv or not all(isinstance(a, str) for a in argv):
        raise TypeError("remote commands are lists of strings")
    return " ".join(shlex.quote(a) for a in argv)


def known_hosts_name(host: str, port: int) -> str:
    # OpenSSH writes non-default ports as [host]:port; paramiko looks keys up the same way.
    return host if port == 22 else f"[{host}]:{port}"


def default_known_hosts() -> Path:
    return Path.home() / ".ssh" / "known_hosts"


class _HostKeyPolicy(paramiko.MissingHostKeyPolicy):
    """Called by paramiko only for hosts without any known key (a changed key never gets here)."""

    def __init__(self, session: "BoardSession"):
        self.session = session

    def missing_host_key(self, client, hostname, key):
        session = self.session
        session.host_key = key
        if not session.accept_new_host_key:
            raise HostKeyRefused(
                f"host key of {hostname} is unknown ({key.get_name()} {fingerprint(key)}); if this is your "
                f"board's key, accept it with `bnnctl boards check --board {session.profile.name} {ACCEPT_OPTION}`"
                f"{session.known_hosts_note()}")
        session.remember_host_key(hostname, key)


class BoardSession:
    """A verified, authenticated connection; use as a context manager."""

    def __init__(self, profile: BoardProfile, accept_new_host_key: bool = False, allow_prompt: bool | None = None):
        self.profile = profile
        self.accept_new_host_key = accept_new_host_key
        self.allow_prompt = sys.stdin.isatty() if allow_prompt is None else allow_prompt
        self.known_hosts = Path(profile.known_hosts).expanduser() if profile.known_hosts else default_known_hosts()
        self.host_key: paramiko.PKey | None = None
        self.added_host_key = False
        self.client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._login_password: str | None = None

    # ------------------------------------------------------------------ connect

    def __enter__(self) -> "BoardSession":
        self.connect()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _new_client(self) -> paramiko.SSHClient:
        client = paramiko.SSHClient()
        system = Path("/etc/ssh/ssh_known_hosts")
        try:
            if system.is_file():
                client.load_system_host_keys(str(system))
            if self.known_hosts.is_file():
                client.load_host_keys(str(self.known_hosts))
        except (OSError, paramiko.SSHException) as exc:
            raise HostKeyRefused(f"{self.known_hosts}: cannot read known hosts ({exc})") from None
        client.set_missing_host_key_policy(_HostKeyPolicy(self))
        return client

    def known_hosts_note(self) -> str:
        return "" if self.known_hosts == default_known_hosts() else f" (records it in {self.known_hosts})"

    def remember_host_key(self, hostname: str, key: paramiko.PKey) -> None:
        # Append one line rather than paramiko's save_host_keys, which rewrites the whole file and
        # would drop the user's comments and hashed entries' formatting.
        try:
            self.known_hosts.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            with open(self.known_hosts, "a", encoding="ascii") as f:
                f.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")
        except OSError as exc:
            raise HostKeyRefused(f"{self.known_hosts}: cannot record the host key ({exc.strerror})") from None
        self.added_host_key = True

    def connect(self) -> None:
        p = self.profile
        identity = None
        if p.identity:
            identity = str(Path(p.identity).expanduser())
            if not Path(identity).is_file():
                raise AuthenticationFailed(f"identity file {identity} not found (--identity / profile {p.name})")
        password = os.environ.get(p.password_env) or None
        password_source = f"${p.password_env}" if password else None
        while True:
            client = self._new_client()
            try:
                client.connect(p.host, port=p.port, username=p.user, password=password, key_filename=identity,
                               timeout=p.connect_timeout, banner_timeout=p.connect_timeout,
                               auth_timeout=p.connect_timeout, channel_timeout=p.connect_timeout,
                               allow_agent=True, look_for_keys=True)
            except paramiko.BadHostKeyException as exc:  # a subclass of SSHException: catch it first
                client.close()
                raise self._bad_host_key(exc) from None
            except paramiko.SSHException as exc:
                client.close()
                # paramiko says "No authentication methods available" when no key was offered
                # at all and no password was given: also an authentication failure.
                if not (isinstance(exc, paramiko.AuthenticationException)
                        or "No authentication methods available" in str(exc)):
                    raise self._transport_error(exc) from None
                if password is None and self.allow_prompt:
                    password = click.prompt(f"Password for {p.user}@{p.host}", hide_input=True, err=True)
                    password_source = "the prompt"
                    continue
                raise self._auth_error(password_source) from None
            except HostKeyRefused:
                client.close()
                raise
            except (socket.timeout, TimeoutError):
                client.close()
                raise BoardUnreachable(f"board {p.name} unreachable at {p.host}:{p.port}: no answer within "
                                       f"{p.connect_timeout:g} s; check the cable and the address (--host)") from None
            except socket.gaierror as exc:
                client.close()
                raise BoardUnreachable(f"board {p.name}: cannot resolve host name {p.host!r} ({exc.strerror})") from None
            except (OSError, EOFError) as exc:
                client.close()
                reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
                if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
                    reason = "connection refused"
                raise BoardUnreachable(f"board {p.name} unreachable at {p.host}:{p.port} ({reason}); "
                                       f"is it powered and is sshd running? (--host/--port to change)") from None
            self.client = client
            self._login_password = password  # sudo on the board asks for the same account's password
            transport = client.get_transport()
            if self.host_key is None and transport is not None:
                self.host_key = transport.get_remote_server_key()
            if transport is not None:
                transport.set_keepalive(15)
            return

    def password_for_sudo(self) -> str | None:
        """The sudo password: its environment variable, else the login password if one was used,
        else a prompt in a terminal; None when there is no way to get one."""
        p = self.profile
        password = os.environ.get(p.sudo_password_env) or self._login_password
        if password is None and self.allow_prompt:
            password = click.prompt(f"sudo password of {p.user} on {p.host}", hide_input=True, err=True)
        return password or None

    def _auth_error(self, password_source: str | None) -> AuthenticationFailed:
        p = self.profile
        tried = ["ssh agent", "~/.ssh/id_* keys"]
        if p.identity:
            tried.insert(0, str(p.identity))
        if password_source:
            return AuthenticationFailed(
                f"authentication failed for {p.user}@{p.host}:{p.port}: the password from {password_source} "
                f"was refused (keys tried: {', '.join(tried)})")
        return AuthenticationFailed(
            f"authentication failed for {p.user}@{p.host}:{p.port}: no key accepted (tried {', '.join(tried)}); "
            f"use --identity KEY, install your key with ssh-copy-id, or set ${p.password_env} "
            f"(or run in a terminal to be asked for the password)")

    def _bad_host_key(self, exc: paramiko.BadHostKeyException) -> HostKeyRefused:
        p = self.profile
        name = known_hosts_name(p.host, p.port)
        got = exc.key
        where = "" if self.known_hosts == default_known_hosts() else f" -f {self.known_hosts}"
        return HostKeyRefused(
            f"host key of {name} has CHANGED (now {got.get_name()} {fingerprint(got)}, known_hosts has "
            f"{fingerprint(exc.expected_key)}): refusing to connect, the connection may be intercepted; "
            f"if the board was re-imaged: ssh-keygen -R '{name}'{where}")

    def _transport_error(self, exc: Exception) -> BoardError:
        p = self.profile
        return BoardUnreachable(f"SSH connection to {p.name} ({p.host}:{p.port}) failed: {exc}")

    def close(self) -> None:
        if self._sftp is not None:
            try:
                self._sftp.close()
            except Exception:  # noqa: BLE001 - closing a dead connection must not mask the real error
                pass
            self._sftp = None
        if self.client is not None:
            self.client.close()
            self.client = None

    # ------------------------------------------------------------------ commands

    @property
    def transport(self) -> paramiko.Transport:
        transport = self.client.get_transport() if self.client else None
        if transport is None or not transport.is_active():
            raise ConnectionLost(f"connection to board {self.profile.name} lost")
        return transport

    def run(self, argv: list[str], stdin: bytes | None = None, timeout: float | None = None,
            what: str = "command") -> RemoteResult:
        """Run argv on the board; returns exit code and output. stdin (if any) is sent then closed."""
        timeout = timeout or self.profile.command_timeout
        line = command_line(argv)
        try:
            channel = self.transport.open_session(timeout=self.profile.connect_timeout)
            channel.exec_command(line)
            if stdin:
                channel.sendall(stdin)
            channel.shutdown_write()
            return self._collect(channel, timeout, what)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            if isinstance(exc, BoardError):
                raise
            raise ConnectionLost(f"connection to board {self.profile.name} lost during {what} ({describe(exc)})") from None

    def _collect(self, channel: paramiko.Channel, timeout: float, what: str) -> RemoteResult:
        out, err = bytearray(), bytearray()
        deadline = time.monotonic() + timeout
        while True:
            busy = False
            if channel.recv_ready():
                out += channel.recv(65536)
                busy = True
            if channel.recv_stderr_ready():
                err += channel.recv_stderr(65536)
                busy = True
            if busy:
                continue
            if channel.exit_status_ready() and not channel.recv_ready() and not channel.recv_stderr_ready():
                break
            if channel.closed or not channel.get_transport().is_active():
                raise ConnectionLost(f"connection to board {self.profile.name} lost during {what}")
            if time.monotonic() > deadline:
                channel.close()
                raise RemoteTimeout(f"{what} on board {self.profile.name} did not finish within {timeout:g} s "
                                    f"(command timeout; raise it with --command-timeout)")
            channel.status_event.wait(0.02)
        code = channel.recv_exit_status()
        ended_cleanly = channel.eof_received and channel.get_transport().is_active()
        channel.close()
        if code == -1 and not ended_cleanly:
            # paramiko's value when the session ended without an exit status: a dropped
            # connection, unless the board closed the channel in order (a process killed by a
            # signal reports exit-signal, which paramiko does not record; kept as -1 then)
            raise ConnectionLost(f"connection to board {self.profile.name} lost during {what}")
        return RemoteResult(code, bytes(out), bytes(err))

    def run_sudo(self, argv: list[str], password: str | None, timeout: float | None = None,
                 what: str = "command") -> RemoteResult:
        """Run argv as root. The password travels on stdin (`sudo -S`), never in the command line;
        the prompt is empty so nothing of it shows in the output."""
        stdin = (password + "\n").encode() if password is not None else None
        return self.run(["sudo", "-S", "-p", "", "--", *argv], stdin=stdin, timeout=timeout, what=what)

    # ------------------------------------------------------------------ files

    @property
    def sftp(self) -> paramiko.SFTPClient:
        if self._sftp is None:
            try:
                self._sftp = self.client.open_sftp()
            except (paramiko.SSHException, EOFError, OSError) as exc:
                raise ConnectionLost(f"board {self.profile.name}: cannot open an SFTP session ({exc})") from None
        return self._sftp

    def mkdir_private(self, path: str) -> None:
        """Create a folder only we can read (fails if it exists: names are random, never reused)."""
        try:
            self.sftp.mkdir(path, mode=0o700)
            self.sftp.chmod(path, 0o700)
        except (OSError, paramiko.SSHException, EOFError) as exc:
            if self._lost(exc):
                raise ConnectionLost(f"connection to board {self.profile.name} lost while creating {path}") from None
            raise BoardError(f"board {self.profile.name}: cannot create {path} ({describe(exc)})") from None

    def put_bytes(self, path: str, data: bytes, mode: int = 0o644) -> None:
        try:
            with self.sftp.open(path, "wb") as f:
                f.set_pipelined(True)
                f.write(data)
            self.sftp.chmod(path, mode)
        except (OSError, paramiko.SSHException, EOFError) as exc:
            if self._lost(exc):
                raise ConnectionLost(f"connection to board {self.profile.name} lost while uploading "
                                     f"{os.path.basename(path)}") from None
            raise BoardError(f"board {self.profile.name}: writing {path} failed ({describe(exc)}; "
                             f"is the board's disk full?)") from None

    def _alive(self) -> bool:
        transport = self.client.get_transport() if self.client else None
        return bool(transport and transport.is_active())

    def _lost(self, exc: BaseException, grace: float = 1.0) -> bool:
        """Was `exc` the connection dying? SFTP status errors (no space, permission) are plain
        OSErrors with an errno; a dying connection shows as EOFError/SSHException/a socket error,
        or as an error the transport thread confirms shortly after by going inactive."""
        if isinstance(exc, (EOFError, paramiko.SSHException, ConnectionError, socket.timeout)):
            return True
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if not self._alive():
                return True
            if getattr(exc, "errno", None):
                return False
            time.sleep(0.05)
        return not self._alive()


def describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__

