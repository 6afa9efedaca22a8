"""Accuracy of a parameter folder over a labelled set, as the board would report it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bnnctl.infer.classify import Classification, classify_pixels
from bnnctl.model import BinarizedNetwork


@dataclass
class Evaluation:
    labels: np.ndarray
    predicted: np.ndarray
    class_names: list[str]
    classification: Classification

    @property
    def count(self) -> int:
        return len(self.labels)

    @property
    def errors(self) -> int:
        return int((self.labels != self.predicted).sum())

    @property
    def accuracy(self) -> float:
        return 100.0 * (self.count - self.errors) / max(self.count, 1)

    def confusion(self) -> np.ndarray:
        """rows = true class, columns = predicted class."""
        n = len(self.class_names)
        matrix = np.zeros((n, n), dtype=np.int64)
        np.add.at(matrix, (self.labels, np.clip(self.predicted, 0, n - 1)), 1)
        return matrix

    def per_class_accuracy(self) -> list[float | None]:
        matrix = self.confusion()
        totals = matrix.sum(axis=1)
        return [100.0 * matrix[i, i] / totals[i] if totals[i] else None for i in range(len(totals))]

    def as_json(self) -> dict:
        return {
            "count": self.count, "errors": self.errors, "accuracy_percent": self.accuracy,
            "rule": self.classification.rule, "engine": self.classification.engine,
            "classes": self.class_names, "per_class_accuracy_percent": self.per_class_accuracy(),
            "confusion": self.confusion().tolist(), "timing": self.classification.timing.as_json(),
        }


def evaluate(model: BinarizedNetwork, images: np.ndarray, labels: np.ndarray, rule: str = "multiple",
             engine: str = "auto") -> Evaluation:
    """The default rule is the multi-image one, as the board's classify_cifars/classify_mnists."""
    result = classify_pixels(model, images, rule=rule, engine=engine)
    return Evaluation(labels=np.asarray(labels, dtype=np.int64), predicted=result.classes,
                      class_names=list(model.classes), classification=result)
