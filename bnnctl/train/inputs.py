"""Pixels -> exactly the values the accelerator's first layer sees, and photo augmentation.

The input codes come from `bnnctl.infer.preprocess` (the board-exact pre-processing that
`infer` uses), so training and inference can never drift apart:
* CNV: 8-bit code q of spec §4.1 (value q/128). The code depends only on the byte value, so we
  tabulate it once for all 256 values and apply the table on the device; augmentation works on
  the uint8 pixels *before* that, like a real image reaching the board would.
* LFC: the 784 input bits of spec §4.2 (pixel >= 128), as +-1 values (spec §2.3).
"""

from __future__ import annotations

import numpy as np
import torch

# Random-crop padding of the CNV recipe. The board's image pre-processing letterboxes every
# non-square picture onto a *white* canvas (spec §4.1), so white borders are what the hardware
# actually sees around real inputs; padding the crops with white teaches exactly that.
CROP_PAD = 4
PAD_VALUE = 255

# Digits are only shifted (a mirrored digit is another digit, or none): by up to this many
# pixels each way, the uncovered border filled with background (input bit 0, value -1).
DIGIT_SHIFT = 2


def cnv_code_table() -> torch.Tensor:
    """float32 (256,): input value q/128 for every byte value, via the board-exact quantiser."""
    from bnnctl.infer.preprocess import quantize_cnv

    values = np.resize(np.arange(256, dtype=np.uint8), 32 * 32 * 3).reshape(1, 32, 32, 3)
    codes = np.asarray(quantize_cnv(values), dtype=np.int64).reshape(-1)
    table = np.zeros(256, np.float32)
    table[values.reshape(-1)] = codes / 128.0
    return torch.from_numpy(table)


def lfc_values(pixels: np.ndarray) -> torch.Tensor:
    """uint8 (N, 28, 28) -> float32 (N, 784) +-1, the first 784 of the hardware's input bits."""
    from bnnctl.infer.preprocess import binarize_lfc

    bits = np.asarray(binarize_lfc(pixels))[:, :784].astype(np.float32)
    return torch.from_numpy(bits * 2.0 - 1.0)


def cnv_values(pixels: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 32, 32, 3) RGB -> float (N, 3, 32, 32) values q/128, channels R, G, B."""
    return table[pixels.long()].permute(0, 3, 1, 2).contiguous()


def _random_windows(n: int, height: int, width: int, pad: int, generator: torch.Generator,
                    device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Row (n, height) and column (n, width) indices of one random window per image in a copy
    padded by `pad` on every side; draws the row offsets, then the column offsets."""
    oy = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(device)
    ox = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(device)
    return oy[:, None] + torch.arange(height, device=device), ox[:, None] + torch.arange(width, device=device)


def _take(padded: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """(n, H, W, ...) -> (n, h, w, ...): image i at rows[i] x cols[i]."""
    index = torch.arange(padded.shape[0], device=padded.device)[:, None, None]
    return padded[index, rows[:, :, None], cols[:, None, :]]


def augment(pixels: torch.Tensor, generator: torch.Generator, vflip: bool = False,
            rotate: float = 0.0, jitter: float = 0.0) -> torch.Tensor:
    """Random 32x32 crop of the white-padded image, random horizontal flip and, with `vflip`,
    random vertical flip (uint8 NHWC). Vertical flips keep the class only where up and down do
    not matter (objects photographed from above, like CUCUMBER-9), so they are opt-in.
    `rotate` (degrees) turns each crop by a uniform angle in [-rotate, rotate] about its centre
    (uncovered corners white, as the crop padding); `jitter` scales each image's brightness by a
    factor in [1 - jitter, 1 + jitter] and each of its colour channels by one in
    [1 - jitter/2, 1 + jitter/2] (lighting and white balance).

    All random draws come from `generator` (on the CPU, so a run is reproducible on any device);
    the optional draws come last, each only when its option is on, so runs without them repeat
    earlier runs exactly.
    """
    n, h, w, _ = pixels.shape
    rows, cols = _random_windows(n, h, w, CROP_PAD, generator, pixels.device)
    flip = (torch.rand(n, generator=generator) < 0.5).to(pixels.device)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    if vflip:
        up = (torch.rand(n, generator=generator) < 0.5).to(pixels.device)
        rows = torch.where(up[:, None], rows.flip(1), rows)
    if rotate > 0:
        angles = (torch.rand(n, generator=generator) * 2 - 1).to(pixels.device) * rotate
    if jitter > 0:
        # Applied before padding, so the white borders the crops and turns add stay white.
        brightness = 1 + jitter * (torch.rand(n, 1, generator=generator) * 2 - 1)
        balance = 1 + jitter / 2 * (torch.rand(n, 3, generator=generator) * 2 - 1)
        gain = (brightness * balance).to(pixels.device)[:, None, None, :]
        pixels = (pixels.float() * gain).round().clamp(0, 255).to(torch.uint8)
    padded = torch.nn.functional.pad(pixels.permute(0, 3, 1, 2), (CROP_PAD,) * 4, value=PAD_VALUE)
    out = _take(padded.permute(0, 2, 3, 1), rows, cols)
    return rotate_on_white(out, angles) if rotate > 0 else out


def rotate_on_white(pixels: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> the same turned by `degrees` (N,) about the centre, bilinear,
    with white where no source pixel falls."""
    theta = torch.deg2rad(degrees.float())
    cos, sin = torch.cos(theta), torch.sin(theta)
    zero = torch.zeros_like(cos)
    matrix = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    # grid_sample fills with 0 outside the image: sample the inverted picture so that 0 is white.
    inverted = 255.0 - pixels.permute(0, 3, 1, 2).float()
    grid = torch.nn.functional.affine_grid(matrix, list(inverted.shape), align_corners=False)
    turned = torch.nn.functional.grid_sample(inverted, grid, mode="bilinear", padding_mode="zeros",
                                             align_corners=False)
    return (255.0 - turned).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def shift_digits(values: torch.Tensor, generator: torch.Generator, shift: int = DIGIT_SHIFT) -> torch.Tensor:
    """Random translation of LFC inputs, float (N, 784) +-1 -> (N, 784): each image moves by
    -shift..shift pixels in each direction, as a 28x28 crop of the background-padded picture."""
    n, side = values.shape[0], 28
    padded = torch.nn.functional.pad(values.reshape(n, side, side), (shift,) * 4, value=-1.0)
    rows, cols = _random_windows(n, side, side, shift, generator, values.device)
    return _take(padded, rows, cols).reshape(n, side * side)
