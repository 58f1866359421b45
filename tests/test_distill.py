"""Distillation (issue 33): the loss is the formula it claims, the teacher sees the student's views at its own
size, the run records its teacher, and a teacher of other classes or a non-cached run is refused."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest
from helpers import tiny_train_config

from wbc_edge.core.errors import ModelFileError, WbcEdgeError


def test_distill_loss_is_cross_entropy_plus_scaled_kl():
    from wbc_edge.core.tfcompat import import_tf
    from wbc_edge.train.distill import distill_loss, pack, soften

    tf, keras = import_tf()
    rng = np.random.default_rng(0)
    student = rng.dirichlet(np.ones(5), size=16).astype(np.float32)
    teacher = soften(rng.dirichlet(np.ones(5), size=16), 2.0)
    y = rng.integers(0, 5, size=16)
    ce = -np.log(student[np.arange(16), y])
    s_t = soften(student, 2.0).astype(np.float64)
    kl = np.sum(teacher * (np.log(teacher) - np.log(s_t)), axis=1)
    for alpha in (0.0, 0.3, 1.0):
        got = distill_loss(tf, keras, alpha, 2.0)(tf.constant(pack(y, teacher)), tf.constant(student)).numpy()
        np.testing.assert_allclose(got, (1 - alpha) * ce + alpha * 4.0 * kl, rtol=1e-4, atol=1e-5)
    same = distill_loss(tf, keras, 1.0, 2.0)(tf.constant(pack(y, s_t)), tf.constant(student)).numpy()
    assert np.all(np.abs(same) < 1e-4), "a student that already answers like the teacher has nothing to learn"


def test_student_trains_on_the_teachers_outputs_for_the_same_views(sample_root, tiny_run_dir, tmp_path):
    """A 64 px student of the 96 px tiny teacher: the cached teacher targets are the teacher's softened outputs
    on the same seeded views at 96 px, the run records the teacher (sha256, T, alpha) and the student exports."""
    from wbc_edge.model.network import load_model
    from wbc_edge.model.network import ModelConfig
    from wbc_edge.train import train
    from wbc_edge.train.activations import ActivationCache
    from wbc_edge.train.distill import soften

    out = tmp_path / "student"
    cfg = tiny_train_config(sample_root, out, tiny_run_dir / "split.csv", teacher=str(tiny_run_dir),
                            model=ModelConfig(alpha=0.35, input_size=64, weights="none"), distill_temperature=3.0)
    train(cfg, progress=False)
    run = json.loads((out / "run.json").read_text())
    rec = run["timings"]["distillation"]
    assert rec["sha256"] == hashlib.sha256((tiny_run_dir / "model.keras").read_bytes()).hexdigest()
    assert (rec["temperature"], rec["alpha"], rec["input_size"]) == (3.0, cfg.distill_alpha, 96)
    assert load_model(out / "model.keras").input_shape[1] == 64
    cached = sorted((out / "checkpoints" / "cache").glob("teacher_train_v1_*.npy"))
    assert len(cached) == 1
    soft = np.load(cached[0])
    teacher = load_model(tiny_run_dir / "model.keras")
    from wbc_edge.data import SplitManifest

    data = {s: SplitManifest.load(tiny_run_dir / "split.csv").files(s, str(sample_root)) for s in ("train", "val")}
    cache = ActivationCache(cfg, None, data, tmp_path / "unused", None, None)
    px = np.stack([cache.view_pixels("train", 1, i, size=96) for i in range(4)]).astype(np.float32)
    np.testing.assert_allclose(soft[:4], soften(teacher.predict(px, verbose=0), 3.0), atol=1e-4)
    assert not np.allclose(soft[:4], soften(teacher.predict(
        np.stack([cache.view_pixels("train", 0, i, size=96) for i in range(4)]).astype(np.float32), verbose=0), 3.0),
        atol=1e-4), "view 1 must be the augmented view, not the clean image"


def test_a_teacher_of_other_classes_or_outside_cached_mode_is_refused(sample_root, tiny_run_dir, tmp_path):
    from wbc_edge.train import TrainConfig, train

    with pytest.raises(WbcEdgeError, match="needs --mode cached"):
        TrainConfig(data_root="d", out_dir="o", mode="full", teacher=str(tiny_run_dir)).validate()
    with pytest.raises(WbcEdgeError, match="no model there"):
        TrainConfig(data_root="d", out_dir="o", teacher=str(tmp_path)).validate()
    other = tmp_path / "other"
    shutil.copytree(tiny_run_dir, other)
    info = json.loads((other / "run.json").read_text())
    (other / "run.json").write_text(json.dumps(dict(info, labels=["a", "b", "c", "d", "e"])))
    with pytest.raises(ModelFileError, match="differ from the data's"):
        train(tiny_train_config(sample_root, tmp_path / "s", tiny_run_dir / "split.csv", teacher=str(other)),
              progress=False)


def test_students_of_another_size_reuse_the_teachers_targets(sample_root, tiny_run_dir, tmp_path, monkeypatch):
    """With --shared-cache the teacher pass (most of a student's time) runs once per teacher and views: a second
    student of another input size reads the same targets instead of running the teacher again."""
    from wbc_edge.model.network import ModelConfig
    from wbc_edge.train import train
    from wbc_edge.train.distill import TeacherTargets

    shared = tmp_path / "shared"

    def cfg(size):
        return tiny_train_config(sample_root, tmp_path / f"s{size}", tiny_run_dir / "split.csv", teacher=str(tiny_run_dir),
                                 model=ModelConfig(alpha=0.35, input_size=size, weights="none"), shared_cache=str(shared),
                                 head_epochs=1, finetune_epochs=1)

    train(cfg(64), progress=False)
    first = sorted(shared.glob("teacher_*.npy"))
    assert len(first) == 3  # train views 0 and 1, val view 0

    def no_teacher(self, *a, **k):
        raise AssertionError("the teacher ran again")

    monkeypatch.setattr(TeacherTargets, "_compute", no_teacher)
    train(cfg(80), progress=False)
    assert sorted(shared.glob("teacher_*.npy")) == first
