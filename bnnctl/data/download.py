"""Fetch dataset files over HTTP(S) and unpack archives without ever leaving partial files."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator, Sequence

from tqdm import tqdm

from bnnctl.errors import BnnctlError, DataError

TIMEOUT_S = 30
_CHUNK = 1 << 20
_NETWORK_ERRORS = (urllib.error.URLError, http.client.HTTPException, OSError, ValueError)


class DownloadError(BnnctlError):
    """No mirror delivered a file (offline, moved, or corrupt every time)."""


def md5_file(path: str | os.PathLike) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_md5(path: str | os.PathLike, expected: str) -> None:
    """DataError naming the file when its md5 is not `expected` (empty `expected`: no check)."""
    if not expected:
        return
    try:
        found = md5_file(path)
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from None
    if found != expected.lower():
        raise DataError(f"{path}: md5 {found}, expected {expected} (file corrupt or not the "
                        f"original; delete it to download it again)")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return str(exc) or type(exc).__name__


def _fetch(url: str, dest: Path, md5: str, progress: bool) -> None:
    """Stream `url` into a temp file beside `dest`, check md5, then rename (atomic)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        digest = hashlib.md5()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=TIMEOUT_S) as resp:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                      desc=dest.name, disable=not progress, leave=False) as bar:
                for block in iter(lambda: resp.read(_CHUNK), b""):
                    out.write(block)
                    digest.update(block)
                    bar.update(len(block))
            if total is not None and out.tell() != total:
                raise OSError(f"connection closed after {out.tell()} of {total} bytes")
        if md5 and digest.hexdigest() != md5.lower():
            raise OSError(f"md5 {digest.hexdigest()}, expected {md5}")
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def download_file(urls: Sequence[str], dest: Path, md5: str, progress: bool, hint: str,
                  what: str = "") -> None:
    """Try each URL in turn; on total failure raise ONE DownloadError ending with `hint`."""
    failures = []
    for url in urls:
        try:
            _fetch(url, dest, md5, progress)
            return
        except _NETWORK_ERRORS as exc:
            failures.append(f"{url}: {_reason(exc)}")
    label = f"{what} ({dest.name})" if what else dest.name
    raise DownloadError(f"cannot download {label}: {'; '.join(failures) or 'no URL'}; {hint}")


@contextlib.contextmanager
def created_dirs(path: Path) -> Iterator[None]:
    """Create `path` (and parents); on failure remove again those this call created, if empty."""
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BnnctlError(f"{path}: cannot create folder ({exc.strerror})") from None
    try:
        yield
    except BaseException:
        for d in missing:  # deepest first
            with contextlib.suppress(OSError):
                d.rmdir()
        raise


def extract_files(archive: Path, wanted: set[str], dest: Path) -> dict[str, Path]:
    """Copy the regular members of a tar archive whose base name is in `wanted` into `dest`.

    Members are read, never extracted by path, so a hostile archive cannot write elsewhere.
    """
    found: dict[str, Path] = {}
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                base = member.name.rsplit("/", 1)[-1]
                if not member.isfile() or base not in wanted or base in found:
                    continue
                src = tar.extractfile(member)
                if src is None:
                    continue
                with src, open(dest / base, "wb") as out:
                    shutil.copyfileobj(src, out, _CHUNK)
                found[base] = dest / base
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"{archive.name}: corrupt archive ({exc})") from None
    missing = sorted(wanted - set(found))
    if missing:
        raise DataError(f"{archive.name}: archive lacks {', '.join(missing)}")
    return found
