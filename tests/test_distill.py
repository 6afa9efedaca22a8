"""`bnnctl train --distill`: the float teacher, the distillation term, resume and user errors.

Small image-folder runs only (no shared data needed); the measured effect on the benchmarks is
in the README's Training results.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from clirun import assert_user_error
from test_train import assert_nothing_written, make_image_folder, train

torch = pytest.importorskip("torch", reason="training tests need PyTorch (pip install 'bnnctl[train]')")

from bnnctl.errors import BnnctlError  # noqa: E402
from bnnctl.topology import get_network  # noqa: E402
from bnnctl.train import teacher as teacher_module  # noqa: E402
from bnnctl.train import trainer  # noqa: E402
from bnnctl.train.trainer import TrainConfig, TrainingInterrupted, run_training  # noqa: E402


def quiet(line: str) -> None:
    pass


def test_distillation_term_is_hintons_softened_kl_divergence():
    rng = np.random.default_rng(3)
    student = rng.normal(size=(5, 4))
    teacher = rng.normal(size=(5, 4)) * 3
    log_scale, temperature = 0.7, 4.0

    def softmax(z):
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    p_t = softmax(teacher / temperature)
    p_s = softmax(student * math.exp(log_scale) / temperature)
    expected = temperature ** 2 * np.mean(np.sum(p_t * (np.log(p_t) - np.log(p_s)), axis=1))
    scale = torch.tensor(log_scale, dtype=torch.float64, requires_grad=True)
    got = teacher_module.distillation_loss(torch.from_numpy(student), torch.from_numpy(teacher), scale,
                                           temperature)
    assert float(got.detach()) == pytest.approx(expected, rel=1e-12)
    got.backward()
    assert float(scale.grad) != 0  # the term's own scale is learned

    # zero exactly where the scaled student ranks and spaces the classes as the teacher does,
    # whatever constant the scores carry (the hinge's offset of signed scores, the BN's beta)
    matched = torch.from_numpy(teacher / math.exp(log_scale) + 5.0)
    zero = teacher_module.distillation_loss(matched, torch.from_numpy(teacher),
                                            torch.tensor(log_scale, dtype=torch.float64), temperature)
    assert abs(float(zero)) < 1e-12


def test_teachers_have_the_networks_geometry():
    # CNV widths of spec §1.2 written out (not read from the topology config under test)
    photo = teacher_module.build_teacher(get_network("cnvW2A2"), 7)
    convs = [(m.in_channels, m.out_channels, m.kernel_size, m.padding) for m in photo.modules()
             if isinstance(m, torch.nn.Conv2d)]
    assert convs == [(3, 64, (3, 3), (0, 0)), (64, 64, (3, 3), (0, 0)), (64, 128, (3, 3), (0, 0)),
                     (128, 128, (3, 3), (0, 0)), (128, 256, (3, 3), (0, 0)), (256, 256, (3, 3), (0, 0))]
    dense = [(m.in_features, m.out_features) for m in photo.modules() if isinstance(m, torch.nn.Linear)]
    assert dense == [(256, 512), (512, 512), (512, 7)]
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in photo.modules()) == 2
    photo.eval()
    assert photo(torch.zeros(2, 3, 32, 32)).shape == (2, 7)
    with pytest.raises(ValueError, match="lfcW1A1"):
        teacher_module.build_teacher(get_network("lfcW1A1"), 10)


def test_distillation_trains_a_teacher_on_the_training_split_and_changes_the_student(tmp_path, monkeypatch):
    folder = make_image_folder(tmp_path / "colours", per_class=16)
    seen = {}
    real_train_teacher = trainer.train_teacher

    def watching(*args, **kwargs):
        seen["train_x"] = args[5].clone()
        return real_train_teacher(*args, **kwargs)

    monkeypatch.setattr(trainer, "train_teacher", watching)
    metrics, runs = {}, {}
    for name, weight in (("plain", 0.0), ("distilled", 1.0)):
        config = TrainConfig.from_recipe(str(folder), "cnvW1A1", epochs=2, batch_size=8, distill=weight,
                                         teacher_epochs=8)
        runs[name] = run_training(config, out=tmp_path / name, device="cpu", log=quiet, progress=False)
        metrics[name] = json.loads((tmp_path / name / "metrics.json").read_text(encoding="utf-8"))

    assert not (tmp_path / "plain" / "teacher.pt").exists() and "teacher" not in metrics["plain"]
    assert runs["plain"].teacher is None
    assert (tmp_path / "distilled" / "teacher.pt").is_file()
    info = metrics["distilled"]["teacher"]
    assert info["model"] == "PhotoTeacher" and info["epochs"] == 8 and len(info["history"]) == 8
    # colours are easy: the float teacher learns them (chance is 2/3 wrong)
    assert info["valid_error"] < 0.4, info
    assert runs["distilled"].teacher["valid_error"] == info["valid_error"]
    assert metrics["distilled"]["config"]["distill"] == 1.0
    # the teacher saw the training split only: as many images as the student trains on, none of
    # them a validation image
    valid = trainer.load_training_data(TrainConfig.from_recipe(str(folder), "cnvW1A1", batch_size=8),
                                       get_network("cnvW1A1")).valid_x
    assert len(seen["train_x"]) == metrics["distilled"]["train_images"]
    flat = seen["train_x"].reshape(len(seen["train_x"]), -1)
    for image in valid.reshape(len(valid), -1):
        assert not (flat == image).all(dim=1).any()
    # same seed, same data, same initial weights: only the added term can change the losses
    plain_losses = [h["train_loss"] for h in metrics["plain"]["epochs"]]
    distilled_losses = [h["train_loss"] for h in metrics["distilled"]["epochs"]]
    assert plain_losses != distilled_losses
    with np.load(runs["plain"].npz) as a, np.load(runs["distilled"].npz) as b:
        assert a.files == b.files and any(not np.array_equal(a[k], b[k]) for k in a.files)


def test_unaugmented_inputs_use_cached_teacher_answers(tmp_path):
    folder = make_image_folder(tmp_path / "colours", per_class=6)
    config = TrainConfig.from_recipe(str(folder), "cnvW1A1", epochs=1, batch_size=8, augment=False,
                                     distill=0.5, teacher_epochs=2)
    data = trainer.load_training_data(config, get_network("cnvW1A1"))
    (tmp_path / "run").mkdir()
    run = trainer.Run(config, tmp_path / "run", torch.device("cpu"), data, quiet, progress=False)
    run.prepare_teacher()
    assert run.teacher_train_logits is not None
    idx = torch.tensor([4, 0, 7])
    x = run.inputs(run.train_x[idx], None)
    online = teacher_module.teacher_outputs(run.teacher, x)
    torch.testing.assert_close(run.teacher_train_logits[idx], online)
    scores = torch.randn(3, 3)
    expected = 0.5 * teacher_module.distillation_loss(scores, online, run.distill_log_scale)
    torch.testing.assert_close(run.distill_term(x, idx)(scores), expected)


def test_interrupted_distilled_run_resumes_exactly_without_retraining_the_teacher(tmp_path, monkeypatch):
    folder = make_image_folder(tmp_path / "colours", per_class=8)
    config = TrainConfig.from_recipe(str(folder), "cnvW1A1", epochs=2, batch_size=8, distill=1.0,
                                     teacher_epochs=2)
    straight = run_training(config, out=tmp_path / "straight", device="cpu", log=quiet, progress=False)

    real_epoch = trainer.Run.train_epoch

    def cut_in_first_epoch(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer.Run, "train_epoch", cut_in_first_epoch)
    with pytest.raises(TrainingInterrupted):
        run_training(config, out=tmp_path / "cut", device="cpu", log=quiet, progress=False)
    # Ctrl-C in epoch 1: the teacher and a checkpoint from before epoch 1 are kept
    assert (tmp_path / "cut" / "teacher.pt").is_file() and (tmp_path / "cut" / "checkpoint.pt").is_file()

    monkeypatch.setattr(trainer.Run, "train_epoch", real_epoch)

    def no_second_teacher(*args, **kwargs):
        raise AssertionError("the teacher of teacher.pt must be reused")

    monkeypatch.setattr(trainer, "train_teacher", no_second_teacher)
    resumed = run_training(config, out=tmp_path / "cut", device="cpu", resume=True, log=quiet, progress=False)
    with np.load(straight.npz) as a, np.load(resumed.npz) as b:
        for key in a.files:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    sa = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=False)
    sb = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=False)
    assert torch.equal(sa["distill_log_scale"], sb["distill_log_scale"])
    assert float(sa["distill_log_scale"]) != 0.0  # it was trained
    untimed = [{k: v for k, v in t.items() if k != "seconds"} for t in (resumed.teacher, straight.teacher)]
    assert untimed[0] == untimed[1]  # the same teacher figures (the timing is the machine's)


def test_distill_user_errors(tmp_path):
    folder = make_image_folder(tmp_path / "pics", per_class=4)
    before = {p.name for p in tmp_path.iterdir()}
    assert_user_error(train(tmp_path, None, str(folder), "--distill", "-1", "--out", "run"), "--distill", ">= 0")
    assert_user_error(train(tmp_path, None, str(folder), "--distill", "nan", "--out", "run"), "--distill")
    assert_user_error(train(tmp_path, None, str(folder), "--distill", "1", "--teacher-epochs", "0", "--out", "run"),
                      "--teacher-epochs")
    # only where the board takes an argmax of popcounts: LFC reads output bits, the 2-bit CNV
    # networks need a positive top score (refused before any data is read)
    for args in (["mnist"], [str(folder), "--network", "cnvW1A2"], [str(folder), "--network", "cnvW2A2"]):
        assert_user_error(train(tmp_path, None, *args, "--distill", "1", "--out", "run"), "--distill", "cnvW1A1")
    assert_nothing_written(tmp_path, before)

    first = train(tmp_path, None, str(folder), "--epochs", "1", "--distill", "1", "--teacher-epochs", "1",
                  "--out", "run")
    assert first.code == 0, first.err
    assert first.json()["teacher"]["epochs"] == 1
    assert_user_error(train(tmp_path, None, str(folder), "--out", "run", "--resume", "--distill", "2"),
                      "--resume", "distill")
    # a damaged teacher.pt is reported as such when a resumed run needs it
    checkpoint = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    checkpoint["epoch"] = 0
    torch.save(checkpoint, tmp_path / "run" / "checkpoint.pt")
    (tmp_path / "run" / "teacher.pt").write_bytes(b"not a teacher")
    assert_user_error(train(tmp_path, None, str(folder), "--out", "run", "--resume"), "teacher.pt", "delete it")


def test_teacher_loader_refuses_another_network(tmp_path):
    photo = teacher_module.build_teacher(get_network("cnvW1A1"), 3)
    teacher_module.save_teacher(tmp_path / "teacher.pt", photo, {})
    with pytest.raises(BnnctlError, match="teacher.pt"):
        teacher_module.load_teacher(tmp_path / "teacher.pt", get_network("lfcW1A1"), 3, torch.device("cpu"))
    loaded, info = teacher_module.load_teacher(tmp_path / "teacher.pt", get_network("cnvW1A1"), 3,
                                               torch.device("cpu"))
    assert info == {} and not loaded.training


def test_a_reused_teacher_trains_the_same_student_and_another_split_is_refused(tmp_path, monkeypatch):
    folder = make_image_folder(tmp_path / "colours", per_class=8)
    common = dict(epochs=2, batch_size=8, distill=1.0, teacher_epochs=3)
    first = run_training(TrainConfig.from_recipe(str(folder), "cnvW1A1", **common), out=tmp_path / "first",
                         device="cpu", log=quiet, progress=False)

    def no_teacher_training(*args, **kwargs):
        raise AssertionError("--teacher must be used, not a new teacher trained")

    monkeypatch.setattr(trainer, "train_teacher", no_teacher_training)
    given = tmp_path / "first" / "teacher.pt"
    second = run_training(TrainConfig.from_recipe(str(folder), "cnvW1A1", teacher=str(given), **common),
                          out=tmp_path / "second", device="cpu", log=quiet, progress=False)
    assert (tmp_path / "second" / "teacher.pt").read_bytes() == given.read_bytes()  # kept for --resume
    with np.load(first.npz) as a, np.load(second.npz) as b:
        for key in a.files:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)

    # another seed draws another validation split: the teacher may have trained on its images
    before = {p.name for p in tmp_path.iterdir()}
    for args, words in ((["--seed", "2", "--distill", "1", "--teacher", str(given)], ("--teacher", "other training images")),
                        (["--valid-fraction", "0.3", "--distill", "1", "--teacher", str(given)], ("other training images",)),
                        (["--distill", "1", "--teacher", str(tmp_path / "none.pt")], ("--teacher", "no such file")),
                        (["--teacher", str(given)], ("--teacher", "--distill"))):
        assert_user_error(train(tmp_path, None, str(folder), *args, "--out", "run"), *words)
    assert_nothing_written(tmp_path, before)


def test_resuming_a_finished_distilled_run_keeps_the_teacher_figures(tmp_path, monkeypatch):
    folder = make_image_folder(tmp_path / "colours", per_class=6)
    config = TrainConfig.from_recipe(str(folder), "cnvW1A1", epochs=1, batch_size=8, distill=1.0,
                                     teacher_epochs=1)
    first = run_training(config, out=tmp_path / "run", device="cpu", log=quiet, progress=False)
    before = json.loads((tmp_path / "run" / "metrics.json").read_text(encoding="utf-8"))["teacher"]

    def no_teacher_needed(*args, **kwargs):
        raise AssertionError("no epoch is left to train: the teacher is not needed")

    monkeypatch.setattr(trainer, "load_teacher", no_teacher_needed)
    monkeypatch.setattr(trainer, "train_teacher", no_teacher_needed)
    again = run_training(config, out=tmp_path / "run", device="cpu", resume=True, log=quiet, progress=False)
    # the figures come back with the run's checkpoint, in the result and in metrics.json
    assert again.teacher == first.teacher
    assert json.loads((tmp_path / "run" / "metrics.json").read_text(encoding="utf-8"))["teacher"] == before
