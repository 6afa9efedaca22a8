"""Every result recorded on real boards (shared/reference/bnn-pynq/expected.json), through the CLI."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from bnnctl.infer.preprocess import legacy_thumbnail
from tests.clirun import bnnctl


@pytest.fixture(scope="module")
def expected(reference_dir):
    return json.loads((reference_dir / "expected.json").read_text())


def cnv_cases():
    # ids only; the data is read inside the test so a missing shared/ skips instead of erroring
    return range(7)


@pytest.mark.parametrize("index", cnv_cases())
def test_cnv_scores_and_class(index, expected, reference_dir, tmp_path):
    case = expected["cnv"][index]
    picture = reference_dir / case["picture"]
    if "64px thumbnail" in case["input"]:
        # The notebook displayed a 64 px thumbnail, then classified that (already decoded) image:
        # recreate it losslessly so the CLI sees the same pixels.
        img = legacy_thumbnail(Image.open(picture), (64, 64))
        picture = tmp_path / (picture.stem + "-64.png")
        img.save(picture)
    run = bnnctl("infer", picture, "--params", reference_dir / "params" / case["params"], "--details", "--json",
                 cwd=tmp_path)
    assert run.code == 0, run.err
    result = run.json()["results"][0]
    assert result["scores"] == case["scores"]
    assert result["class"] == case["class"]


def test_lfc_output_word(expected, reference_dir, tmp_path):
    case = expected["lfc"][0]
    run = bnnctl("infer", reference_dir / case["picture"], "--params", reference_dir / "params" / case["params"],
                 "--json", cwd=tmp_path)
    assert run.code == 0, run.err
    result = run.json()["results"][0]
    assert result["class"] == case["class"]
    assert hex(result["scores"][0]) == case["output_word"]


def test_mnist_t10k_accuracy(expected, reference_dir, data_dir, tmp_path):
    case = expected["lfc"][1]
    run = bnnctl("eval", "--params", reference_dir / "params" / case["params"], "--dataset", "mnist",
                 "--data-dir", data_dir, "--json", cwd=tmp_path)
    assert run.code == 0, run.err
    report = run.json()
    assert report["count"] == 10000
    assert report["errors"] == case["errors"]
    assert report["accuracy_percent"] == pytest.approx(case["accuracy_percent"], abs=1e-9)
    assert report["rule"] == "multiple"


def test_eval_text_report(reference_dir, data_dir, tmp_path):
    run = bnnctl("eval", "--params", reference_dir / "params/mnist/lfcW1A1", "--dataset", "mnist",
                 "--data-dir", data_dir, "--limit", "500", cwd=tmp_path)
    assert run.code == 0, run.err
    assert "Accuracy:" in run.out and "Confusion matrix" in run.out
    assert "usec per image" in run.out and "images per second" in run.out
