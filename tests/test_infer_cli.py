"""`bnnctl infer` / `bnnctl eval` inputs, outputs and user errors."""

from __future__ import annotations

import numpy as np
from PIL import Image

from bnnctl.infer.preprocess import write_cifar_records, write_idx3
from tests.clirun import assert_user_error, bnnctl


def test_text_output_and_multi_record_names(reference_dir, tmp_path):
    deer = (reference_dir / "pictures/deer.bin").read_bytes()
    (tmp_path / "two.bin").write_bytes(deer + deer)
    run = bnnctl("infer", tmp_path / "two.bin", "--params", reference_dir / "params/cifar10/cnvW1A1", "--details",
                 cwd=tmp_path)
    assert run.code == 0, run.err
    lines = run.out.splitlines()
    assert lines[0] == f"{tmp_path / 'two.bin'}#0: 4 Deer"
    assert lines[1] == "  scores: [228, 229, 251, 250, 412, 253, 230, 262, 222, 239]"
    assert lines[2].startswith(f"{tmp_path / 'two.bin'}#1: 4 Deer")
    assert lines[-2].startswith("Inference took ") and lines[-2].endswith(" usec per image")
    assert lines[-1].startswith("Classification rate: ") and lines[-1].endswith(" images per second")


def test_folder_input_is_recursive_and_sorted(reference_dir, tmp_path):
    pics = tmp_path / "pics"
    (pics / "b").mkdir(parents=True)
    Image.new("RGB", (40, 30), (200, 10, 10)).save(pics / "b" / "red.png")
    Image.new("RGB", (30, 40), (10, 10, 200)).save(pics / "a.png")
    (pics / "notes.txt").write_text("not a picture")
    run = bnnctl("infer", pics, "--params", reference_dir / "params/cifar10/cnvW1A1", "--json", cwd=tmp_path)
    assert run.code == 0, run.err
    data = run.json()
    assert [r["input"] for r in data["results"]] == [str(pics / "a.png"), str(pics / "b" / "red.png")]
    assert data["rule"] == "multiple" and data["backend"] == "sw" and data["network"] == "cnvW1A1"
    assert set(data["timing"]) >= {"usec_total", "usec_per_image", "images_per_second"}


def test_single_and_multiple_rules_differ_where_the_board_does(reference_dir, tmp_path):
    """An LFC word with two bits set: single rule rounds log2, multiple takes the highest bit."""
    images = np.zeros((1, 28, 28), np.uint8)
    write_idx3(tmp_path / "blank.idx3", images)
    for rule in ("single", "multiple"):
        run = bnnctl("infer", tmp_path / "blank.idx3", "--params", reference_dir / "params/mnist/lfcW1A1",
                     "--rule", rule, "--json", cwd=tmp_path)
        assert run.code == 0, run.err
        result = run.json()["results"][0]
        word = result["scores"][0] & 0x3FF
        expected = 0 if word == 0 else (round(np.log2(word)) if rule == "single" else word.bit_length() - 1)
        assert result["class"] == expected


def test_user_errors(reference_dir, tmp_path):
    cnv = reference_dir / "params/cifar10/cnvW1A1"
    lfc = reference_dir / "params/mnist/lfcW1A1"
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    write_idx3(tmp_path / "digit.idx3", np.zeros((1, 28, 28), np.uint8))
    write_cifar_records(tmp_path / "rec.bin", np.zeros((1, 32, 32, 3), np.uint8))
    cases = [
        (["infer", tmp_path / "missing.png", "--params", cnv], ["missing.png"]),
        (["infer", tmp_path / "broken.png", "--params", cnv], ["broken.png"]),
        (["infer", tmp_path / "digit.idx3", "--params", cnv], ["digit.idx3", "idx3"]),
        (["infer", tmp_path / "rec.bin", "--params", lfc], ["rec.bin"]),
        (["infer", tmp_path / "rec.bin", "--params", tmp_path / "nope"], ["nope", "no such parameter folder"]),
        (["infer", tmp_path / "rec.bin", "--params", cnv, "--network", "cnvW1A2"], ["looks like a cnvW1A1"]),
        (["infer", tmp_path / "rec.bin", "--params", tmp_path], ["not a parameter folder"]),
        (["infer", tmp_path / "rec.bin"], ["--params"]),
        (["infer", tmp_path / "rec.bin", "--params", cnv, "--backend", "hw"], ["--board"]),
        (["eval", "--params", cnv], ["--dataset"]),
    ]
    for args, fragments in cases:
        assert_user_error(bnnctl(*args, cwd=tmp_path), *fragments)


def test_eval_folder_of_class_subfolders(reference_dir, tmp_path):
    folder = tmp_path / "set"
    for i, name in enumerate(["Airplane", "Automobile", "Bird", "Cat", "Deer", "Dog", "Frog", "Horse", "Ship",
                              "Truck"]):
        (folder / f"{i:02d}-{name}").mkdir(parents=True)
        if name != "Deer":
            Image.new("RGB", (32, 32), (25 * i, 100, 200 - 20 * i)).save(folder / f"{i:02d}-{name}" / "plain.png")
    Image.open(reference_dir / "pictures/deer.jpg").save(folder / "04-Deer" / "deer.jpg")
    run = bnnctl("eval", folder, "--params", reference_dir / "params/cifar10/cnvW1A1", "--json", cwd=tmp_path)
    assert run.code == 0, run.err
    report = run.json()
    assert report["count"] == 10
    confusion = np.array(report["confusion"])
    assert (confusion.sum(axis=1) == 1).all()
    assert confusion[4, 4] == 1  # the deer is recognised (as on the board)
    assert report["per_class_accuracy_percent"][4] == 100.0
    import shutil
    shutil.rmtree(folder / "09-Truck")
    wrong = bnnctl("eval", folder, "--params", reference_dir / "params/cifar10/cnvW1A1", cwd=tmp_path)
    assert_user_error(wrong, "9 classes", "10")
