"""What is on a board: run the board-side helper in a private work folder and read its answers.

`BoardWork` owns a fresh folder under the profile's remote_tmp (mode 0700, random name), holding
bnnctl's board-side programs; every helper run goes through it, as root via sudo when asked.
`probe()` answers issue 4's deploy step 2: python version, where `bnn` lives (found without
importing it), the overlays installed per platform, the params present, free disk space.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import click

from bnnctl.deploy.profiles import BOARD_ENV_PLATFORM, BoardProfile
from bnnctl.deploy.ssh import BoardError, BoardSession, RemoteResult

HELPER = Path(__file__).with_name("board_helper.py")
BNN_INSTALL_HINT = "install BNN-PYNQ on the board: sudo pip3 install git+https://github.com/Xilinx/BNN-PYNQ.git"


class SudoRefused(BoardError):
    pass


class BnnMissing(BoardError):
    pass


class OverlayMissing(BoardError):
    pass


def last_json(text: str, marker: str = "") -> dict | None:
    """The last line holding a JSON object (after `marker`, if given) in a program's stdout."""
    for line in reversed(text.splitlines()):
        if marker:
            at = line.find(marker)
            if at < 0:
                continue
            line = line[at + len(marker):]
        line = line.strip()
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                return value
    return None


def stderr_tail(result: RemoteResult, lines: int = 6) -> str:
    tail = [line for line in result.err_text.strip().splitlines() if line.strip()][-lines:]
    return " | ".join(line.strip() for line in tail) if tail else "(no error output)"


def remote_failure(result: RemoteResult, what: str, context: int = 12) -> BoardError:
    """A remote program failed: show the end of its stderr (each line marked as the board's),
    and return the one-line error that names the last line (usually the exception)."""
    lines = [line.rstrip() for line in result.err_text.splitlines()
             if line.strip() and not line.startswith("Traceback (most recent call last)")]
    for line in lines[-context:-1]:
        click.echo(f"bnnctl: board stderr: {line}", err=True)
    how = "was killed by a signal" if result.code == -1 else f"failed (exit {result.code})"
    last = lines[-1].strip() if lines else "no error output"
    return BoardError(f"{what} {how}: {last}")


@dataclass
class BoardWork:
    """A private folder on the board with bnnctl's board programs; remove with close()."""

    session: BoardSession
    path: str
    sudo_password: str | None = None
    sudo_checked: bool = False
    files: dict[str, str] = field(default_factory=dict)

    @classmethod
    def open(cls, session: BoardSession) -> "BoardWork":
        path = f"{session.profile.remote_tmp.rstrip('/')}/bnnctl-work.{secrets.token_hex(8)}"
        session.mkdir_private(path)
        work = cls(session, path)
        work.put("board_helper.py", HELPER.read_bytes())
        return work

    def put(self, name: str, data: bytes) -> str:
        remote = f"{self.path}/{name}"
        self.session.put_bytes(remote, data)
        self.files[name] = remote
        return remote

    def close(self) -> None:
        try:
            self.session.run(["rm", "-rf", "--", self.path], timeout=60, what="cleanup")
        except BoardError:
            pass  # the folder is private and in a temp dir; a lost connection must not mask the real error

    @property
    def profile(self) -> BoardProfile:
        return self.session.profile

    def python_argv(self, script: str, args: list[str]) -> list[str]:
        env = [f"{k}={v}" for k, v in sorted(self.profile.env.items())]
        return (["env", *env] if env else []) + [self.profile.python, self.files[script], *args]

    def run_python(self, script: str, args: list[str], sudo: bool = False, what: str = "board program",
                   timeout: float | None = None) -> RemoteResult:
        argv = self.python_argv(script, args)
        if sudo:
            self.ensure_sudo()
            result = self.session.run_sudo(argv, self.sudo_password, timeout=timeout, what=what)
        else:
            result = self.session.run(argv, timeout=timeout, what=what)
        if result.code in (126, 127) and not result.out:
            raise BoardError(f"board {self.profile.name}: cannot run {self.profile.python!r} "
                             f"({stderr_tail(result, 2)}); set `python` in the board profile")
        return result

    def helper(self, op: str, args: list[str], sudo: bool = False) -> dict:
        result = self.run_python("board_helper.py", [op, *args], sudo=sudo, what=f"board helper ({op})")
        answer = last_json(result.text)
        if answer is None:
            raise remote_failure(result, f"board {self.profile.name}: bnnctl's board helper ({op})")
        return answer

    # ------------------------------------------------------------------ sudo

    def ensure_sudo(self) -> None:
        """Make sure `sudo` works before the first privileged step, so that a refusal is reported
        as such (and before anything changed). The password is fed on stdin only."""
        if self.sudo_checked:
            return
        p = self.profile
        probe = self.session.run(["sudo", "-n", "true"], timeout=60, what="sudo check")
        if probe.code == 0:
            self.sudo_password = None
            self.sudo_checked = True
            return
        if probe.code == 127:
            raise SudoRefused(f"board {p.name}: the params folder is root-owned and sudo is not installed")
        password = self.sudo_password or self.session.password_for_sudo()
        if password is None:
            raise SudoRefused(f"board {p.name}: the params folder is root-owned and sudo needs {p.user}'s password: "
                              f"set ${p.sudo_password_env}, or run in a terminal to be asked")
        check = self.session.run_sudo(["true"], password, timeout=60, what="sudo check")
        if check.code != 0:
            raise SudoRefused(f"board {p.name}: sudo refused for {p.user}: {describe_sudo_failure(check)}")
        self.sudo_password = password
        self.sudo_checked = True


def describe_sudo_failure(result: RemoteResult) -> str:
    err = result.err_text.lower()
    if "incorrect password" in err or "try again" in err:
        return "wrong password"
    if "not in the sudoers" in err or "not allowed" in err or "may not run sudo" in err:
        return "this user may not run commands as root"
    if "password is required" in err or "no password was provided" in err:
        return "a password is required"
    return stderr_tail(result, 2)


# ------------------------------------------------------------------------------------------- probe

@dataclass
class ProbeResult:
    raw: dict

    def __getattr__(self, name):
        try:
            return self.raw[name]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def has_bnn(self) -> bool:
        return bool(self.raw.get("bnn_dir"))

    def overlay(self, platform: str, network: str) -> dict:
        return self.raw.get("overlays", {}).get(platform, {}).get(network, {})

    def params_for(self, network: str) -> list[str]:
        return sorted(d for d, nets in self.raw.get("params", {}).items() if network in nets)


def probe(work: BoardWork, name: str = "", network: str = "") -> ProbeResult:
    args = ["--bnn-dir", work.profile.bnn_dir, "--tidy", work.path]
    if name and network:
        args += ["--name", name, "--network", network]
    answer = work.helper("probe", args)
    if not answer.get("ok"):
        raise BoardError(f"board {work.profile.name}: probe failed: {answer.get('message')}")
    return ProbeResult(answer)


def require_bnn(result: ProbeResult, profile: BoardProfile) -> None:
    if not result.has_bnn:
        raise BnnMissing(f"board {profile.name}: the bnn package is not installed for {result.python_executable} "
                         f"(python {result.python}; looked on its import path and in {profile.bnn_dir}); "
                         f"{BNN_INSTALL_HINT}")


def board_platform(result: ProbeResult, profile: BoardProfile) -> str:
    """The profile's platform, cross-checked with the board's own BOARD variable (spec §5)."""
    board_env = result.raw.get("board_env")
    if board_env:
        platform = BOARD_ENV_PLATFORM.get(board_env)
        if platform is None:
            raise BoardError(f"board {profile.name} reports BOARD={board_env}, which BNN-PYNQ does not support "
                             f"({', '.join(BOARD_ENV_PLATFORM)})")
        if platform != profile.platform:
            raise BoardError(f"board {profile.name} reports BOARD={board_env} (platform {platform}) but profile "
                             f"{profile.name} is for {profile.platform}; pick the matching --board")
    return profile.platform


def require_overlay(result: ProbeResult, profile: BoardProfile, network: str, runtimes: tuple[str, ...]) -> None:
    platform = board_platform(result, profile)
    found = result.overlay(platform, network)
    needed = [("bit", f"bitstreams/{platform}/{network}-{platform}.bit")] if "python_hw" in runtimes else []
    needed += [(rt, f"libraries/{platform}/{rt}-{network}-{platform}.so") for rt in runtimes]
    missing = [path for key, path in needed if not found.get(key)]
    if missing:
        have = sorted(n for n, v in result.raw.get("overlays", {}).get(platform, {}).items() if v.get("bit"))
        raise OverlayMissing(f"board {profile.name}: overlay {network} for {platform} is not installed "
                             f"(missing bnn/{', bnn/'.join(missing)}; installed: {', '.join(have) or 'none'})")


def describe(result: ProbeResult, profile: BoardProfile, session: BoardSession) -> list[str]:
    """Human-readable lines of `bnnctl boards check`."""
    from bnnctl.deploy.ssh import fingerprint

    lines = [f"Board {profile.name}: {profile.address} ({result.raw.get('hostname')}, {result.raw.get('machine')})"]
    if session.host_key is not None:
        note = " (newly added to known_hosts)" if session.added_host_key else ""
        lines.append(f"  host key     {session.host_key.get_name()} {fingerprint(session.host_key)}{note}")
    lines.append(f"  python       {result.python} ({result.python_executable})")
    lines.append(f"  BOARD        {result.raw.get('board_env') or '(not set; bnnctl passes ' + profile.board_env + ')'}")
    if not result.has_bnn:
        lines.append(f"  bnn          NOT INSTALLED; {BNN_INSTALL_HINT}")
        return lines
    lines.append(f"  bnn          {result.bnn_dir} (found by {result.bnn_found_by})")
    overlays = result.raw.get("overlays", {}).get(profile.platform, {})
    lines.append(f"  platform     {profile.platform}")
    for net, found in overlays.items():
        parts = [k for k in ("bit", "python_hw", "python_sw") if found.get(k)]
        lines.append(f"  overlay      {net}: {', '.join(parts) or 'incomplete'}")
    if not overlays:
        lines.append(f"  overlay      none installed for {profile.platform}")
    for dataset, nets in result.raw.get("params", {}).items():
        lines.append(f"  params       {dataset}: {', '.join(nets) or '(empty)'}")
    lines.append(f"  free disk    {result.free_bytes / 1e6:.1f} MB at {result.params_dir}")
    lines.append(f"  params dir   {'writable' if result.params_writable else 'root-owned: deploy uses sudo'}")
    return lines


def echo_lines(lines: list[str]) -> None:
    for line in lines:
        click.echo(line)
