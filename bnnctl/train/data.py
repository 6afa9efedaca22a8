"""The data of one run: train / validation / test, in the form the trainer consumes.

Datasets come from `bnnctl.data.datasets` (files, cache, download, checksums, image folders);
this module only splits and encodes them:
* the validation split is held out from the *training* data with a seeded permutation, and the
  best epoch is chosen on it; the test split is only ever evaluated at the end;
* CNV pixels stay uint8 (augmentation works on pixels, encoding happens per batch on the
  device); LFC inputs are encoded to +-1 once (their optional shifts work on those values).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bnnctl.errors import BnnctlError
from bnnctl.topology import NetworkSpec
from bnnctl.train.inputs import lfc_values

@dataclass
class TrainingData:
    classes: list[str]
    topology: str
    train_x: torch.Tensor  # CNV uint8 (N, 32, 32, 3); LFC float32 (N, 784) +-1
    train_y: torch.Tensor  # int64
    valid_x: torch.Tensor
    valid_y: torch.Tensor
    test_pixels: np.ndarray  # raw uint8 pixels, for the hardware-exact test
    test_labels: np.ndarray  # int64
    test_split: str  # what the test figures are computed on, for the report

    def test_inputs(self) -> torch.Tensor:
        """Test images in the same stored form as train_x (encoded by the trainer's Inputs)."""
        if self.topology == "cnv":
            return torch.from_numpy(np.ascontiguousarray(self.test_pixels))
        return lfc_values(self.test_pixels)


def shuffled_batches(count: int, batch_size: int, generator: torch.Generator,
                     device: torch.device) -> list[torch.Tensor]:
    """One epoch's batches of training-image indices, in a random order drawn from `generator`.

    Batch-norm cannot take training statistics of one image (CNV conv 5 is 1x1), so a last batch
    of one is dropped; that image is trained on in other epochs, as every epoch reshuffles.
    """
    order = torch.randperm(count, generator=generator).to(device)
    if len(order) % batch_size == 1:
        order = order[:-1]
    return list(order.split(batch_size))


def _check_dataset_name(dataset: str) -> str:
    """Known name -> its topology; a folder -> 'folder'; anything else is a user error."""
    from bnnctl.data import datasets

    known = datasets.available_datasets()
    if dataset in known:
        return datasets.dataset_config(dataset).topology
    if Path(dataset).is_dir():
        return "folder"
    if Path(dataset).exists():
        raise BnnctlError(f"{dataset}: is a file; give a dataset name or a folder with one sub-folder "
                          "of images per class")
    raise BnnctlError(f"unknown dataset '{dataset}': expected {', '.join(known)} or a folder "
                      "with one sub-folder of images per class")


def _check_images(name: str, images: np.ndarray, labels: np.ndarray, spec: NetworkSpec) -> None:
    shape = (spec.input_height, spec.input_width, 3) if spec.is_cnv else (spec.input_height, spec.input_width)
    if images.dtype != np.uint8 or images.shape[1:] != shape:
        raise BnnctlError(f"{name}: images are {images.dtype} {images.shape[1:]}, {spec.name} needs uint8 {shape}")
    if len(images) != len(labels):
        raise BnnctlError(f"{name}: {len(images)} images but {len(labels)} labels")


def load_training_data(config, spec: NetworkSpec) -> TrainingData:
    from bnnctl.data import datasets

    kind = _check_dataset_name(config.dataset)
    topology = spec.topology
    if kind != "folder" and kind != topology:
        need = "an lfc network (28x28 digits)" if kind == "lfc" else "a cnv network (32x32 RGB photos)"
        raise BnnctlError(f"{config.dataset} needs {need}, not --network {spec.name}")

    if kind == "folder":
        full = datasets.load_image_folder(config.dataset, topology)
        test = None
    else:
        full = datasets.load_dataset(config.dataset, split="train", data_dir=config.data_dir)
        test = datasets.load_dataset(config.dataset, split="test", data_dir=config.data_dir)
    images = np.asarray(full.images)
    labels = np.asarray(full.labels, dtype=np.int64)
    classes = list(full.classes)
    _check_images(config.dataset, images, labels, spec)
    if config.limit:
        images, labels = images[:config.limit], labels[:config.limit]
    present = np.unique(labels)
    if len(classes) < 2 or len(present) < 2:
        raise BnnctlError(f"{config.dataset}: training needs at least 2 classes with images, found "
                          f"{len(present)}")
    if len(classes) > spec.max_classes:
        raise BnnctlError(f"{config.dataset}: {len(classes)} classes, {spec.name} supports at most {spec.max_classes}")
    if labels.min() < 0 or labels.max() >= len(classes):
        raise BnnctlError(f"{config.dataset}: labels outside 0..{len(classes) - 1}")

    train_idx, valid_idx = datasets.validation_split(len(labels), config.valid_fraction, config.seed)
    train_idx, valid_idx = np.asarray(train_idx), np.asarray(valid_idx)
    if len(train_idx) < 2 or len(valid_idx) == 0:
        raise BnnctlError(f"{config.dataset}: too few images ({len(labels)}) for a training and a validation split")

    if test is None:
        # An image folder has no test split; the final figures are then measured on the
        # validation images (which did choose the best epoch) and labelled as such.
        test_pixels, test_labels = images[valid_idx], labels[valid_idx]
        test_split = "validation images (the folder has no separate test split)"
    else:
        test_pixels = np.asarray(test.images)
        test_labels = np.asarray(test.labels, dtype=np.int64)
        _check_images(f"{config.dataset} test split", test_pixels, test_labels, spec)
        test_limit = config.test_limit or config.limit
        if test_limit:
            test_pixels, test_labels = test_pixels[:test_limit], test_labels[:test_limit]
        test_split = "test"

    def stored(idx: np.ndarray) -> torch.Tensor:
        if topology == "cnv":
            return torch.from_numpy(np.ascontiguousarray(images[idx]))
        return lfc_values(images[idx])

    return TrainingData(classes=classes, topology=topology,
                        train_x=stored(train_idx), train_y=torch.from_numpy(labels[train_idx]),
                        valid_x=stored(valid_idx), valid_y=torch.from_numpy(labels[valid_idx]),
                        test_pixels=np.ascontiguousarray(test_pixels), test_labels=test_labels,
                        test_split=test_split)
