"""Write files and folders so that a failure never leaves half-written output behind."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from bnnctl.errors import BnnctlError


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write to a temp file beside `path`, then rename over it (atomic on POSIX)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def check_output_dir(target: str | os.PathLike, force: bool, option: str = "-o/--out") -> Path:
    """Refuse to replace a non-empty folder unless --force; refuse a file in the way."""
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise BnnctlError(f"{target}: exists and is not a folder (option {option})")
    if target.is_dir() and any(target.iterdir()) and not force:
        raise BnnctlError(f"{target}: folder is not empty; use --force to replace it")
    return target


@contextlib.contextmanager
def atomic_directory(target: str | os.PathLike, force: bool = False) -> Iterator[Path]:
    """Yield a temp folder beside `target`; on success it replaces `target` in one rename.

    On any exception the temp folder is removed and `target` is left exactly as it was.
    """
    target = check_output_dir(target, force)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    except OSError as exc:
        raise BnnctlError(f"{target}: cannot create output folder ({exc.strerror})") from None
    try:
        yield tmp
        old = None
        if target.exists():
            old = target.with_name(f".{target.name}.old.{os.getpid()}")
            os.rename(target, old)
        os.rename(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
