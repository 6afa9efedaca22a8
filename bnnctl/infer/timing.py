"""Timing figures and the board's printout format (spec §5 "Printouts", §4.5)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Timing:
    usec_total: float
    usec_per_image: float
    images_per_second: float
    count: int

    @classmethod
    def from_duration(cls, usec: float, count: int) -> "Timing":
        # The board's library hands back usec per image as a float32 and Python multiplies it by
        # the count in double, which is why the board prints e.g. 1092898.03 for 1092898 us.
        per_image = float(np.float32(usec / max(count, 1)))
        total = per_image * count if count > 1 else float(usec)
        rate = 1e6 / per_image if per_image > 0 else float("inf")
        return cls(usec_total=total, usec_per_image=per_image, images_per_second=rate, count=count)

    def lines(self) -> list[str]:
        if self.count == 1:
            first = f"Inference took {self.usec_total:.2f} microseconds"
        else:
            first = f"Inference took {self.usec_total:.2f} microseconds, {self.usec_per_image:.2f} usec per image"
        return [first, f"Classification rate: {self.images_per_second:.2f} images per second"]

    def as_json(self) -> dict:
        return {"usec_total": self.usec_total, "usec_per_image": self.usec_per_image,
                "images_per_second": self.images_per_second}
