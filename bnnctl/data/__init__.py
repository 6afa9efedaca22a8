"""Datasets for evaluation and training (MNIST, CIFAR-10, CUCUMBER-9, image folders)."""

from __future__ import annotations

from bnnctl.data.datasets import (
    Dataset,
    DatasetConfig,
    available_datasets,
    dataset_config,
    default_data_root,
    load_dataset,
    load_image_folder,
    validation_split,
)

__all__ = [
    "Dataset",
    "DatasetConfig",
    "available_datasets",
    "dataset_config",
    "default_data_root",
    "load_dataset",
    "load_image_folder",
    "validation_split",
]
