"""Board-exact pre-processing (spec bnn-pynq-format.md §4.1, §4.2)."""

from __future__ import annotations

import gzip
import hashlib
import math
import shutil
import struct

import numpy as np
import pytest
from PIL import Image

from bnnctl.errors import BnnctlError, DataError
from bnnctl.infer import preprocess as pp


def md5(arr: np.ndarray) -> str:
    return hashlib.md5(np.ascontiguousarray(arr).tobytes()).hexdigest()


def pattern(w: int, h: int, channels: int) -> np.ndarray:
    """Deterministic busy picture (no RNG, so it is the same on every numpy)."""
    y, x, c = np.mgrid[0:h, 0:w, 0:channels]
    return (((x * 37 + y * 91 + c * 53) ^ (x * y)) % 256).astype(np.uint8)


@pytest.fixture
def pictures(reference_dir):
    return reference_dir / "pictures"


# ---------------------------------------------------------------------------- thumbnail rule


@pytest.mark.parametrize("src, size, expected", [
    ((64, 39), (32, 32), (32, 19)),  # spec §4.1.1 example; Pillow >= 7 gives 32x20
    ((39, 64), (32, 32), (19, 32)),
    ((1000, 1127), (32, 32), (28, 32)),  # width first: 1000x1127 -> 32x36 -> 28x32
    ((960, 480), (64, 64), (64, 32)),
    ((960, 591), (64, 64), (64, 39)),
    ((775, 525), (64, 64), (64, 43)),
    ((1000, 1127), (64, 64), (56, 64)),
    ((300, 7), (32, 32), (32, 1)),  # max(..., 1) keeps at least one row
    ((20, 10), (32, 32), (20, 10)),
])
def test_legacy_thumbnail_size(src, size, expected):
    assert pp.legacy_thumbnail_size(src, size) == expected


def test_modern_pillow_thumbnail_differs_from_legacy_rule():
    img = Image.new("RGB", (64, 39))
    img.thumbnail((32, 32))
    assert img.size == (32, 20)  # what the installed Pillow does
    assert pp.legacy_thumbnail(Image.new("RGB", (64, 39)), (32, 32)).size == (32, 19)


@pytest.mark.parametrize("src, size, s", [
    ((1000, 1127), (28, 32), 8), ((960, 591), (64, 39), 8), ((200, 200), (64, 64), 2),
    ((250, 250), (64, 64), 2), ((256, 256), (64, 64), 4), ((100, 60), (64, 39), 1),
    ((960, 480), (32, 16), 8), ((800, 600), (100, 75), 8), ((700, 600), (100, 75), 4),
])
def test_jpeg_draft_scale(src, size, s):
    assert pp.jpeg_draft_scale(src, size) == s


def test_car_thumbnail_64_is_64x32(pictures):
    with Image.open(pictures / "car.png") as img:
        assert pp.legacy_thumbnail(img, (64, 64)).size == (64, 32)


def test_small_image_is_returned_unchanged():
    img = Image.new("RGB", (20, 10))
    assert pp.legacy_thumbnail(img, (32, 32)) is img


def test_undecoded_jpeg_is_drafted(pictures):
    """Modern Pillow's draft must still pick 1/8 here: 1000x1127 decodes at 125x141."""
    img = Image.open(pictures / "deer.jpg")
    thumb = pp.legacy_thumbnail(img, (32, 32))
    assert thumb.size == (28, 32)
    assert img.size == (math.ceil(1000 / 8), math.ceil(1127 / 8))


def test_loaded_jpeg_is_resized_from_full_resolution(pictures):
    img = Image.open(pictures / "deer.jpg")
    img.load()
    pp.legacy_thumbnail(img, (32, 32))
    assert img.size == (1000, 1127)


def test_draft_changes_the_pixels(pictures):
    fresh = pp.image_to_cifar_pixels(pictures / "deer.jpg")  # path: opened fresh, drafted
    with Image.open(pictures / "deer.jpg") as img:
        img.load()
        loaded = pp.image_to_cifar_pixels(img)
    assert fresh.shape == loaded.shape == (32, 32, 3)
    assert not np.array_equal(fresh, loaded)


# md5 of the (32, 32, 3) pixels produced by the board's own code (`img.thumbnail((32, 32),
# ANTIALIAS)`, paste on the white RGBA canvas) run under real Pillow 6.2.2 with libjpeg-turbo.
PILLOW6_PICTURES = {
    ("deer.jpg", "fresh"): "0005a5f28bc1bd78a47c8a534804f398",
    ("deer.jpg", "loaded"): "dfcd00b2dc920f2a9deb59546fc9bf66",
    ("deer.jpg", "t64"): "0315652bb7a07035c93185a963553a31",
    ("car.png", "fresh"): "8521669fd7e8256c1c285d05c33c0899",
    ("car.png", "t64"): "b5c960022c842beae3441499257246b5",
    ("airplane.jpg", "fresh"): "f5aaddc32bb2101b2e737fa4df8b2897",
    ("airplane.jpg", "loaded"): "ddf5b4958b4cd9b60af54e4817283ac6",
    ("airplane.jpg", "t64"): "05275d61f50daa5d28b667d5fd075b1b",
    ("bird.jpg", "fresh"): "e1e62a87ca548d36d2038b520132a646",
    ("bird.jpg", "loaded"): "2e97a37e2ca2dae9e51a28aa1be6e74e",
    ("bird.jpg", "t64"): "4d5090a1541d64856beec439a6c3c663",
}


@pytest.mark.parametrize("picture, flow", sorted(PILLOW6_PICTURES))
def test_pictures_match_pillow6(pictures, picture, flow):
    path = pictures / picture
    if flow == "fresh":
        pixels = pp.image_to_cifar_pixels(path)
    elif flow == "loaded":
        with Image.open(path) as img:
            img.load()
            pixels = pp.image_to_cifar_pixels(img)
    else:  # the notebooks made a 64 px thumbnail first, then classified it
        with Image.open(path) as img:
            pixels = pp.image_to_cifar_pixels(pp.legacy_thumbnail(img, (64, 64)))
    assert md5(pixels) == PILLOW6_PICTURES[(picture, flow)]


# Tall pictures are where recent Pillow's resize (vertical pass first) differs from Pillow 6.
PILLOW6_PATTERNS = {
    (17, 100, "RGB"): "5239fa371188a7e97c37b774c0b791d1",
    (17, 100, "RGBA"): "8fda9cd6daca5413eec1ad8f24bd4709",
    (64, 39, "RGB"): "5767a2d8a26f9e05830c826c6ef3578b",
    (64, 39, "RGBA"): "c002761d246b31cbd794af6b9d4863af",
    (127, 255, "RGB"): "75c919559d1c441fc54ca9f118c9b52c",
    (127, 255, "RGBA"): "8a8ea159c9d5460c99b3b3a02ca518c1",
}


@pytest.mark.parametrize("w, h, mode", sorted(PILLOW6_PATTERNS))
def test_patterns_match_pillow6(w, h, mode):
    img = Image.fromarray(pattern(w, h, len(mode)), mode)
    assert md5(pp.image_to_cifar_pixels(img)) == PILLOW6_PATTERNS[(w, h, mode)]


# ---------------------------------------------------------------------------- canvas and paste


def test_small_image_centred_on_white():
    img = Image.fromarray(np.zeros((10, 20, 3), np.uint8))
    px = pp.image_to_cifar_pixels(img)
    # pasted at (int((32-20)/2), int((32-10)/2)) = (6, 11)
    assert (px[11:21, 6:26] == 0).all()
    mask = np.ones((32, 32), bool)
    mask[11:21, 6:26] = False
    assert (px[mask] == 255).all()


def test_odd_margin_truncates():
    img = Image.fromarray(np.zeros((19, 32, 3), np.uint8))  # 13 rows of margin
    px = pp.image_to_cifar_pixels(img)
    assert (px[:6] == 255).all() and (px[6:25] == 0).all() and (px[25:] == 255).all()


def test_rgba_colour_under_transparency_is_kept():
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[..., :3] = (10, 20, 30)  # alpha 0 everywhere
    px = pp.image_to_cifar_pixels(Image.fromarray(rgba, "RGBA"))
    assert (px == (10, 20, 30)).all()


def test_grey_image_becomes_equal_channels():
    px = pp.image_to_cifar_pixels(Image.fromarray(pattern(32, 32, 1)[..., 0], "L"))
    assert (px[..., 0] == px[..., 1]).all() and (px[..., 1] == px[..., 2]).all()
    assert (px[..., 0] == pattern(32, 32, 1)[..., 0]).all()


def test_mnist_pixels_black_canvas_and_invert():
    white = Image.new("L", (56, 28), 255)  # -> 28x14, 7 black rows above and below
    px = pp.image_to_mnist_pixels(white)
    assert px.shape == (28, 28) and px.dtype == np.uint8
    assert (px[:7] == 0).all() and (px[7:21] == 255).all() and (px[21:] == 0).all()
    inv = pp.image_to_mnist_pixels(Image.new("L", (28, 28), 255), invert=True)
    assert (inv == 0).all()


# ---------------------------------------------------------------------------- CIFAR records


def test_deer_bin_is_one_record(pictures):
    labels, pixels = pp.read_cifar_records(pictures / "deer.bin")
    assert labels.shape == (1,) and pixels.shape == (1, 32, 32, 3)
    assert labels.dtype == pixels.dtype == np.uint8


def test_cifar_record_layout():
    pixels = np.zeros((1, 32, 32, 3), np.uint8)
    pixels[0, 0, 1, 0] = 7  # R of row 0, column 1
    pixels[0, 1, 0, 2] = 9  # B of row 1, column 0
    data = pp.cifar_records_bytes(pixels)
    assert len(data) == 3073
    assert data[0] == 1  # the board writes label 1
    assert data[1 + 1] == 7
    assert data[1 + 2048 + 32] == 9


def test_cifar_round_trip_and_trailing_partial_record(tmp_path):
    pixels = np.stack([pattern(32, 32, 3), 255 - pattern(32, 32, 3)])
    path = tmp_path / "two.bin"
    pp.write_cifar_records(path, pixels, labels=[3, 250])
    path.write_bytes(path.read_bytes() + b"\x00" * 100)  # partial record: ignored like the board
    labels, back = pp.read_cifar_records(path)
    assert labels.tolist() == [3, 250]
    assert np.array_equal(back, pixels)


def test_cifar_file_shorter_than_a_record(tmp_path):
    path = tmp_path / "short.bin"
    path.write_bytes(b"\x01" * 3072)
    with pytest.raises(DataError, match="short.bin"):
        pp.read_cifar_records(path)


def test_cifar_bytes_reject_bad_shapes():
    with pytest.raises(DataError):
        pp.cifar_records_bytes(np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(DataError):
        pp.cifar_records_bytes(np.zeros((2, 32, 32, 3), np.uint8), labels=[1])


# ---------------------------------------------------------------------------- MNIST idx


def test_reference_idx3_is_one_image(pictures):
    images = pp.read_idx3(pictures / "3.image-idx3-ubyte")
    assert images.shape == (1, 28, 28) and images.dtype == np.uint8
    ink = pp.binarize_lfc(images)[0]
    assert 0 < ink.sum() < 784  # a digit, not a blank or saturated page


def test_idx3_round_trip_plain_and_gz(tmp_path):
    images = pattern(28, 28 * 3, 1)[..., 0].reshape(3, 28, 28)
    data = pp.idx3_bytes(images)
    assert data[:16] == bytes.fromhex("00000803 00000003 0000001c 0000001c")
    pp.write_idx3(tmp_path / "a-idx3-ubyte", images)
    (tmp_path / "a-idx3-ubyte.gz").write_bytes(gzip.compress(data))
    assert np.array_equal(pp.read_idx3(tmp_path / "a-idx3-ubyte"), images)
    assert np.array_equal(pp.read_idx3(tmp_path / "a-idx3-ubyte.gz"), images)


def test_idx1_round_trip(tmp_path):
    pp.write_idx1(tmp_path / "l", [3, 1, 4])
    assert pp.read_idx1(tmp_path / "l").tolist() == [3, 1, 4]


@pytest.mark.parametrize("content, message", [
    (struct.pack(">4I", 0x801, 1, 28, 28) + bytes(784), "magic"),
    (struct.pack(">4I", 0x803, 2, 28, 28) + bytes(784), "truncated"),
    (struct.pack(">4I", 0x803, 1, 32, 32) + bytes(1024), "28x28"),
    (b"\x00\x00\x08", "too short"),
])
def test_idx3_errors_name_the_file(tmp_path, content, message):
    path = tmp_path / "bad-idx3-ubyte"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message) as info:
        pp.read_idx3(path)
    assert "bad-idx3-ubyte" in str(info.value)


def test_corrupt_gzip(tmp_path):
    path = tmp_path / "x.gz"
    path.write_bytes(b"\x1f\x8b" + b"garbage" * 10)
    with pytest.raises(DataError, match="x.gz"):
        pp.read_idx3(path)


# ---------------------------------------------------------------------------- encodings


def test_quantize_cnv_closed_form_equals_formula():
    p = np.arange(256, dtype=np.uint8)
    formula = [min(max(math.floor(128.0 * (-1.0 + 2.0 * v / 255.0) + 0.5), -128), 127) for v in range(256)]
    q = pp.quantize_cnv(p)
    assert q.dtype == np.int8
    assert q.tolist() == formula
    assert 0 not in q.tolist()  # spec §4.1.3: q = 0 never occurs


def test_quantize_cnv_keeps_shape():
    px = np.stack([pattern(32, 32, 3)] * 2)
    assert pp.quantize_cnv(px).shape == (2, 32, 32, 3)


def test_binarize_lfc():
    px = np.zeros((2, 28, 28), np.uint8)
    px[0, 0, 0], px[0, 0, 1], px[1, 27, 27] = 128, 127, 255
    bits = pp.binarize_lfc(px)
    assert bits.shape == (2, 832) and bits.dtype == np.uint8
    assert bits[0, 0] == 1 and bits[0, 1] == 0 and bits[1, 783] == 1
    assert bits.sum() == 2 and not bits[:, 784:].any()
    p = np.arange(256, dtype=np.uint8)
    lfc = pp.binarize_lfc(np.resize(p, (1, 28, 28)))[0, :256]
    assert lfc.tolist() == [int(-1 + 2 * v / 255 >= 0) for v in range(256)]


# ---------------------------------------------------------------------------- infer inputs


def test_inputs_cifar_record_and_pictures(pictures):
    items = pp.load_input_files([pictures / "deer.bin", pictures / "car.png"], "cnv")
    assert [i.name for i in items] == [str(pictures / "deer.bin"), str(pictures / "car.png")]
    assert all(i.pixels.shape == (32, 32, 3) and i.pixels.dtype == np.uint8 for i in items)
    assert pp.stack_pixels(items).shape == (2, 32, 32, 3)


def test_inputs_multi_record_names(tmp_path):
    pp.write_cifar_records(tmp_path / "two.bin", np.zeros((2, 32, 32, 3), np.uint8))
    items = pp.load_input_files([tmp_path / "two.bin"], "cnv")
    assert [i.name for i in items] == [f"{tmp_path / 'two.bin'}#0", f"{tmp_path / 'two.bin'}#1"]


def test_inputs_idx3_for_lfc(pictures, tmp_path):
    items = pp.load_input_files([pictures / "3.image-idx3-ubyte"], "lfc")
    assert len(items) == 1 and items[0].pixels.shape == (28, 28)
    pp.write_idx3(tmp_path / "three", np.zeros((3, 28, 28), np.uint8))  # no extension: magic
    names = [i.name for i in pp.load_input_files([tmp_path / "three"], "lfc")]
    assert names == [f"{tmp_path / 'three'}#{i}" for i in range(3)]


def test_inputs_picture_for_lfc(pictures):
    (item,) = pp.load_input_files([pictures / "bird.jpg"], "lfc")
    assert item.pixels.shape == (28, 28)


def test_inputs_folder_recursive_sorted_skips_others(pictures, tmp_path):
    (tmp_path / "b").mkdir()
    shutil.copy(pictures / "deer.bin", tmp_path / "b" / "deer.bin")
    shutil.copy(pictures / "car.png", tmp_path / "a.png")
    (tmp_path / "README.txt").write_text("not a picture")
    (tmp_path / "labels-idx1-ubyte").write_bytes(pp.idx1_bytes([1]))  # label files are skipped
    items = pp.load_input_files([tmp_path], "cnv")
    assert [i.name for i in items] == [str(tmp_path / "a.png"), str(tmp_path / "b" / "deer.bin")]


@pytest.mark.parametrize("case, topology, message", [
    ("missing", "cnv", "no such file"),
    ("idx3", "cnv", "idx3"),
    ("bin", "lfc", "CIFAR-10"),
    ("garbage.jpg", "cnv", "cannot"),
    ("truncated.png", "cnv", "cannot decode"),
    ("empty_dir", "cnv", "holds no"),
    ("idx1", "lfc", "label file"),
])
def test_inputs_errors(pictures, tmp_path, case, topology, message):
    path = tmp_path / case
    if case == "idx3":
        shutil.copy(pictures / "3.image-idx3-ubyte", path)
    elif case == "bin":
        path = tmp_path / "deer.bin"
        shutil.copy(pictures / "deer.bin", path)
    elif case == "garbage.jpg":
        path.write_bytes(b"this is not a jpeg")
    elif case == "truncated.png":
        path.write_bytes((pictures / "car.png").read_bytes()[:5000])
    elif case == "empty_dir":
        path.mkdir()
        (path / "notes.txt").write_text("x")
    elif case == "idx1":
        pp.write_idx1(path, [1, 2])
    with pytest.raises(DataError, match=message) as info:
        pp.load_input_files([path], topology)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_inputs_broken_picture_in_folder_is_reported(pictures, tmp_path):
    (tmp_path / "x.png").write_bytes((pictures / "car.png").read_bytes()[:5000])
    with pytest.raises(DataError, match="x.png"):
        pp.load_input_files([tmp_path], "cnv")


def test_inputs_unknown_topology(pictures):
    with pytest.raises(BnnctlError, match="topology"):
        pp.load_input_files([pictures / "deer.bin"], "resnet")


def test_bin_starting_with_idx_magic_is_still_a_cifar_record(tmp_path):
    pixels = np.zeros((1, 32, 32, 3), np.uint8)
    pixels[0, 0, :3, 0] = (0, 8, 3)  # label 0 + R = 0, 8, 3: the bytes of the idx3 magic
    pp.write_cifar_records(tmp_path / "x.bin", pixels, labels=[0])
    (item,) = pp.load_input_files([tmp_path / "x.bin"], "cnv")
    assert np.array_equal(item.pixels, pixels[0])
