"""Datasets for evaluation and training: MNIST, CIFAR-10, CUCUMBER-9 and image folders (numpy only).

The facts about each dataset (files, md5, classes, URLs) live in configs/datasets/<name>.toml.
"""

from __future__ import annotations

import functools
import os
import pickle
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from bnnctl.data.download import created_dirs, download_file, extract_files, verify_md5
from bnnctl.errors import BnnctlError, DataError
from bnnctl.infer import preprocess
from bnnctl.topology import config_files

SPLITS = ("train", "test")
ENV_DATA = "BNNCTL_DATA"


@dataclass
class Dataset:
    name: str
    images: np.ndarray  # uint8; cnv: (N, 32, 32, 3) RGB, lfc: (N, 28, 28)
    labels: np.ndarray  # int64 (N,)
    classes: list[str]

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class DatasetConfig:
    name: str
    topology: str
    layout: str  # "idx" (MNIST files) or "cifar-python" (pickled batches)
    folders: tuple[str, ...]
    classes: tuple[str, ...]
    counts: dict[str, int]
    splits: dict[str, object]  # idx: {split: {images, labels}}; cifar-python: {split: [batches]}
    md5: dict[str, str]
    urls: tuple[str, ...]  # idx: mirrors (file name appended); cifar-python: archive URLs
    compressed: str = ""
    meta: str = ""
    archive: str = ""
    archive_md5: str = ""
    vertical_flips: bool = False  # [training] a photo upside down is still the same class

    def split_files(self, split: str) -> list[str]:
        entry = self.splits[split]
        return [entry["images"], entry["labels"]] if self.layout == "idx" else list(entry)

    def all_files(self) -> list[str]:
        files = [f for s in SPLITS for f in self.split_files(s)]
        return files + ([self.meta] if self.meta else [])


@functools.lru_cache(maxsize=None)
def available_datasets() -> tuple[str, ...]:
    return tuple(config_files("datasets"))


@functools.lru_cache(maxsize=None)
def dataset_config(name: str) -> DatasetConfig:
    if name not in available_datasets():
        raise BnnctlError(f"unknown dataset '{name}': expected one of {', '.join(available_datasets())}")
    path = config_files("datasets")[name]
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        dl = data.get("download", {})
        return DatasetConfig(
            name=data["name"], topology=data["topology"], layout=data["layout"],
            folders=tuple(data["folders"]), classes=tuple(data["classes"]),
            counts=dict(data["counts"]), splits=dict(data["splits"]), md5=dict(data.get("md5", {})),
            urls=tuple(dl.get("mirrors") or dl.get("urls") or ()), compressed=dl.get("compressed", ""),
            meta=data.get("meta", ""), archive=dl.get("archive", ""),
            archive_md5=dl.get("archive_md5", ""),
            vertical_flips=bool(data.get("training", {}).get("vertical_flips", False)))
    except (OSError, tomllib.TOMLDecodeError, KeyError, TypeError) as exc:
        raise BnnctlError(f"{path}: invalid dataset config ({exc})") from None


# --------------------------------------------------------------------------------------------
# Where the data is


def default_data_root() -> Path:
    """$BNNCTL_DATA, else the per-user cache ($XDG_CACHE_HOME or ~/.cache)/bnnctl/datasets."""
    env = os.environ.get(ENV_DATA)
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache).expanduser() / "bnnctl" / "datasets"


def _present(folder: Path, cfg: DatasetConfig, name: str) -> Path | None:
    """The file `name` in `folder`, or its compressed variant for idx datasets."""
    for candidate in (name, name + cfg.compressed) if cfg.compressed else (name,):
        if (folder / candidate).is_file():
            return folder / candidate
    return None


def find_dataset_dir(cfg: DatasetConfig, root: Path, split: str) -> Path | None:
    """`root` itself or one of its conventional sub-folders holding the split's files."""
    needed = cfg.split_files(split) + ([cfg.meta] if cfg.meta else [])
    for folder in (root, *(root / f for f in cfg.folders)):
        if all(_present(folder, cfg, f) for f in needed):
            return folder
    return None


def _hint(cfg: DatasetConfig, root: Path) -> str:
    return (f"to use a local copy of {cfg.name}, put its files ({', '.join(cfg.all_files())}) in "
            f"a folder (or its sub-folder {cfg.folders[0]}/) and pass --data-dir FOLDER or set "
            f"{ENV_DATA}=FOLDER (looked in {root})")


# --------------------------------------------------------------------------------------------
# Loading


def load_dataset(name: str, split: str, data_dir: str | os.PathLike | None = None,
                 download: bool = True, progress: bool = True, verify: bool = True) -> Dataset:
    """Load a split ('train' | 'test') of mnist, cifar10 or cucumber9 as uint8 images + int64 labels.

    Looks in `data_dir`, else $BNNCTL_DATA, else the user cache; downloads there when missing and
    `download` is true. With `verify`, every file's md5 is checked against the dataset config.
    """
    cfg = dataset_config(name)
    if split not in SPLITS:
        raise BnnctlError(f"unknown split '{split}': expected one of {', '.join(SPLITS)}")
    root = Path(data_dir).expanduser() if data_dir is not None else default_data_root()
    folder = find_dataset_dir(cfg, root, split)
    if folder is None:
        if not download:
            raise BnnctlError(f"{cfg.name} ({split}) not found; {_hint(cfg, root)}")
        folder = fetch_dataset(cfg, root, progress)
    if cfg.layout == "idx":
        images, labels = _load_idx(cfg, folder, split, verify)
    else:
        images, labels = _load_cifar_python(cfg, folder, split, verify)
    if labels.size and labels.max() >= len(cfg.classes):
        raise DataError(f"{folder}: label {labels.max()} out of range for {len(cfg.classes)} classes")
    return Dataset(name=cfg.name, images=images, labels=labels, classes=list(cfg.classes))


def _checked(cfg: DatasetConfig, folder: Path, name: str, verify: bool) -> Path:
    path = _present(folder, cfg, name)
    if path is None:
        raise DataError(f"{folder / name}: missing")
    if verify:
        verify_md5(path, cfg.md5.get(path.name, ""))
    return path


def _load_idx(cfg: DatasetConfig, folder: Path, split: str, verify: bool):
    entry = cfg.splits[split]
    images_path = _checked(cfg, folder, entry["images"], verify)
    labels_path = _checked(cfg, folder, entry["labels"], verify)
    images = preprocess.read_idx3(images_path)
    labels = preprocess.read_idx1(labels_path).astype(np.int64)
    if len(images) != len(labels):
        raise DataError(f"{labels_path}: {len(labels)} labels for {len(images)} images "
                        f"in {images_path.name}")
    return images, labels


# Only what numpy needs to rebuild arrays: a pickle can otherwise run arbitrary code, and these
# files may come from the internet.
_PICKLE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        if module.startswith("numpy.core.") and hasattr(np, "_core"):
            module = "numpy._core." + module[len("numpy.core."):]  # numpy 2 renamed it
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            # Python 2 pickles (spec'd layout, shared/data/README.md): latin1 keeps bytes intact.
            obj = _SafeUnpickler(f, encoding="latin1").load()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from None
    except Exception as exc:  # a corrupt pickle can raise nearly anything
        raise DataError(f"{path}: not a valid CIFAR-python pickle ({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a pickled dict, got {type(obj).__name__}")
    return obj


def _load_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    batch = _unpickle(path)
    if "data" not in batch or "labels" not in batch:
        raise DataError(f"{path}: pickled dict lacks 'data' or 'labels'")
    try:
        data = np.asarray(batch["data"])
        labels = np.asarray(batch["labels"], dtype=np.int64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{path}: unusable 'data' or 'labels' ({exc})") from None
    if data.dtype != np.uint8 or data.size % 3072 or data.size // 3072 != len(labels):
        raise DataError(f"{path}: data {data.dtype} {data.shape} does not hold {len(labels)} "
                        f"uint8 32x32x3 images")
    # CIFAR-10 stores one image per row (3072), CUCUMBER-9 one colour plane per row (1024):
    # both are R, G, B planes of 32 rows in order, so one reshape reads both.
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


def _load_cifar_python(cfg: DatasetConfig, folder: Path, split: str, verify: bool):
    meta = _unpickle(_checked(cfg, folder, cfg.meta, verify))
    names = meta.get("label_names")
    if names is not None and list(names) != list(cfg.classes):
        raise DataError(f"{folder / cfg.meta}: label_names {list(names)} are not those of "
                        f"{cfg.name} ({list(cfg.classes)})")
    parts = [_load_batch(_checked(cfg, folder, f, verify)) for f in cfg.split_files(split)]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    if labels.size and labels.min() < 0:
        raise DataError(f"{folder}: negative labels")
    return images, labels


# --------------------------------------------------------------------------------------------
# Downloading


def fetch_dataset(cfg: DatasetConfig, root: Path, progress: bool = True) -> Path:
    """Download every file of `cfg` into root/<first conventional folder>; return that folder."""
    target = root / cfg.folders[0]
    hint = _hint(cfg, root)
    with created_dirs(target):
        if cfg.layout == "idx":
            for name in cfg.all_files():
                gz = name + cfg.compressed
                if _present(target, cfg, name):
                    continue
                download_file([u + gz for u in cfg.urls], target / gz, cfg.md5.get(gz, ""),
                              progress, hint, what=cfg.name)
        else:
            _fetch_archive(cfg, target, progress, hint)
    return target


def _fetch_archive(cfg: DatasetConfig, target: Path, progress: bool, hint: str) -> None:
    work = Path(tempfile.mkdtemp(prefix=f".{cfg.name}.", suffix=".download", dir=target))
    try:
        archive = work / cfg.archive
        download_file(list(cfg.urls), archive, cfg.archive_md5, progress, hint, what=cfg.name)
        files = extract_files(archive, set(cfg.all_files()), work)
        for path in files.values():  # check everything before anything is moved into place
            verify_md5(path, cfg.md5.get(path.name, ""))
        for name, path in files.items():
            os.replace(path, target / name)
    finally:
        shutil.rmtree(work, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# Image folders and splits


def load_image_folder(path: str | os.PathLike, topology: str) -> Dataset:
    """A folder with one sub-folder of pictures per class (classes = sorted sub-folder names).

    Each picture is brought to the network input like `bnnctl infer` does: the board's CIFAR
    pre-processing for cnv, the 28x28 greyscale convention for lfc (see bnnctl.infer.preprocess).
    """
    root = Path(path)
    if topology not in preprocess.TOPOLOGIES:
        raise BnnctlError(f"unknown topology '{topology}': expected one of "
                          f"{', '.join(preprocess.TOPOLOGIES)}")
    if not root.is_dir():
        raise DataError(f"{root}: not a folder (expected one sub-folder of pictures per class)")
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not class_dirs:
        raise DataError(f"{root}: no class sub-folders (expected one sub-folder of pictures per class)")
    if len(class_dirs) < 2:
        raise DataError(f"{root}: only one class sub-folder ({class_dirs[0].name}), need at least 2")
    convert = preprocess.image_to_cifar_pixels if topology == "cnv" else preprocess.image_to_mnist_pixels
    images, labels = [], []
    for index, class_dir in enumerate(class_dirs):
        files = sorted(f for f in class_dir.rglob("*")
                       if f.is_file() and not f.name.startswith(".") and preprocess.is_picture_file(f))
        if not files:
            raise DataError(f"{class_dir}: class folder holds no pictures")
        for f in files:
            images.append(convert(f))
            labels.append(index)
    return Dataset(name=root.name, images=np.stack(images),
                   labels=np.asarray(labels, dtype=np.int64), classes=[d.name for d in class_dirs])


def validation_split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random split of range(n) -> (train_idx, valid_idx), each sorted ascending."""
    if not 0.0 <= fraction < 1.0:
        raise BnnctlError(f"validation fraction {fraction}: expected 0 <= fraction < 1")
    n_valid = int(round(n * fraction))
    if fraction > 0 and n_valid == 0 and n > 1:
        n_valid = 1  # a requested validation set should never silently be empty
    if n_valid >= n and n > 0:
        raise BnnctlError(f"validation fraction {fraction} leaves no training data out of {n}")
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_valid:]), np.sort(perm[:n_valid])
