"""Board profiles: configs/boards/*.toml, overridden by the user's boards file and by options.

A profile is data: how to reach a board (host, port, user, key) and what it is (platform and
BOARD value of spec bnn-pynq-format.md §1.1/§5, where its `bnn` package lives). The user file
(`$BNNCTL_BOARDS_FILE`, else `$XDG_CONFIG_HOME/bnnctl/boards.toml`, else
`~/.config/bnnctl/boards.toml`) holds one table per board: a table named like a built-in profile
or alias changes that profile; any other name defines a new board and names its `base`.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from bnnctl.errors import BnnctlError
from bnnctl.topology import config_files

BOARDS_FILE_ENV = "BNNCTL_BOARDS_FILE"
PLATFORMS = ("pynqZ1-Z2", "ultra96")
# spec §5: the bnn package maps these BOARD values to platforms, anything else is unsupported.
BOARD_ENV_PLATFORM = {"Pynq-Z1": "pynqZ1-Z2", "Pynq-Z2": "pynqZ1-Z2", "Ultra96": "ultra96"}
SUDO_MODES = ("auto", "always", "never")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class BoardProfile:
    name: str
    platform: str
    board_env: str
    host: str
    port: int = 22
    user: str = "xilinx"
    description: str = ""
    aliases: tuple[str, ...] = ()
    python: str = "python3"
    # Where the bnn package is expected when the board's python cannot locate it (spec §5).
    bnn_dir: str = "/usr/local/lib/python3.6/dist-packages/bnn"
    identity: str | None = None
    known_hosts: str | None = None  # None: ~/.ssh/known_hosts (plus /etc/ssh/ssh_known_hosts)
    password_env: str = "BNNCTL_SSH_PASSWORD"
    sudo_password_env: str = "BNNCTL_SUDO_PASSWORD"
    # Extra environment of the programs bnnctl runs on the board (e.g. PYTHONPATH of a venv).
    env: dict[str, str] = field(default_factory=dict)
    connect_timeout: float = 10.0
    command_timeout: float = 600.0
    remote_tmp: str = "/tmp"
    # hw inference needs root on a PYNQ image (bitstream download, /dev/mem); "auto" uses sudo
    # for it when the login user is not root.
    sudo_infer: str = "auto"
    source: str = "built-in"

    @property
    def address(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"

    def with_overrides(self, **overrides: Any) -> "BoardProfile":
        given = {k: v for k, v in overrides.items() if v is not None}
        return dataclasses.replace(self, **given) if given else self

    def as_json(self) -> dict:
        data = dataclasses.asdict(self)
        data["aliases"] = list(self.aliases)
        return data


_FIELDS = {f.name for f in dataclasses.fields(BoardProfile)} - {"source"}
_USER_ONLY = {"base"}


def user_boards_file() -> Path:
    """Where the user's board overrides live (documented in docs/deploy.md)."""
    explicit = os.environ.get(BOARDS_FILE_ENV)
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CONFIG_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".config"
    return base / "bnnctl" / "boards.toml"


def _read_toml(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise BnnctlError(f"{path}: cannot read board profiles ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise BnnctlError(f"{path}: not valid TOML ({exc})") from None


def _check_values(values: dict, where: str, allowed: set[str]) -> dict:
    unknown = set(values) - allowed
    if unknown:
        raise BnnctlError(f"{where}: unknown keys {sorted(unknown)} (known: {', '.join(sorted(allowed))})")
    out = dict(values)
    checks = {"port": int, "connect_timeout": (int, float), "command_timeout": (int, float)}
    for key, kind in checks.items():
        if key in out and (not isinstance(out[key], kind) or isinstance(out[key], bool) or out[key] <= 0):
            raise BnnctlError(f"{where}: {key} must be a positive number")
    for key in ("aliases",):
        if key in out:
            if not isinstance(out[key], list) or not all(isinstance(a, str) for a in out[key]):
                raise BnnctlError(f"{where}: {key} must be a list of names")
            out[key] = tuple(out[key])
    if "env" in out:
        if not isinstance(out["env"], dict) or not all(isinstance(v, str) for v in out["env"].values()):
            raise BnnctlError(f"{where}: env must be a table of strings")
        for name in out["env"]:
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name):
                raise BnnctlError(f"{where}: env: {name!r} is not a variable name")
    for key in ("host", "user", "python", "bnn_dir", "platform", "board_env", "identity", "known_hosts",
                "password_env", "sudo_password_env", "remote_tmp", "description", "sudo_infer"):
        if key in out and not isinstance(out[key], str):
            raise BnnctlError(f"{where}: {key} must be a string")
    if "platform" in out and out["platform"] not in PLATFORMS:
        raise BnnctlError(f"{where}: platform must be one of {', '.join(PLATFORMS)}")
    if "board_env" in out and out["board_env"] not in BOARD_ENV_PLATFORM:
        raise BnnctlError(f"{where}: board_env must be one of {', '.join(BOARD_ENV_PLATFORM)}")
    if "sudo_infer" in out and out["sudo_infer"] not in SUDO_MODES:
        raise BnnctlError(f"{where}: sudo_infer must be one of {', '.join(SUDO_MODES)}")
    if "remote_tmp" in out and not out["remote_tmp"].startswith("/"):
        raise BnnctlError(f"{where}: remote_tmp must be an absolute path on the board")
    return out


def _resolve_paths(values: dict, base: Path) -> dict:
    # Key files named in the user file are relative to that file, like ssh_config's are to ~.
    for key in ("identity", "known_hosts"):
        if values.get(key):
            path = Path(values[key]).expanduser()
            values[key] = str(path if path.is_absolute() else base / path)
    return values


@functools.lru_cache(maxsize=None)
def builtin_profiles() -> dict[str, BoardProfile]:
    profiles = {}
    for path in config_files("boards").values():
        values = _check_values(_read_toml(path), str(path), _FIELDS)
        missing = {"name", "platform", "board_env", "host"} - set(values)
        if missing:
            raise BnnctlError(f"{path}: missing keys {sorted(missing)}")
        profiles[values["name"]] = BoardProfile(**values, source=str(path))
    return profiles


def load_profiles(user_file: Path | None = None) -> dict[str, BoardProfile]:
    """Built-in profiles with the user's file applied on top (name -> profile)."""
    profiles = dict(builtin_profiles())
    path = user_file or user_boards_file()
    if not path.is_file():
        if os.environ.get(BOARDS_FILE_ENV):
            raise BnnctlError(f"{path}: no such boards file (named by ${BOARDS_FILE_ENV})")
        return profiles
    data = _read_toml(path)
    for table_name, values in data.items():
        where = f"{path}: [{table_name}]"
        if not isinstance(values, dict):
            raise BnnctlError(f"{where}: expected a table of settings")
        if not _NAME.match(table_name):
            raise BnnctlError(f"{where}: board names use letters, digits, '.', '_' and '-'")
        values = _resolve_paths(_check_values(values, where, (_FIELDS | _USER_ONLY) - {"name"}), path.parent)
        base_name = values.pop("base", None)
        existing = None if base_name else _find(profiles, table_name)
        if existing is not None:
            profiles[existing.name] = dataclasses.replace(existing, **values, source=str(path))
            continue
        if base_name is None:
            missing = {"platform", "board_env", "host"} - set(values)
            if missing:
                raise BnnctlError(f"{where}: a new board needs `base = \"pynq-z1\"` (or another profile), "
                                  f"or all of {sorted(missing)}")
            profiles[table_name] = BoardProfile(name=table_name, **values, source=str(path))
            continue
        base = _find(profiles, base_name)
        if base is None:
            raise BnnctlError(f"{where}: base = {base_name!r} is not a board profile ({', '.join(profiles)})")
        values.setdefault("aliases", ())
        profiles[table_name] = dataclasses.replace(base, name=table_name, **values, source=str(path))
    return profiles


def _find(profiles: dict[str, BoardProfile], name: str) -> BoardProfile | None:
    if name in profiles:
        return profiles[name]
    for profile in profiles.values():
        if name in profile.aliases:
            return profile
    return None


def get_profile(name: str) -> BoardProfile:
    profiles = load_profiles()
    profile = _find(profiles, name)
    if profile is None:
        known = ", ".join(sorted(set(profiles) | {a for p in profiles.values() for a in p.aliases}))
        raise BnnctlError(f"--board {name}: no such board profile (known: {known}; "
                          f"add your own in {user_boards_file()})")
    return profile
