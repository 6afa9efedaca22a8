"""`bnnctl train --init-from FOLDER`: a parameter folder turned back into float parameters
(convert/unfold.py) and loaded as the starting point of a training run (train/warmstart.py).

The checks hold the unfolded network against the two independent ends it must agree with:
the converter (unfold then convert gives the folder's bytes back) and the bit-exact integer
engine (the loaded float model computes the folder's accumulators and output bits).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from clirun import assert_user_error
from test_train import (
    NETWORKS,
    assert_nothing_written,
    fitted_model,
    make_image_folder,
    stored_inputs,
    train,
)

torch = pytest.importorskip("torch", reason="training tests need PyTorch (pip install 'bnnctl[train]')")

from bnnctl.convert.folder import folder_files, read_params_folder, write_params_folder  # noqa: E402
from bnnctl.convert.quantize import binarize_archive, build_network  # noqa: E402
from bnnctl.convert.unfold import unfold_network  # noqa: E402
from bnnctl.errors import BnnctlError  # noqa: E402
from bnnctl.infer.classify import encode_inputs  # noqa: E402
from bnnctl.infer.engines import get_engine  # noqa: E402
from bnnctl.topology import get_network  # noqa: E402
from bnnctl.train.export import save_archive  # noqa: E402
from bnnctl.train.models import BnnModel  # noqa: E402
from bnnctl.train.warmstart import warm_start  # noqa: E402

OFFICIAL = ["cifar10/cnvW1A1", "cifar10/cnvW1A2", "mnist/lfcW1A1"]


def synthetic_folder(tmp_path: Path, name: str, classes: list[str], seed: int = 3) -> Path:
    """A parameter folder converted from a trained-looking model (negative gammas included)."""
    model, _ = fitted_model(name, len(classes), seed=seed)
    npz = tmp_path / f"{name}-{seed}.npz"
    save_archive(model, npz)
    return write_params_folder(binarize_archive(npz, get_network(name), classes), tmp_path / f"{name}-{seed}")


def random_pixels(spec, count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if spec.is_cnv:
        return rng.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)
    return np.where(rng.random((count, 28, 28)) < 0.15, 255, 0).astype(np.uint8)  # digit-like ink


def assert_same_files(network, folder: Path) -> None:
    files = folder_files(network)
    different = [n for n, data in files.items() if data != (folder / n).read_bytes()]
    assert not different, f"{len(different)} of {len(files)} files differ, e.g. {different[:3]}"


@pytest.mark.parametrize("where", OFFICIAL)
def test_official_folders_unfold_and_convert_back_byte_for_byte(reference_dir, where):
    folder = reference_dir / "params" / where
    network = read_params_folder(folder)
    back = build_network(network.spec, unfold_network(network), network.classes)
    back.classes_newline = network.classes_newline
    assert_same_files(back, folder)


@pytest.mark.parametrize("name", NETWORKS)
def test_unfold_inverts_the_converter_for_every_network(tmp_path, name):
    """Covers what the shipped folders do not: 2-bit weights, A2 layers of LFC, the bipolar first
    layer with its padding offset (lfcW1A2, spec §3.3 step 1), negative thresholds."""
    folder = synthetic_folder(tmp_path, name, [f"c{i}" for i in range(5)])
    network = read_params_folder(folder, name)
    back = build_network(network.spec, unfold_network(network), network.classes)
    assert_same_files(back, folder)


@pytest.mark.parametrize("name", ["cnvW1A1", "cnvW1A2", "lfcW1A1"])
def test_unfold_keeps_edge_thresholds(tmp_path, name):
    """Values trained folders rarely hold: negative popcount thresholds (the neuron always fires;
    the converter truncates toward zero, so their switch point sits on the other side) and
    equal A2 thresholds (a row that jumps from -1 to +1)."""
    folder = synthetic_folder(tmp_path, name, ["a", "b", "c"])
    network = read_params_folder(folder, name)
    edited = []
    for layer, stored in zip(network.spec.layers, network.layers):
        if stored.thresholds is None:
            continue
        if layer.input == "xnor":
            stored.thresholds[:3, 0] = [-1, -7, 0]  # rows 0-2 exist in every layer (3 classes)
        elif layer.activation_bits == 2:
            stored.thresholds[:3] = stored.thresholds[:3, :1]  # both steps at the lower one
        edited.append(layer.index)
    assert edited
    back = build_network(network.spec, unfold_network(network), network.classes)
    for layer, want, got in zip(network.spec.layers, network.layers, back.layers):
        if want.thresholds is not None:
            np.testing.assert_array_equal(got.thresholds, want.thresholds, err_msg=f"layer {layer.index}")
    model, _ = loaded_model(network, random_pixels(network.spec, 64, seed=2))
    assert_computes_the_folder(model, network, random_pixels(network.spec, 24, seed=3))


def engine_outputs(network, pixels):
    _, run = get_engine()
    return run(network, encode_inputs(network, pixels))


def loaded_model(network, calibration_pixels=None, seed=0):
    torch.manual_seed(seed)
    model = BnnModel(network.spec, network.num_classes)
    calibration = None if calibration_pixels is None else stored_inputs(network.spec, calibration_pixels)
    info = warm_start(model, network, "folder", network.classes, calibration)
    return model.eval(), info


def assert_computes_the_folder(model, network, pixels):
    """CNV: every class score an increasing affine map of the board's accumulator (the score
    layer's batch-norm), hence the same ranking; LFC: the same output bits."""
    classes = network.num_classes
    with torch.no_grad():
        out = model(stored_inputs(network.spec, pixels)).double().numpy()
    hw = engine_outputs(network, pixels)
    if network.spec.is_cnv:
        acc = hw[:, :classes].astype(np.int16).astype(np.float64)
        slope, offset = np.polyfit(acc.ravel(), out.ravel(), 1)
        assert slope > 0
        np.testing.assert_allclose(out, slope * acc + offset, atol=1e-4 * np.abs(out).max())
    else:
        bits = (hw[:, None] >> np.arange(classes, dtype=np.uint64)) & np.uint64(1)
        np.testing.assert_array_equal(bits.astype(bool), out >= 0)


@pytest.mark.parametrize("name", NETWORKS)
def test_loaded_model_computes_what_the_board_computes(tmp_path, name):
    network = read_params_folder(synthetic_folder(tmp_path, name, [f"c{i}" for i in range(4)]), name)
    pixels = random_pixels(network.spec, 24, seed=5)
    for calibration in (None, random_pixels(network.spec, 64, seed=6)):
        model, info = loaded_model(network, calibration)
        assert info.output_layer == "imported"
        assert_computes_the_folder(model, network, pixels)


@pytest.mark.parametrize("where", OFFICIAL)
def test_loaded_official_network_classifies_the_pictures_as_the_board(reference_dir, where):
    from bnnctl.infer.preprocess import image_to_cifar_pixels  # the pixels `bnnctl infer` feeds the board

    network = read_params_folder(reference_dir / "params" / where)
    if network.spec.is_cnv:
        names = ["airplane.jpg", "bird.jpg", "car.png", "deer.jpg"]
        pixels = np.stack([image_to_cifar_pixels(reference_dir / "pictures" / n) for n in names])
        pixels = np.concatenate([pixels, random_pixels(network.spec, 40, seed=7)])
    else:
        pixels = random_pixels(network.spec, 40, seed=7)
    model, _ = loaded_model(network, random_pixels(network.spec, 200, seed=8))
    assert_computes_the_folder(model, network, pixels)


def test_calibrated_one_bit_layers_are_unit_scaled_for_the_gradient(tmp_path):
    """The straight-through estimator passes gradient only where |y| <= 1: an import that kept
    accumulator units would leave (measured) most of the network without any."""
    network = read_params_folder(synthetic_folder(tmp_path, "cnvW1A1", ["a", "b", "c"]), "cnvW1A1")
    calibration = random_pixels(network.spec, 200, seed=9)
    model, _ = loaded_model(network, calibration)
    outputs = {}
    for i, block in enumerate(model.blocks[:-1]):
        block.bn.register_forward_hook(lambda m, a, o, i=i: outputs.__setitem__(i, o.detach()))
    model.train()
    with torch.no_grad():
        model(stored_inputs(network.spec, calibration[:100]))
    for i, y in outputs.items():
        per_output = y.transpose(0, 1).reshape(y.shape[1], -1).std(dim=1)
        varying = per_output[per_output > 1e-3]  # constant neurons stay constant
        assert len(varying) > len(per_output) // 2, f"layer {i}"
        assert 0.9 < float(varying.min()) and float(varying.max()) < 1.1, \
            f"layer {i}: batch-norm outputs spread {float(varying.min()):.2f}..{float(varying.max()):.2f}"


def test_other_classes_import_the_feature_layers_only(tmp_path):
    network = read_params_folder(synthetic_folder(tmp_path, "cnvW1A1", ["a", "b", "c"]), "cnvW1A1")
    torch.manual_seed(0)
    fresh = BnnModel(network.spec, 4)
    torch.manual_seed(0)
    model = BnnModel(network.spec, 4)
    info = warm_start(model, network, "folder", ["a", "b", "c", "d"], None)
    assert info.output_layer == "new"
    assert torch.equal(model.blocks[-1].linear.weight, fresh.blocks[-1].linear.weight)
    # hidden layers: the folder's weights at the middle of their latent interval
    first = network.layers[0].weights[:64, :27].reshape(64, 3, 3, 3).transpose(0, 3, 1, 2)
    np.testing.assert_array_equal(model.blocks[0].linear.weight.detach().numpy(), 0.5 * first)
    # same count but other names: a new output layer too (class i of the folder is not class i here)
    same_count = BnnModel(network.spec, 3)
    assert warm_start(same_count, network, "folder", ["x", "y", "z"], None).output_layer == "new"


def test_unrepresentable_folders_are_refused(tmp_path):
    network = read_params_folder(synthetic_folder(tmp_path, "cnvW2A2", ["a", "b"]), "cnvW2A2")
    network.layers[2].weights[0, 0] = -2
    with pytest.raises(BnnctlError, match="layer 2.*-2"):
        unfold_network(network)
    network = read_params_folder(synthetic_folder(tmp_path, "cnvW1A2", ["a", "b"], seed=4), "cnvW1A2")
    network.layers[3].thresholds[5] = [7, 3]
    with pytest.raises(BnnctlError, match="layer 3: row 5.*decreasing"):
        unfold_network(network)


# --------------------------------------------------------------------------------------------
# The CLI


def test_train_from_a_folder_with_the_same_and_with_other_classes(tmp_path):
    photos = make_image_folder(tmp_path / "colours", per_class=12)
    classes = sorted(p.name for p in photos.iterdir())
    same = synthetic_folder(tmp_path, "cnvW1A1", classes)
    run = train(tmp_path, None, str(photos), "--epochs", "1", "--batch-size", "16", "--init-from", str(same),
                "--out", "run-same")
    assert run.code == 0, run.err
    result = run.json()
    assert result["init_from"]["output_layer"] == "imported"
    assert 0 <= result["init_from"]["valid_error"] <= 1  # the starting point's own figure
    assert "before training" in run.err
    assert result["init_from"]["folder"] == str(same.resolve())
    metrics = json.loads((tmp_path / "run-same" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["init_from"]["calibration_images"] > 0 and metrics["config"]["init_from"] == str(same.resolve())

    other = synthetic_folder(tmp_path, "cnvW1A1", ["p", "q", "r", "s"], seed=5)
    run = train(tmp_path, None, str(photos), "--epochs", "2", "--batch-size", "16", "--init-from", str(other),
                "--out", "run-other")
    assert run.code == 0, run.err
    assert run.json()["init_from"]["output_layer"] == "new" and "valid_error" not in run.json()["init_from"]
    # the imported start changes what is trained: a run without it ends elsewhere
    plain = train(tmp_path, None, str(photos), "--epochs", "2", "--batch-size", "16", "--out", "run-plain")
    assert plain.code == 0, plain.err
    with np.load(tmp_path / "run-other" / "colours-cnvW1A1.npz") as a, \
            np.load(tmp_path / "run-plain" / "colours-cnvW1A1.npz") as b:
        assert not np.array_equal(a["arr_0"], b["arr_0"])


def test_resume_keeps_the_start_and_refuses_another(tmp_path):
    photos = make_image_folder(tmp_path / "colours", per_class=6)
    start = synthetic_folder(tmp_path, "cnvW1A1", ["p", "q"])
    first = train(tmp_path, None, str(photos), "--epochs", "1", "--init-from", str(start), "--out", "run")
    assert first.code == 0, first.err
    again = train(tmp_path, None, str(photos), "--epochs", "1", "--out", "run", "--resume",
                  "--init-from", str(synthetic_folder(tmp_path, "cnvW1A1", ["p", "q"], seed=6)))
    assert_user_error(again, "--resume", "init_from")
    resumed = train(tmp_path, None, str(photos), "--out", "run", "--resume")
    assert resumed.code == 0, resumed.err
    assert resumed.json()["init_from"] == first.json()["init_from"]


def test_init_from_user_errors(tmp_path):
    photos = make_image_folder(tmp_path / "colours", per_class=4)
    digits = synthetic_folder(tmp_path, "lfcW1A1", ["0", "1"])
    broken = synthetic_folder(tmp_path, "cnvW1A1", ["a", "b"], seed=7)
    (broken / "3-0-weights.bin").write_bytes(b"\0" * 8)
    before = {p.name for p in tmp_path.iterdir()}
    assert_user_error(train(tmp_path, None, str(photos), "--init-from", str(tmp_path / "nothing")),
                      "--init-from", "nothing")
    assert_user_error(train(tmp_path, None, str(photos), "--init-from", str(digits)),
                      "--init-from", "cnvW1A1", "lfcW1A1")
    assert_user_error(train(tmp_path, None, str(photos), "--init-from", str(broken)),
                      "--init-from", "3-0-weights.bin")
    assert_nothing_written(tmp_path, before)
