"""Board-exact input pre-processing: pictures, CIFAR-10 records and MNIST idx files -> network input.

Everything here reproduces what the BNN-PYNQ board software does to an input (spec
bnn-pynq-format.md §4.1, §4.2, §5) so that host-side results match the recorded board results
bit for bit, whatever Pillow version is installed. numpy + Pillow only.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image, JpegImagePlugin

from bnnctl.errors import BnnctlError, DataError
from bnnctl.fsutil import atomic_write_bytes

CIFAR_SIZE = 32
MNIST_SIZE = 28
CIFAR_RECORD_BYTES = 1 + 3 * CIFAR_SIZE * CIFAR_SIZE  # label + R, G, B planes (spec §4.1.1)
IDX3_MAGIC = 0x00000803  # spec §4.2
IDX1_MAGIC = 0x00000801
LFC_INPUT_BITS = 832  # 13 words of 64 bits; bits 784..831 are padding (spec §4.2)
TOPOLOGIES = ("cnv", "lfc")

# Anything Pillow may raise while identifying or decoding a file it was handed; all of them mean
# "this is not a picture we can use" and become a DataError naming the file.
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error, IndexError,
                  KeyError, TypeError, zlib.error, Image.DecompressionBombError)

PathLike = str | os.PathLike


# --------------------------------------------------------------------------------------------
# Pillow <= 6 thumbnail


def legacy_thumbnail_size(src: tuple[int, int], size: tuple[int, int]) -> tuple[int, int]:
    """The thumbnail size Pillow <= 6 picked: truncation, width first (spec §4.1.1).

    Pillow >= 7 rounds to the nearest aspect instead (64x39 -> 32x20 there, 32x19 here).
    """
    x, y = src
    width, height = size
    if x > width:
        y = int(max(y * width / x, 1))
        x = int(width)
    if y > height:
        x = int(max(x * height / y, 1))
        y = int(height)
    return x, y


def jpeg_draft_scale(src: tuple[int, int], size: tuple[int, int]) -> int:
    """DCT scale denominator s the JPEG draft picks: largest of 8, 4, 2, 1 <= min(W//w, H//h)."""
    ratio = min(src[0] // size[0], src[1] // size[1])
    return next(s for s in (8, 4, 2, 1) if ratio >= s)


def _is_undecoded_jpeg(img: Image.Image) -> bool:
    # A loaded image has no pending tile any more and a drafted one has its decoder configured:
    # Pillow's draft is then a no-op, exactly as on the board, where an image displayed before
    # classification is resized from full resolution.
    return (isinstance(img, JpegImagePlugin.JpegImageFile) and len(getattr(img, "tile", ())) == 1
            and not getattr(img, "decoderconfig", ()))


def legacy_thumbnail(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Reproduce Pillow <= 6 ``img.thumbnail(size, ANTIALIAS)`` on any Pillow (spec §4.1.1).

    Returns the thumbnail (``img`` itself when no resize is needed). Like the board, an undecoded
    JPEG is first told to decode at a reduced DCT scale (the "draft"), so ``img`` may afterwards
    report that reduced size; an image that was already loaded is resized from full resolution.
    The resize is a plain Lanczos resize of the whole (drafted) image: no ``reducing_gap``, no
    fractional box, both of which Pillow >= 7 adds and which change the pixels.
    """
    target = legacy_thumbnail_size(img.size, size)
    if target == img.size:
        return img
    if _is_undecoded_jpeg(img):
        src = img.size
        s = jpeg_draft_scale(src, target)
        img.draft(None, target)
        expected = ((src[0] + s - 1) // s, (src[1] + s - 1) // s)
        # Guard against a future Pillow changing its draft rule: results would silently stop
        # matching the board, so refuse instead.
        if img.size != expected:
            raise BnnctlError(
                f"the installed Pillow {Image.__version__} decoded a JPEG draft at {img.size}, "
                f"expected {expected}: board-exact pre-processing is not possible with it")
    return _pillow6_lanczos(img, target)


def _pillow6_lanczos(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    """``img.resize(size, LANCZOS)`` as Pillow <= 6 computed it: horizontal pass, then vertical.

    Recent Pillow runs the vertical pass first when that is cheaper, which rounds the 8-bit
    intermediate differently (off by one on tall pictures, found by comparing with Pillow 6.2.2).
    Each single-axis resize is a single pass, so two of them pin the order. Alpha modes are
    premultiplied once around both passes, as Pillow's own resize does around its two passes.
    """
    if img.mode in ("1", "P"):
        return img.resize(size, Image.Resampling.NEAREST)  # Pillow always did nearest for these
    if img.mode in ("LA", "RGBA"):
        premultiplied = img.convert(img.mode[:-1] + "a")
        return _two_passes(premultiplied, size).convert(img.mode)
    return _two_passes(img, size)


def _two_passes(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    width, height = size
    out = img
    if width != out.width:
        out = out.resize((width, out.height), Image.Resampling.LANCZOS)
    if height != out.height:
        out = out.resize((width, height), Image.Resampling.LANCZOS)
    return out if out is not img else img.copy()


# --------------------------------------------------------------------------------------------
# Pictures -> CIFAR / MNIST pixels


def _open(path: PathLike) -> Image.Image:
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path}: is a folder, expected a picture file")
    try:
        return Image.open(path)
    except _DECODE_ERRORS as exc:
        raise DataError(f"{path}: cannot read as a picture ({_reason(exc)})") from None


def _reason(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _with_image(img_or_path: Image.Image | PathLike, work) -> np.ndarray:
    """Run `work(img)` on an image or a freshly opened file, turning decode errors into DataError."""
    if isinstance(img_or_path, Image.Image):
        name = getattr(img_or_path, "filename", "") or "image"
        try:
            return work(img_or_path)
        except _DECODE_ERRORS as exc:
            raise DataError(f"{name}: cannot decode picture ({_reason(exc)})") from None
    with _open(img_or_path) as img:
        try:
            return work(img)
        except _DECODE_ERRORS as exc:
            raise DataError(f"{img_or_path}: cannot decode picture ({_reason(exc)})") from None


def _cifar_from_image(img: Image.Image) -> np.ndarray:
    thumb = legacy_thumbnail(img, (CIFAR_SIZE, CIFAR_SIZE))
    w, h = thumb.size
    # spec §4.1.1: transparent white RGBA canvas, thumbnail pasted without mask, so an RGBA
    # source's colour under transparent pixels is kept; paste() converts any other mode to RGBA
    # (grey -> R=G=B), the same conversion Pillow <= 6 did.
    canvas = Image.new("RGBA", (CIFAR_SIZE, CIFAR_SIZE), (255, 255, 255, 0))
    canvas.paste(thumb, (int((CIFAR_SIZE - w) / 2), int((CIFAR_SIZE - h) / 2)))
    return np.array(canvas, dtype=np.uint8)[:, :, :3].copy()


def image_to_cifar_pixels(img_or_path: Image.Image | PathLike) -> np.ndarray:
    """One picture -> uint8 (32, 32, 3) RGB exactly as the board's ``image_to_cifar`` (spec §4.1.1).

    A path is opened fresh, so a JPEG gets the board's draft decoding (``classify_path``); a PIL
    image that was already loaded is resized from full resolution (``classify_image`` after display).
    """
    return _with_image(img_or_path, _cifar_from_image)


def image_to_mnist_pixels(img_or_path: Image.Image | PathLike, invert: bool = False) -> np.ndarray:
    """One ordinary picture -> uint8 (28, 28) for LFC networks.

    The picture is converted to greyscale ('L'), shrunk with the same Pillow <= 6 thumbnail rule
    as CNV inputs to fit 28x28, and centred on a black canvas. MNIST digits are white ink on black,
    so the picture is expected in that polarity; pass ``invert=True`` for dark ink on light paper
    (inverted before the thumbnail so the padding stays black). The board itself has no such call:
    its webcam notebooks build the idx3 file by hand (spec §4.2), so this is bnnctl's convention.
    """

    def work(img: Image.Image) -> np.ndarray:
        grey = img.convert("L")
        if invert:
            grey = grey.point(lambda v: 255 - v)
        thumb = legacy_thumbnail(grey, (MNIST_SIZE, MNIST_SIZE))
        w, h = thumb.size
        canvas = Image.new("L", (MNIST_SIZE, MNIST_SIZE), 0)
        canvas.paste(thumb, (int((MNIST_SIZE - w) / 2), int((MNIST_SIZE - h) / 2)))
        return np.array(canvas, dtype=np.uint8)

    return _with_image(img_or_path, work)


# --------------------------------------------------------------------------------------------
# CIFAR-10 binary records (spec §4.1.1)


def _check_pixels(pixels: np.ndarray, shape: tuple[int, ...], what: str) -> np.ndarray:
    arr = np.asarray(pixels)
    if arr.shape == shape:
        arr = arr[None]
    if arr.ndim != len(shape) + 1 or arr.shape[1:] != shape:
        raise DataError(f"{what}: expected pixels of shape (N, {', '.join(map(str, shape))}), "
                        f"got {arr.shape}")
    if arr.dtype != np.uint8:
        if arr.size and (not np.issubdtype(arr.dtype, np.integer) or arr.min() < 0 or arr.max() > 255):
            raise DataError(f"{what}: expected uint8 pixel values 0..255, got dtype {arr.dtype}")
        arr = arr.astype(np.uint8)
    return arr


def parse_cifar_records(data: bytes, name: str = "CIFAR records") -> tuple[np.ndarray, np.ndarray]:
    """Bytes of concatenated 3073-byte records -> (labels (N,), pixels (N, 32, 32, 3)), uint8."""
    count = len(data) // CIFAR_RECORD_BYTES
    if count == 0:
        raise DataError(f"{name}: {len(data)} bytes, expected at least one CIFAR-10 record "
                        f"of {CIFAR_RECORD_BYTES} bytes")
    # A trailing partial record is ignored, as the board's reader does (spec §4.1.1).
    rec = np.frombuffer(data, dtype=np.uint8, count=count * CIFAR_RECORD_BYTES)
    rec = rec.reshape(count, CIFAR_RECORD_BYTES)
    pixels = rec[:, 1:].reshape(count, 3, CIFAR_SIZE, CIFAR_SIZE).transpose(0, 2, 3, 1)
    return rec[:, 0].copy(), np.ascontiguousarray(pixels)


def read_cifar_records(path: PathLike) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10 binary file -> (labels uint8 (N,), pixels uint8 (N, 32, 32, 3) RGB)."""
    return parse_cifar_records(_read_bytes(path), str(path))


def cifar_records_bytes(pixels: np.ndarray, labels: Sequence[int] | np.ndarray | None = None) -> bytes:
    """Pixels (N, 32, 32, 3) or (32, 32, 3) -> concatenated records; label 1 by default like the
    board's ``image_to_cifar`` (spec §4.1.1)."""
    arr = _check_pixels(pixels, (CIFAR_SIZE, CIFAR_SIZE, 3), "CIFAR records")
    n = arr.shape[0]
    if labels is None:
        lab = np.ones(n, dtype=np.uint8)
    else:
        lab = np.asarray(labels).reshape(-1)
        if lab.shape[0] != n:
            raise DataError(f"CIFAR records: {lab.shape[0]} labels for {n} images")
        if lab.size and (lab.min() < 0 or lab.max() > 255):
            raise DataError("CIFAR records: labels must be 0..255")
        lab = lab.astype(np.uint8)
    out = np.empty((n, CIFAR_RECORD_BYTES), dtype=np.uint8)
    out[:, 0] = lab
    out[:, 1:] = arr.transpose(0, 3, 1, 2).reshape(n, -1)  # planar R, G, B; rows top to bottom
    return out.tobytes()


def write_cifar_records(path: PathLike, pixels: np.ndarray,
                        labels: Sequence[int] | np.ndarray | None = None) -> None:
    atomic_write_bytes(path, cifar_records_bytes(pixels, labels))


# --------------------------------------------------------------------------------------------
# MNIST idx files (spec §4.2)


def _read_bytes(path: PathLike) -> bytes:
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder, expected a file") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from None
    if data[:2] == b"\x1f\x8b":  # gzip, as the original MNIST downloads are
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{path}: corrupt gzip data ({_reason(exc)})") from None
    return data


def _parse_idx(data: bytes, magic: int, dims: int, name: str) -> tuple[int, ...]:
    header = 4 * (1 + dims)
    if len(data) < header:
        raise DataError(f"{name}: {len(data)} bytes, too short for an idx header")
    found = struct.unpack(">I", data[:4])[0]
    if found != magic:
        raise DataError(f"{name}: magic 0x{found:08x}, expected 0x{magic:08x} "
                        f"(MNIST idx{dims} file)")
    shape = struct.unpack(f">{dims}I", data[4:header])
    need = header + int(np.prod(shape, dtype=np.int64))
    # Trailing bytes after the announced items are ignored, as the board reads only `count` items.
    if len(data) < need:
        raise DataError(f"{name}: {len(data)} bytes, header announces {need} (file truncated)")
    return shape


def parse_idx3(data: bytes, name: str = "idx3 data") -> np.ndarray:
    count, rows, cols = _parse_idx(data, IDX3_MAGIC, 3, name)
    if (rows, cols) != (MNIST_SIZE, MNIST_SIZE):
        raise DataError(f"{name}: images are {rows}x{cols}, expected 28x28")
    return np.frombuffer(data, dtype=np.uint8, count=count * rows * cols, offset=16).reshape(
        count, rows, cols).copy()


def read_idx3(path: PathLike) -> np.ndarray:
    """MNIST idx3 image file (optionally gzipped) -> uint8 (N, 28, 28)."""
    return parse_idx3(_read_bytes(path), str(path))


def read_idx1(path: PathLike) -> np.ndarray:
    """MNIST idx1 label file (optionally gzipped) -> uint8 (N,)."""
    data = _read_bytes(path)
    (count,) = _parse_idx(data, IDX1_MAGIC, 1, str(path))
    return np.frombuffer(data, dtype=np.uint8, count=count, offset=8).copy()


def idx3_bytes(images: np.ndarray) -> bytes:
    """uint8 (N, 28, 28) or (28, 28) -> idx3 file content (big-endian header, spec §4.2)."""
    arr = _check_pixels(images, (MNIST_SIZE, MNIST_SIZE), "idx3 images")
    return struct.pack(">4I", IDX3_MAGIC, arr.shape[0], MNIST_SIZE, MNIST_SIZE) + arr.tobytes()


def idx1_bytes(labels: Sequence[int] | np.ndarray) -> bytes:
    lab = np.asarray(labels).reshape(-1)
    if lab.size and (lab.min() < 0 or lab.max() > 255):
        raise DataError("idx1 labels: values must be 0..255")
    return struct.pack(">2I", IDX1_MAGIC, lab.shape[0]) + lab.astype(np.uint8).tobytes()


def write_idx3(path: PathLike, images: np.ndarray) -> None:
    atomic_write_bytes(path, idx3_bytes(images))


def write_idx1(path: PathLike, labels: Sequence[int] | np.ndarray) -> None:
    atomic_write_bytes(path, idx1_bytes(labels))


# --------------------------------------------------------------------------------------------
# Network input encodings


def quantize_cnv(pixels: np.ndarray) -> np.ndarray:
    """uint8 RGB (..., 32, 32, 3) -> int8 fixed point with 7 fractional bits.

    spec §4.1.2-4.1.3: q = clamp(floor(128 * (-1 + 2p/255) + 0.5), -128, 127), evaluated through
    its exact closed form (p - 128 below 128, p - 127 from 128 to 254, 127 for 255) so no
    floating point is involved; a test checks both agree on all 256 values.
    """
    p = np.asarray(pixels)
    if p.dtype != np.uint8:
        raise DataError(f"CNV input: expected uint8 pixels, got {p.dtype}")
    q = p.astype(np.int16) - 128
    q += p >= 128
    q[p == 255] = 127
    return q.astype(np.int8)


def binarize_lfc(pixels: np.ndarray) -> np.ndarray:
    """uint8 (N, 28, 28) -> uint8 (N, 832) of 0/1: bit 1 iff p >= 128, bits 784..831 zero (§4.2)."""
    p = np.asarray(pixels)
    if p.dtype != np.uint8:
        raise DataError(f"LFC input: expected uint8 pixels, got {p.dtype}")
    if p.shape == (MNIST_SIZE, MNIST_SIZE):
        p = p[None]
    if p.ndim != 3 or p.shape[1:] != (MNIST_SIZE, MNIST_SIZE):
        raise DataError(f"LFC input: expected shape (N, 28, 28), got {p.shape}")
    bits = np.zeros((p.shape[0], LFC_INPUT_BITS), dtype=np.uint8)
    bits[:, : MNIST_SIZE * MNIST_SIZE] = p.reshape(p.shape[0], -1) >= 128
    return bits


# --------------------------------------------------------------------------------------------
# `bnnctl infer` inputs


@dataclass(frozen=True)
class InputItem:
    name: str  # the path, or "path#i" for the i-th image of a multi-image file
    pixels: np.ndarray  # uint8 (32, 32, 3) for cnv, (28, 28) for lfc


# Pillow formats it can only identify, not decode (or only on some OS): never treat files with
# these extensions as pictures while scanning folders.
_UNDECODABLE_FORMATS = {"BUFR", "GRIB", "HDF5", "MPEG", "WMF"}


def _picture_suffixes() -> set[str]:
    return {ext for ext, fmt in Image.registered_extensions().items()
            if fmt in Image.OPEN and fmt not in _UNDECODABLE_FORMATS}


def is_picture_file(path: PathLike) -> bool:
    """True when the file name has the extension of a picture format Pillow can decode."""
    return Path(path).suffix.lower() in _picture_suffixes()


def _sniff_magic(path: Path) -> int | None:
    """First 4 bytes as a big-endian int (through gzip when compressed); None if unreadable."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
        if head[:2] == b"\x1f\x8b":
            with gzip.open(path, "rb") as f:
                head = f.read(4)
    except (OSError, EOFError, zlib.error):
        return None
    return struct.unpack(">I", head)[0] if len(head) == 4 else None


def _file_kind(path: Path, in_folder: bool) -> str | None:
    """'idx3' | 'idx1' | 'cifar' | 'image', or None to skip (only inside folders)."""
    # The extension decides first: a CIFAR record can start with the bytes of an idx magic
    # (label 0, then red pixels 0, 8, 3).
    if path.suffix.lower() == ".bin":
        return "cifar"
    magic = _sniff_magic(path)
    if magic == IDX3_MAGIC:
        return "idx3"
    if magic == IDX1_MAGIC:
        return "idx1"
    if not in_folder:
        return "image"  # named explicitly: any Pillow format; a failure is reported
    # Inside folders only picture extensions count, so a README or a label file is skipped
    # instead of being misidentified (some Pillow formats have no magic number).
    return "image" if is_picture_file(path) else None


def _items_of_file(path: Path, topology: str, in_folder: bool) -> list[InputItem]:
    kind = _file_kind(path, in_folder)
    if kind is None:
        return []
    name = str(path)
    if kind == "idx1":
        if in_folder:
            return []  # MNIST label files sit next to the images
        raise DataError(f"{path}: is an MNIST idx1 label file, expected images (idx3)")
    if kind == "idx3":
        if topology != "lfc":
            raise DataError(f"{path}: is an MNIST idx3 file (28x28 grey), but a {topology} network "
                            f"expects 32x32 RGB pictures or CIFAR-10 records")
        images = read_idx3(path)
        if len(images) == 0:
            raise DataError(f"{path}: idx3 file holds no images")
        return _named(name, images)
    if kind == "cifar":
        if topology != "cnv":
            raise DataError(f"{path}: .bin is taken as CIFAR-10 records (32x32 RGB), but a "
                            f"{topology} network expects 28x28 pictures or MNIST idx3 files")
        return _named(name, read_cifar_records(path)[1])
    if topology == "cnv":
        return [InputItem(name, image_to_cifar_pixels(path))]
    return [InputItem(name, image_to_mnist_pixels(path))]


def _named(name: str, images: np.ndarray) -> list[InputItem]:
    if len(images) == 1:
        return [InputItem(name, images[0])]
    return [InputItem(f"{name}#{i}", img) for i, img in enumerate(images)]


def load_input_files(paths: Iterable[PathLike], topology: str) -> list[InputItem]:
    """INPUT arguments of ``bnnctl infer`` -> pre-processed network inputs, in argument order.

    Each path may be a picture (any format Pillow reads), a CIFAR-10 record file (``.bin``, cnv
    only), an MNIST idx3 file (detected by its magic, lfc only), or a folder scanned recursively
    in sorted order for those (other files in folders are skipped).
    """
    if topology not in TOPOLOGIES:
        raise BnnctlError(f"unknown topology '{topology}': expected one of {', '.join(TOPOLOGIES)}")
    items: list[InputItem] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise DataError(f"{path}: no such file or folder")
        if path.is_dir():
            found: list[InputItem] = []
            for f in sorted(p for p in path.rglob("*") if p.is_file()):
                found.extend(_items_of_file(f, topology, in_folder=True))
            if not found:
                raise DataError(f"{path}: folder holds no pictures, CIFAR-10 .bin or idx3 files")
            items.extend(found)
        else:
            items.extend(_items_of_file(path, topology, in_folder=False))
    return items


def stack_pixels(items: Sequence[InputItem]) -> np.ndarray:
    """Stack the items' pixels into one uint8 array (N, 32, 32, 3) or (N, 28, 28)."""
    if not items:
        raise DataError("no inputs given")
    return np.stack([item.pixels for item in items]).astype(np.uint8, copy=False)
