"""The parameter folder reader/writer against the official BNN-PYNQ folders."""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pytest

from bnnctl.convert.folder import LegacyFolderWarning, read_params_folder, write_params_folder
from bnnctl.errors import BnnctlError
from bnnctl.topology import get_network

REFERENCE_FOLDERS = [("cifar10/cnvW1A1", "cnvW1A1"), ("cifar10/cnvW1A2", "cnvW1A2"), ("mnist/lfcW1A1", "lfcW1A1")]


@pytest.mark.parametrize("folder,network", REFERENCE_FOLDERS)
def test_round_trip_is_byte_identical(reference_dir, tmp_path, folder, network):
    source = reference_dir / "params" / folder
    model = read_params_folder(source)  # network detected from the files
    assert model.name == network
    out = write_params_folder(model, tmp_path / "out")
    written = {p.name for p in out.iterdir()}
    original = {p.name for p in source.iterdir()}
    assert written == original | {"config.h"}
    for name in sorted(original):
        assert (out / name).read_bytes() == (source / name).read_bytes(), name


def test_structural_facts_of_official_folders(reference_dir):
    """Spec §7.1: padded output rows are +1, LFC padded output thresholds 32767, L0 padded columns +1."""
    cnv = read_params_folder(reference_dir / "params/cifar10/cnvW1A1")
    assert (cnv.layers[8].weights[10:] == 1).all()
    assert cnv.layers[0].thresholds.min() == -1060 and cnv.layers[0].thresholds.max() == 567
    lfc = read_params_folder(reference_dir / "params/mnist/lfcW1A1")
    assert (lfc.layers[3].thresholds[10:] == 32767).all()
    assert (lfc.layers[0].weights[:, 784:] == 1).all()
    a2 = read_params_folder(reference_dir / "params/cifar10/cnvW1A2")
    for layer in a2.layers[:8]:
        assert (layer.thresholds[:, 0] <= layer.thresholds[:, 1]).all()


def copy_folder(reference_dir, tmp_path, folder="mnist/lfcW1A1"):
    target = tmp_path / "copy"
    shutil.copytree(reference_dir / "params" / folder, target)
    for p in target.iterdir():
        p.chmod(0o644)
    return target


def test_missing_file_is_named(reference_dir, tmp_path):
    folder = copy_folder(reference_dir, tmp_path)
    (folder / "2-5-weights.bin").unlink()
    with pytest.raises(BnnctlError, match="2-5-weights.bin is missing"):
        read_params_folder(folder, "lfcW1A1")


def test_short_hidden_layer_file_is_an_error(reference_dir, tmp_path):
    folder = copy_folder(reference_dir, tmp_path)
    data = (folder / "1-0-weights.bin").read_bytes()
    (folder / "1-0-weights.bin").write_bytes(data[:-8])
    with pytest.raises(BnnctlError, match=r"1-0-weights.bin is 4088 bytes, a lfcW1A1 folder needs 4096"):
        read_params_folder(folder, "lfcW1A1")
    with pytest.raises(BnnctlError, match="not a parameter folder"):
        read_params_folder(folder)


def test_legacy_short_output_layer_loads_zero_filled(reference_dir, tmp_path):
    """Spec §3.9: the chars_merged layout stores layer 3 for 48 rows; the board zero-fills."""
    folder = copy_folder(reference_dir, tmp_path)
    for p in range(16):
        w = folder / f"3-{p}-weights.bin"
        w.write_bytes(w.read_bytes()[: 3 * 128 * 8])  # 3 neuron folds of 16 synapse folds
        t = folder / f"3-{p}-thres.bin"
        t.write_bytes(t.read_bytes()[: 3 * 8])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = read_params_folder(folder, "lfcW1A1")
    assert any(issubclass(w.category, LegacyFolderWarning) for w in caught)
    out = model.layers[3]
    assert (out.weights[48:] == -1).all()  # zero bits read as -1
    assert (out.thresholds[48:] == 0).all()
    assert (out.weights[:10] == read_params_folder(reference_dir / "params/mnist/lfcW1A1").layers[3].weights[:10]).all()


def test_folder_of_other_network_is_named(reference_dir):
    with pytest.raises(BnnctlError, match="looks like a cnvW1A1 folder"):
        read_params_folder(reference_dir / "params/cifar10/cnvW1A1", "cnvW1A2")


def test_hardware_thresholds_wrap_to_16_bits():
    from bnnctl.model import BinarizedLayer
    layer = BinarizedLayer(spec=get_network("lfcW1A1").layers[3], weights=np.ones((64, 1024), np.int8),
                           thresholds=np.array([[65535], [32767], [-5]] + [[0]] * 61, dtype=np.int64))
    assert layer.hardware_thresholds()[:3, 0].tolist() == [-1, 32767, -5]


def test_writer_refuses_non_empty_folder(reference_dir, tmp_path):
    model = read_params_folder(reference_dir / "params/mnist/lfcW1A1")
    target = tmp_path / "out"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(BnnctlError, match="not empty"):
        write_params_folder(model, target)
    assert [p.name for p in target.iterdir()] == ["keep.txt"]
    write_params_folder(model, target, force=True)
    assert not (target / "keep.txt").exists() and (target / "0-0-weights.bin").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temp folders left behind
