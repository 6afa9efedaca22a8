"""The compiled fast engine (issue 5) is bit-exact with the numpy reference engine.

The numpy engine (verified against real board results) is the oracle: every instruction-set
variant this CPU can run is compared with it on the reference parameter folders and pictures,
and on synthetic parameters of all five networks, at several batch sizes and odd thread counts.
"""

from __future__ import annotations

import functools
import os
import sys
import textwrap
import warnings

import numpy as np
import pytest

from bnnctl.convert.folder import read_params_folder
from bnnctl.convert.quantize import binarize_archive
from bnnctl.errors import BnnctlError
from bnnctl.infer import engines, fastbnn, numpy_engine
from bnnctl.infer.classify import classify_pixels, encode_inputs
from bnnctl.infer.preprocess import load_input_files
from bnnctl.model import BinarizedLayer, BinarizedNetwork
from bnnctl.topology import get_network
from tests.clirun import bnnctl
from tests.floatref import make_archive

NETWORKS = ("cnvW1A1", "cnvW1A2", "cnvW2A2", "lfcW1A1", "lfcW1A2")
# Every variant this CPU runs (AVX-512, AVX2, POPCNT, NEON, portable); one skipped id when unbuilt.
ISAS = fastbnn.isas() or ["not-built"]

needs_fast = pytest.mark.skipif(not fastbnn.available(),
                                reason=f"fast engine not built ({fastbnn.IMPORT_ERROR})")


def _check_isa(isa: str) -> None:
    if isa == "not-built":
        pytest.skip(f"fast engine not built ({fastbnn.IMPORT_ERROR})")


@functools.lru_cache(maxsize=None)
def synthetic_model(name: str) -> BinarizedNetwork:
    """Synthetic parameters whose batch-norm statistics are fitted to random pictures, so the
    thresholds sit inside the accumulators' range (mixed activations), with 30 % negative gammas
    (floor/ceil threshold rounding, spec §3.3). cnvW2A2 also gets some -2 weights (§3.2)."""
    import tempfile

    rng = np.random.default_rng(NETWORKS.index(name))
    spec = get_network(name)
    shape = (6, 32, 32, 3) if spec.is_cnv else (20, 28, 28)
    arrays = make_archive(name, rng.integers(0, 256, shape, dtype=np.uint8), 10, rng, negative_gamma=0.3)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, f"{name}.npz")
        np.savez(path, *arrays)
        model = binarize_archive(path, spec)
    if spec.weight_bits == 2:
        for layer in model.layers[1:]:
            w = layer.weights.copy()
            w[rng.random(w.shape) < 0.01] = -2
            layer.weights = w
    return model


def random_inputs(model: BinarizedNetwork, count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if model.spec.is_cnv:
        pixels = rng.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)
    else:
        # MNIST-like density of ink, so the binarised inputs are neither all 0 nor all 1
        pixels = np.where(rng.random((count, 28, 28)) < 0.2, 255, 0).astype(np.uint8)
    return encode_inputs(model, pixels)


@functools.lru_cache(maxsize=None)
def synthetic_case(name: str, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, numpy reference outputs), computed once for all instruction-set variants."""
    model = synthetic_model(name)
    inputs = random_inputs(model, count, seed)
    return inputs, numpy_engine.run_network(model, inputs)


def assert_same(model, inputs, isa, threads, want=None):
    if want is None:
        want = numpy_engine.run_network(model, inputs)
    got = fastbnn.run_network(model, inputs, threads=threads, isa=isa)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    return want


# ------------------------------------------------------------------ synthetic, all five networks

@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("name", NETWORKS)
def test_random_inputs_all_networks(name, isa):
    _check_isa(isa)
    model = synthetic_model(name)
    inputs, want = synthetic_case(name, 8, seed=1)
    # the outputs must vary, or the comparison would prove little
    assert len({bytes(np.asarray(row).tobytes()) for row in want}) > 1
    # split=True: a team of threads on each image even on a busy machine (the default decides
    # by the load average, which would leave that path untested here)
    for batch, threads, split in ((1, 1, None), (1, 3, True), (1, 2, None), (7, 1, None), (7, 3, None),
                                  (3, 5, True), (8, 2, None)):
        got = fastbnn.run_network(model, inputs[:batch], threads=threads, isa=isa, split_images=split)
        np.testing.assert_array_equal(got, want[:batch], err_msg=f"batch {batch}, {threads} threads")


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("name", ["lfcW1A1", "lfcW1A2"])
def test_batch_1000(name, isa):
    _check_isa(isa)
    inputs, want = synthetic_case(name, 1000, seed=2)
    assert_same(synthetic_model(name), inputs, isa, threads=3, want=want)


@needs_fast
def test_ties_do_not_fire():
    """Thresholds equal to an accumulator must not fire (strict T < acc, spec §3.1)."""
    model = synthetic_model("lfcW1A1")
    inputs = random_inputs(model, 5, seed=3)
    acc = numpy_engine.accumulate(model.layers[0], inputs)  # (5, 1024) agree counts
    tied = BinarizedNetwork(spec=model.spec, classes=model.classes, layers=list(model.layers))
    first = model.layers[0]
    thresholds = first.thresholds.copy()
    thresholds[:, 0] = acc[0]  # image 0 sits exactly on every threshold of layer 0
    tied.layers[0] = BinarizedLayer(spec=first.spec, weights=first.weights, thresholds=thresholds)
    want = numpy_engine.run_network(tied, inputs)
    for isa in fastbnn.isas():
        assert_same(tied, inputs, isa, threads=1, want=want)


@needs_fast
def test_extreme_thresholds_and_wrapping_scores():
    """Saturated thresholds (+-32768/32767, spec §6.2) and 24-bit layer-0 thresholds."""
    model = synthetic_model("cnvW2A2")
    extreme = BinarizedNetwork(spec=model.spec, classes=model.classes, layers=list(model.layers))
    rng = np.random.default_rng(4)
    for i in (0, 3, 7):
        layer = model.layers[i]
        t = layer.thresholds.copy()
        pick = rng.random(t.shape[0]) < 0.2
        limit = (1 << 23) if i == 0 else 32768
        t[pick] = rng.choice([-limit, limit - 1], size=(pick.sum(), t.shape[1]))
        extreme.layers[i] = BinarizedLayer(spec=layer.spec, weights=layer.weights, thresholds=np.sort(t, axis=1))
    inputs = random_inputs(model, 3, seed=5)
    want = numpy_engine.run_network(extreme, inputs)
    for isa in fastbnn.isas():
        assert_same(extreme, inputs, isa, threads=3, want=want)


# ------------------------------------------------------------------ reference folders and pictures

@pytest.mark.parametrize("net", ["cnvW1A1", "cnvW1A2"])
def test_reference_cnv_pictures(net, reference_dir):
    if not fastbnn.available():
        pytest.skip("fast engine not built")
    model = read_params_folder(reference_dir / "params" / "cifar10" / net)
    pictures = reference_dir / "pictures"
    items = load_input_files([pictures / n for n in ("deer.jpg", "car.png", "airplane.jpg", "bird.jpg",
                                                     "deer.bin")], "cnv")
    inputs = encode_inputs(model, np.stack([item.pixels for item in items]))
    inputs = np.concatenate([inputs, random_inputs(model, 4, seed=6)])
    want = numpy_engine.run_network(model, inputs)
    for isa in fastbnn.isas():
        for threads in (1, 3):
            assert_same(model, inputs, isa, threads, want)
        np.testing.assert_array_equal(fastbnn.run_network(model, inputs[:1], threads=3, isa=isa, split_images=True),
                                      want[:1])
    assert int(np.argmax(want[0, :10])) == 4  # deer (spec §6.1)


def test_reference_lfc_mnist(reference_dir, data_dir):
    if not fastbnn.available():
        pytest.skip("fast engine not built")
    from bnnctl.data.datasets import load_dataset

    model = read_params_folder(reference_dir / "params" / "mnist" / "lfcW1A1")
    items = load_input_files([reference_dir / "pictures" / "3.image-idx3-ubyte"], "lfc")
    three = encode_inputs(model, np.stack([item.pixels for item in items]))
    assert int(fastbnn.run_network(model, three)[0]) == 0x8  # spec §7.4
    images = load_dataset("mnist", "test", data_dir=data_dir / "mnist", progress=False).images[:1000]
    inputs = encode_inputs(model, images)
    want = numpy_engine.run_network(model, inputs)
    for isa in fastbnn.isas():
        assert_same(model, inputs, isa, threads=3, want=want)


# ------------------------------------------------------------------ engine choice, CLI

@needs_fast
def test_infer_uses_fast_engine_by_default(reference_dir, tmp_path):
    params = reference_dir / "params" / "cifar10" / "cnvW1A1"
    picture = reference_dir / "pictures" / "deer.jpg"
    fast = bnnctl("infer", picture, "--params", params, "--details", "--json", cwd=tmp_path)
    assert fast.code == 0, fast.err
    slow = bnnctl("infer", picture, "--params", params, "--details", "--json", "--engine", "numpy", cwd=tmp_path)
    assert slow.code == 0, slow.err
    assert fast.json()["engine"] == "fast"
    assert slow.json()["engine"] == "numpy"
    assert fast.json()["results"] == slow.json()["results"]
    assert "warning" not in fast.err


def test_missing_extension_falls_back_to_numpy(monkeypatch):
    monkeypatch.setattr(fastbnn, "_ext", None)
    monkeypatch.setattr(engines, "_warned", False)
    with pytest.warns(RuntimeWarning, match="numpy engine"):
        name, run = engines.get_engine("auto")
    assert (name, run) == ("numpy", numpy_engine.run_network)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert engines.get_engine("auto")[0] == "numpy"  # the warning comes once
    with pytest.raises(BnnctlError, match="not built"):
        engines.get_engine("fast")
    model = synthetic_model("lfcW1A1")
    result = classify_pixels(model, np.zeros((2, 28, 28), np.uint8), engine="auto")
    assert result.engine == "numpy"


def test_cli_without_extension_warns_once(reference_dir, tmp_path):
    """An install without a compiler: the CLI still works, with one warning line."""
    blocker = tmp_path / "site"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(textwrap.dedent("""
        import sys
        class _Block:
            def find_spec(self, name, path=None, target=None):
                if name == "bnnctl.infer.fastbnn._fastbnn":
                    raise ImportError("simulated install without a C compiler")
                return None
        sys.meta_path.insert(0, _Block())
    """))
    env = {"PYTHONPATH": os.pathsep.join([str(blocker), *sys.path])}
    items = ["infer", reference_dir / "pictures" / "3.image-idx3-ubyte", "--params",
             reference_dir / "params" / "mnist" / "lfcW1A1", "--json"]
    run = bnnctl(*items, cwd=tmp_path, env=env)
    assert run.code == 0, run.err
    assert run.json()["engine"] == "numpy"
    assert run.json()["results"][0]["class"] == 3
    warning_lines = [line for line in run.err.splitlines() if "warning" in line]
    assert len(warning_lines) == 1 and "numpy engine" in warning_lines[0]
    failed = bnnctl(*items, "--engine", "fast", cwd=tmp_path, env=env)
    assert failed.code != 0 and "not built" in failed.err and "Traceback" not in failed.err


@needs_fast
def test_unsupported_geometry_runs_on_numpy_under_auto():
    """A custom network the fast engine cannot pack (here 32 output rows, not a multiple of 64)."""
    import dataclasses

    model = synthetic_model("lfcW1A1")
    last = model.layers[-1]
    spec = dataclasses.replace(last.spec, out_features=32, pe=16, wmem=2048, tmem=2)
    small = dataclasses.replace(last, spec=spec, weights=last.weights[:32], thresholds=last.thresholds[:32])
    net_spec = dataclasses.replace(model.spec, layers=(*model.spec.layers[:-1], spec))
    custom = BinarizedNetwork(spec=net_spec, classes=model.classes, layers=[*model.layers[:-1], small])
    inputs = random_inputs(model, 3, seed=8)
    with pytest.raises(fastbnn.UnsupportedModel):
        fastbnn.run_network(custom, inputs)
    name, run = engines.get_engine("auto")
    with pytest.warns(RuntimeWarning, match="multiple of 64"):
        got = run(custom, inputs)
    np.testing.assert_array_equal(got, numpy_engine.run_network(custom, inputs))


# ------------------------------------------------------------------ threads, caching, memory

def test_thread_count_from_environment(monkeypatch):
    monkeypatch.setenv("BNNCTL_THREADS", "3")
    assert fastbnn.default_threads() == 3
    assert fastbnn.default_threads(5) == 5
    monkeypatch.setenv("BNNCTL_THREADS", "many")
    with pytest.raises(BnnctlError, match="BNNCTL_THREADS"):
        fastbnn.default_threads()


@needs_fast
def test_packed_once_per_model_and_repacked_when_arrays_change():
    model = synthetic_model("lfcW1A1")
    first = fastbnn.packed(model)
    assert fastbnn.packed(model) is first
    copy = BinarizedNetwork(spec=model.spec, classes=model.classes, layers=list(model.layers))
    last = model.layers[-1]
    flipped = BinarizedLayer(spec=last.spec, weights=-last.weights, thresholds=last.thresholds)
    copy.layers[-1] = flipped
    inputs = random_inputs(model, 4, seed=7)
    assert_same(copy, inputs, None, threads=1)
    copy.layers[-1] = last
    assert fastbnn.packed(copy) is not fastbnn.packed(model)  # different objects, own entries
    np.testing.assert_array_equal(fastbnn.run_network(copy, inputs), fastbnn.run_network(model, inputs))


@needs_fast
def test_empty_batch_and_bad_shapes():
    model = synthetic_model("cnvW1A1")
    assert fastbnn.run_network(model, np.zeros((0, 32, 32, 3), np.int8)).shape == (0, 64)
    with pytest.raises(BnnctlError, match="expects"):
        fastbnn.run_network(model, np.zeros((2, 28, 28), np.int8))
    with pytest.raises(BnnctlError):
        fastbnn.run_network(model, np.zeros((1, 32, 32, 3), np.int8), isa="no-such-isa")


@needs_fast
def test_bench_command_and_10000_cnv_images_under_1_gib(tmp_path):
    run = bnnctl("bench", "--network", "cnvW1A1", "--batch", "10000", "--repeat", "1", "--json", cwd=tmp_path)
    assert run.code == 0, run.err
    report = run.json()
    assert report["engine"] == "fast" and report["batch"] == 10000
    assert report["images_per_second"] > 0 and report["peak_rss_mib"] < 1024
    text = bnnctl("bench", "--network", "lfcW1A2", "--batch", "50", "--threads", "3", cwd=tmp_path)
    assert text.code == 0, text.err
    assert "images/s" in text.out and "usec per image" in text.out and "peak RSS" in text.out


# ------------------------------------------------------------------ AArch64 NEON under qemu

def dump_for_crosscheck(path, model: BinarizedNetwork, inputs: np.ndarray, want: np.ndarray) -> None:
    """The packed model, inputs and reference outputs in src/crosscheck.c's file format."""
    import struct

    p = fastbnn.packed(model)
    with open(path, "wb") as f:
        f.write(struct.pack("<iiiqqi", *p.header, len(p.layers)))
        for layer in p.layers:
            f.write(struct.pack("<15i", *layer[:15]))
            for array in layer[15:]:
                data = b"" if array is None else np.ascontiguousarray(array).tobytes()
                f.write(struct.pack("<q", -1 if array is None else len(data)) + data)
        f.write(struct.pack("<i", len(inputs)))
        f.write(np.ascontiguousarray(inputs).tobytes() + np.ascontiguousarray(want).tobytes())


@needs_fast
def test_neon_variant_under_qemu(tmp_path):
    """The NEON variant, built with an AArch64 cross compiler and run under qemu-aarch64 (both
    Debian packages: gcc-aarch64-linux-gnu, qemu-user), against the numpy reference."""
    import shutil
    import subprocess
    from pathlib import Path

    cc, qemu = shutil.which("aarch64-linux-gnu-gcc"), shutil.which("qemu-aarch64")
    if not cc or not qemu:
        pytest.skip("needs aarch64-linux-gnu-gcc and qemu-aarch64")
    src = Path(fastbnn.__file__).parent / "src"
    if not (src / "crosscheck.c").exists():
        pytest.skip("the C sources are not installed with this copy of bnnctl")
    exe = tmp_path / "crosscheck"
    sources = [src / "crosscheck.c", src / "engine.c", *sorted(src.glob("isa_*.c"))]
    subprocess.run([cc, "-O2", "-std=c11", "-pthread", "-static", f"-I{src}", *map(str, sources), "-o", str(exe)],
                   check=True, capture_output=True, timeout=120)
    for name in NETWORKS:
        inputs, want = synthetic_case(name, 5, seed=11)
        dump_for_crosscheck(tmp_path / f"{name}.bin", synthetic_model(name), inputs, want)
        run = subprocess.run([qemu, str(exe), str(tmp_path / f"{name}.bin")], capture_output=True, text=True,
                             timeout=120)
        assert run.returncode == 0, run.stdout + run.stderr
        assert "neon 3 threads: bit-exact" in run.stdout
