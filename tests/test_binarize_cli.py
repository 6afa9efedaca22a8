"""`bnnctl binarize` end to end, its validation of bad archives, and workspace chaining."""

from __future__ import annotations

import numpy as np
import pytest

from bnnctl.convert.folder import read_params_folder
from bnnctl.convert.quantize import binarize_archive
from bnnctl.topology import get_network
from tests.clirun import assert_user_error, bnnctl
from tests.floatref import random_archive


def save(path, arrays):
    np.savez(path, *arrays)
    return path


@pytest.fixture
def lfc_archive(tmp_path):
    return save(tmp_path / "digits-lfcW1A1.npz", random_archive("lfcW1A1", 10, np.random.default_rng(1)))


@pytest.mark.parametrize("network", ["cnvW1A1", "cnvW1A2", "cnvW2A2", "lfcW1A1", "lfcW1A2"])
def test_binarize_writes_a_complete_folder(tmp_path, network):
    archive = save(tmp_path / "m.npz", random_archive(network, 9, np.random.default_rng(2)))
    run = bnnctl("binarize", archive, "--network", network, "--classes", "a,b,c,d,e,f,g,h,i", "-o", "out",
                 "--json", cwd=tmp_path)
    assert run.code == 0, run.err
    spec = get_network(network)
    files = {p.name: p.stat().st_size for p in (tmp_path / "out").iterdir()}
    for name, size in spec.expected_files().items():
        assert files.pop(name) == size, name
    assert set(files) == {"classes.txt", "config.h"}
    assert (tmp_path / "out/classes.txt").read_bytes() == b"a\nb\nc\nd\ne\nf\ng\nh\ni"
    assert f"#define L0_PE {spec.layers[0].pe}" in (tmp_path / "out/config.h").read_text()
    # what was written reads back as the model the converter built
    written = read_params_folder(tmp_path / "out", network)
    built = binarize_archive(archive, spec, list("abcdefghi"))
    for a, b in zip(written.layers, built.layers):
        assert np.array_equal(a.weights, b.weights)
        assert (a.thresholds is None and b.thresholds is None) or np.array_equal(a.thresholds, b.thresholds)
    assert run.json()["classes"] == list("abcdefghi")


def test_chaining_binarize_then_bare_infer(tmp_path, lfc_archive):
    (tmp_path / "classes.txt").write_text("\n".join(str(i) for i in range(10)) + "\n")
    run = bnnctl("binarize", lfc_archive, cwd=tmp_path)  # network from the file name, classes beside it
    assert run.code == 0, run.err
    assert (tmp_path / "params/digits/lfcW1A1/0-0-weights.bin").exists()
    status = bnnctl("status", "--json", cwd=tmp_path).json()
    assert status["network"] == "lfcW1A1" and status["params_name"] == "digits"
    assert status["classes"] == [str(i) for i in range(10)]
    idx = tmp_path / "one.idx3"
    idx.write_bytes(bytes.fromhex("00000803000000010000001c0000001c") + bytes(range(0, 256, 1))[:784 - 528] + bytes(528))
    run = bnnctl("infer", idx, "--json", cwd=tmp_path)  # params from the state
    assert run.code == 0, run.err
    assert run.json()["params"].endswith("params/digits/lfcW1A1")


def test_refuses_non_empty_output_without_force(tmp_path, lfc_archive):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("keep")
    run = bnnctl("binarize", lfc_archive, "-o", out, cwd=tmp_path)
    assert_user_error(run, "not empty", "--force")
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    assert bnnctl("binarize", lfc_archive, "-o", out, "--force", cwd=tmp_path).code == 0
    assert not (out / "notes.txt").exists()


def bad_archive_cases():
    rng = np.random.default_rng(3)
    good = random_archive("cnvW1A1", 10, rng)
    cases = {}
    cases["count"] = (good[:-1], ["has 52 arrays", "53"])
    shape = list(good)
    shape[12] = np.zeros((64, 64, 3, 3), np.float32)
    cases["shape"] = (shape, ["arr_12", "(128, 64, 3, 3)"])
    nan = list(good)
    nan[7] = nan[7].copy()
    nan[7][3] = np.nan
    cases["nan"] = (nan, ["arr_7", "NaN"])
    gamma = list(good)
    gamma[9] = gamma[9].copy()
    gamma[9][0] = 0
    cases["gamma0"] = (gamma, ["arr_9", "gamma"])
    many = random_archive("cnvW1A1", 65, rng)
    cases["classes65"] = (many, ["65 outputs", "1..64"])
    return cases


@pytest.mark.parametrize("case", sorted(bad_archive_cases()))
def test_bad_archives_are_named_and_nothing_is_written(tmp_path, case):
    arrays, fragments = bad_archive_cases()[case]
    archive = save(tmp_path / "bad.npz", arrays)
    run = bnnctl("binarize", archive, "--network", "cnvW1A1", "-o", "out", cwd=tmp_path)
    assert_user_error(run, "bad.npz", *fragments)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.npz"]  # no output, no temp, no state


def test_other_bad_inputs(tmp_path, lfc_archive):
    cases = [
        (["binarize", tmp_path / "nope.npz", "--network", "lfcW1A1"], ["nope.npz", "no such archive"]),
        (["binarize", lfc_archive, "--network", "lfcW1A1", "--classes", "a,b,c"], ["10 outputs", "3 class names"]),
        (["binarize", lfc_archive, "--network", "cnvW1A1"], ["24 arrays", "53"]),
        (["binarize", lfc_archive, "--network", "lfcW1A1", "--classes", "a,,c"], ["--classes", "empty"]),
        (["binarize", lfc_archive, "--network", "bogus"], ["--network", "bogus"]),
    ]
    notzip = tmp_path / "notzip.npz"
    notzip.write_text("hello")
    cases.append((["binarize", notzip, "--network", "lfcW1A1"], ["notzip.npz", "not a readable .npz"]))
    for args, fragments in cases:
        run = bnnctl(*args, cwd=tmp_path)
        assert_user_error(run, *fragments)
    assert not (tmp_path / "params").exists()


def test_bare_binarize_without_state_explains(tmp_path):
    assert_user_error(bnnctl("binarize", cwd=tmp_path), "no MODEL archive given")
