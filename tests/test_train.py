"""Training: build, a short cached-mode run, resume after an interruption, evaluate, tf.distribute."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from helpers import tiny_train_config

from wbc_edge.core.errors import ModelFileError, WbcEdgeError
from wbc_edge.core.labels import WBC5

REPO = Path(__file__).resolve().parents[1]


def _tiny_cfg(sample_root, out, split_csv, **kw):
    return tiny_train_config(sample_root, out, split_csv, **kw)


@pytest.fixture(scope="module")
def sample_split(sample_root, tmp_path_factory):
    from wbc_edge.data import split_dataset

    out = tmp_path_factory.mktemp("split") / "split.csv"
    split_dataset(sample_root, out, seed=1, progress=False)
    return out


def test_build_model_is_flat_uint8_pixels_and_lambda_free():
    from wbc_edge.model.network import ModelConfig, build_model
    from wbc_edge.core.tfcompat import import_tf

    tf, keras = import_tf()
    m = build_model(ModelConfig(alpha=0.35, input_size=96, weights="none"))
    assert m.input_shape == (None, 96, 96, 3)
    assert m.output_shape == (None, 5)
    assert not any(isinstance(layer, keras.Model) for layer in m.layers), "backbone must not be nested"
    assert not any(type(layer).__name__ == "Lambda" for layer in m.layers)
    assert m.get_layer("normalise").scale == pytest.approx(1 / 127.5)
    # Normalisation is in the graph: pixels 0 and 255 map to -1 and +1.
    norm = keras.Model(m.input, m.get_layer("normalise").output)
    x = np.zeros((1, 96, 96, 3), np.float32)
    x[0, 0, 0] = 255
    y = norm(x).numpy()
    assert y[0, 0, 0, 0] == pytest.approx(1.0) and y[0, 1, 1, 0] == pytest.approx(-1.0)
    probs = m(x).numpy()
    assert probs.shape == (1, 5) and probs.sum() == pytest.approx(1.0, abs=1e-5)


def test_missing_weights_file_names_path_and_expectation(tmp_path):
    from wbc_edge.model.network import ModelConfig, build_model

    missing = tmp_path / "nope.h5"
    with pytest.raises(ModelFileError, match="nope.h5.*not found.*no-top"):
        build_model(ModelConfig(alpha=0.35, input_size=96, weights=str(missing)))
    not_h5 = tmp_path / "fake.h5"
    not_h5.write_text("hello")
    with pytest.raises(ModelFileError, match="not an HDF5"):
        build_model(ModelConfig(alpha=0.35, input_size=96, weights=str(not_h5)))


def test_cached_training_writes_run_dir_and_resumes(sample_root, sample_split, tmp_path, monkeypatch):
    from wbc_edge import train as train_mod
    from wbc_edge.train import CachedTrainer, RunState

    out = tmp_path / "run"
    cfg = _tiny_cfg(sample_root, out, sample_split)

    # Interrupt right after the first fine-tune epoch has been checkpointed (as Ctrl-C would).
    original_set = RunState.set

    def interrupting_set(self, **kv):
        original_set(self, **kv)
        if kv.get("finetune_epoch") == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(RunState, "set", interrupting_set)
    with pytest.raises(KeyboardInterrupt):
        train_mod.train(cfg, progress=False)
    assert not (out / "model.keras").exists(), "no final model after an interrupted run"
    state = json.loads((out / "state.json").read_text())
    assert state["finetune_epoch"] == 1 and state["head_done"]

    monkeypatch.setattr(RunState, "set", original_set)
    # Resuming must not recompute the activation cache.
    calls = []
    original_predict = CachedTrainer.extract

    def spy_extract(self, split, view):
        calls.append((split, view, int(self.state.get(f"extract_{split}_v{view}", 0))))
        return original_predict(self, split, view)

    monkeypatch.setattr(CachedTrainer, "extract", spy_extract)
    result = train_mod.train(cfg, progress=False)
    assert all(done > 0 for _, _, done in calls), "activation cache was recomputed on resume"
    for name in ("model.keras", "split.csv", "history.json", "curves.png", "run.json", "test_metrics.json",
                 "test_confusion.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    history = json.loads((out / "history.json").read_text())
    phases = [h["phase"] for h in history["epochs"]]
    assert phases == ["head", "head", "finetune", "finetune"]
    run = json.loads((out / "run.json").read_text())
    assert run["resumed"] is True
    assert run["labels"] == run["config"]["labels"] == list(WBC5)  # the 5-class sample set, stored
    assert run["split_manifest_sha256"] == _sha(out / "split.csv")
    assert {"tensorflow", "tf_keras", "numpy"} <= set(run["versions"])
    assert 0.0 <= result.test_accuracy <= 1.0
    # The scale guard is fitted on the train split and stored for export (wbc_edge.core.scale_guard).
    guard = json.loads((out / "scale_guard.json").read_text())
    assert run["scale_guard"] == guard and 0.1 < guard["threshold"] <= guard["target"] < 0.5
    # So is the feature distance crossdomain reads (wbc_edge.calibrate.feature_distance); the val split is its cut's source.
    from wbc_edge.calibrate.confidence import load_feature_distance

    fd = load_feature_distance(out)
    assert fd is not None and fd.cut > 0 and fd.quantile == 0.95 and "feature_distance_s" in run["timings"]

    # A finished run is not overwritten without force.
    with pytest.raises(WbcEdgeError, match="already holds a finished run"):
        train_mod.train(cfg, progress=False)


def test_changed_config_on_unfinished_run_is_refused(sample_root, sample_split, tmp_path):
    from wbc_edge.train import prepare_run

    out = tmp_path / "run"
    prepare_run(_tiny_cfg(sample_root, out, sample_split), progress=False)
    with pytest.raises(WbcEdgeError, match="different config.*head_epochs"):
        prepare_run(_tiny_cfg(sample_root, out, sample_split, head_epochs=3), progress=False)
    other = tmp_path / "not_a_run"
    other.mkdir()
    (other / "precious.txt").write_text("keep me")
    with pytest.raises(WbcEdgeError, match="not a wbc-edge run"):
        prepare_run(_tiny_cfg(sample_root, other, sample_split), progress=False)
    assert (other / "precious.txt").read_text() == "keep me"


def test_evaluate_matches_training_report(sample_root, sample_split, tmp_path):
    """The test metrics training records and `wbc-edge evaluate` on the saved model must be the same."""
    from click.testing import CliRunner

    from wbc_edge.cli import main
    from wbc_edge.train import train

    out = tmp_path / "run"
    train(_tiny_cfg(sample_root, out, sample_split, finetune_epochs=1), progress=False)
    res = CliRunner().invoke(main, ["evaluate", str(out / "model.keras"), str(sample_root), "--quiet",
                                    "--out", str(tmp_path / "ev")])
    assert res.exit_code == 0, res.output
    ev = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    tr = json.loads((out / "test_metrics.json").read_text())
    assert ev["confusion"] == tr["confusion"]
    assert (tmp_path / "ev" / "confusion.png").stat().st_size > 0
    res = CliRunner().invoke(main, ["evaluate", str(out / "model.keras"), str(sample_root), "--split", "all",
                                    "--quiet", "--out", str(tmp_path / "ev_all")])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "ev_all" / "metrics.json").read_text())["n"] == 40


# slow (76 s on 2 cores): tf.distribute across two logical CPUs; unchanged training path, run with -m slow
@pytest.mark.slow
def test_mirrored_strategy_on_two_logical_cpus(sample_root, sample_split, tmp_path):
    """Full mode under MirroredStrategy with two logical CPU devices (how the GPU path is tested here)."""
    script = textwrap.dedent(f"""
        import os, json
        os.environ["TF_USE_LEGACY_KERAS"] = "1"
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from wbc_edge.model.network import ModelConfig
        from wbc_edge.train import TrainConfig, make_strategy, train
        s = make_strategy("mirrored")
        cfg = TrainConfig(data_root={str(sample_root)!r}, out_dir={str(tmp_path / 'mirrored')!r},
                          split_manifest={str(sample_split)!r}, mode="full", distribute="mirrored", epochs=1,
                          batch_size=8, model=ModelConfig(alpha=0.35, input_size=96, weights="none"))
        r = train(cfg, progress=False)
        print(json.dumps({{"replicas": s.num_replicas_in_sync, "acc": r.test_accuracy}}))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["replicas"] == 2
    assert (tmp_path / "mirrored" / "model.keras").is_file()


def test_worker_role_from_tf_config(monkeypatch):
    from wbc_edge.train import worker_role

    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert worker_role() == (True, 0)
    cluster = {"worker": ["a:1", "b:1"]}
    for task, expected in (({"type": "worker", "index": 0}, (True, 0)), ({"type": "worker", "index": 1}, (False, 1))):
        monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": task}))
        assert worker_role() == expected
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {**cluster, "chief": ["c:1"]},
                                                "task": {"type": "worker", "index": 0}}))
    assert worker_role() == (False, 0)  # with a chief task, worker 0 is not the chief
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(WbcEdgeError, match="TF_CONFIG"):
        worker_role()


def test_multiworker_needs_a_split_manifest(sample_root, tmp_path, monkeypatch):
    from wbc_edge.train import train

    cfg = _tiny_cfg(sample_root, tmp_path / "run", "x", mode="full", distribute="multiworker")
    cfg.split_manifest = None
    with pytest.raises(WbcEdgeError, match="--split-manifest"):
        train(cfg, progress=False)
    assert not (tmp_path / "run").exists()


def test_full_mode_history_survives_a_resume(tmp_path):
    """BackupAndRestore restarts fit() part-way: the epoch history must come from the state file."""
    from wbc_edge.core.tfcompat import import_tf
    from wbc_edge.train import RunState, history_callback

    _, keras = import_tf()
    state = RunState(tmp_path / "state.json")
    cb = history_callback(keras, state)
    cb.on_epoch_end(0, {"loss": 1.0, "val_accuracy": 0.5})
    cb.on_epoch_end(1, {"loss": 0.8, "val_accuracy": 0.7})
    # a new process after an interruption during epoch 3: epoch 2 is redone by BackupAndRestore
    resumed = history_callback(keras, RunState(tmp_path / "state.json"))
    resumed.on_epoch_end(1, {"loss": 0.7, "val_accuracy": 0.6})
    resumed.on_epoch_end(2, {"loss": 0.5, "val_accuracy": 0.8})
    final = RunState(tmp_path / "state.json")
    assert [r["epoch"] for r in sorted(final.get("history"), key=lambda r: r["epoch"])] == [1, 2, 3]
    assert final.get("best_val_accuracy") == 0.8


def test_multiworker_requires_tf_config(monkeypatch):
    from wbc_edge.train import make_strategy

    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(WbcEdgeError, match="TF_CONFIG"):
        make_strategy("multiworker")


@pytest.mark.slow
def test_real_short_training_beats_chance(pbc_root, tmp_path):
    """Real images, ImageNet weights (WBC_EDGE_IMAGENET_WEIGHTS = path to the no-top .h5), small subset."""
    weights = os.environ.get("WBC_EDGE_IMAGENET_WEIGHTS")
    if not weights or not Path(weights).is_file():
        pytest.skip("set WBC_EDGE_IMAGENET_WEIGHTS to mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5")
    from wbc_edge.model.network import ModelConfig
    from wbc_edge.train import TrainConfig, train

    cfg = TrainConfig(data_root=str(pbc_root), out_dir=str(tmp_path / "run"), limit_per_class=60,
                      model=ModelConfig(alpha=1.0, input_size=128, weights=weights),
                      head_epochs=10, finetune_epochs=2, aug_views=1)
    result = train(cfg, progress=False)
    assert result.test_accuracy > 0.7, result.test_accuracy  # chance is 0.2


def _sha(path):
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_lower_cut_fine_tunes_the_14x14_stage_and_keeps_the_bottom(tmp_path):
    """--finetune-from 7: the activation cache is cut at block 7's input (the 14x14 stage), blocks 7-16 and
    the head are what the fine-tune trains, BatchNorm stays in inference mode, and block 6 and below are
    the frozen bottom.  (The tiny random-init model has dead features, so this checks the mechanism; the
    ablation in benchmarks/robust/ trains it for real.)"""
    from wbc_edge.core.progress import resolve
    from wbc_edge.train.cached import CachedTrainer

    def trainer(cut):
        cfg = tiny_train_config(tmp_path, tmp_path / f"cut{cut}", None, finetune_from=cut).validate()
        return CachedTrainer(cfg, tmp_path / f"cut{cut}", {}, resolve(False))

    for cut, shape in ((7, (6, 6, 24)), (13, (6, 6, 32))):
        tr = trainer(cut)
        assert tuple(tr.bottom.output_shape[1:]) == shape
        tr._set_trainable()
        trained = {layer.name for layer in tr.model.layers if layer.trainable and layer.weights}
        blocks = {int(n.split("_")[1]) for n in trained if n.startswith("block_")}
        assert blocks == set(range(cut, 17)), (cut, sorted(blocks))
        assert {"Conv_1", "predictions"} <= trained
        assert not any(isinstance(tr.model.get_layer(n), tr.keras.layers.BatchNormalization) for n in trained)


def test_finetune_from_outside_the_cached_stages_is_refused(tmp_path):
    from wbc_edge.train import TrainConfig

    with pytest.raises(WbcEdgeError, match="--finetune-from must be a MobileNetV2 block 7..16, got 6"):
        TrainConfig(data_root=str(tmp_path), out_dir=str(tmp_path / "o"), finetune_from=6).validate()


def test_zero_head_epochs_fine_tunes_from_the_initial_head(sample_root, sample_split, tmp_path):
    """`--head-epochs 0` is accepted by the CLI: the run skips the head phase instead of crashing in Keras."""
    from wbc_edge.train import train

    out = tmp_path / "nohead"
    train(_tiny_cfg(sample_root, out, sample_split, head_epochs=0, finetune_epochs=1), progress=False)
    history = json.loads((out / "history.json").read_text())
    assert [r["phase"] for r in history["epochs"]] == ["finetune"]
    assert history["phase_boundaries"] == [0]
    assert (out / "model.keras").is_file()


def test_feature_style_jitters_fine_tune_batches_reproducibly(sample_root, sample_split, tmp_path):
    """`--feature-style` reaches the fine-tune batches (seeded per batch, so the order Keras asks in does not
    matter), the run records it, and 0 leaves the cached activations as they are."""
    from wbc_edge.core.tfcompat import import_tf
    from wbc_edge.train import activation_sequence, train

    _, keras = import_tf()
    views = [np.random.default_rng(v).normal(size=(10, 4, 4, 3)).astype(np.float32) for v in range(2)]
    labels = np.arange(10) % 2

    def batches(style, seed=7):
        seq = activation_sequence(views, labels, 4, None, np.random.default_rng(seed), keras, feature_style=style)
        return [seq[i][0] for i in reversed(range(len(seq)))]

    plain, a, b = batches(0.0), batches(1.0), batches(1.0)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not any(np.allclose(x, y) for x, y in zip(plain, a, strict=True))
    rows = [r for v in views for r in v]
    assert all(any(np.array_equal(r, c) for c in rows) for x in plain for r in x), "0 = the cached rows as is"
    dom = np.arange(10) // 5  # two labs: `--style-mix` reaches the batches too, seeded the same way
    mixed = [activation_sequence(views, labels, 4, None, np.random.default_rng(7), keras, style_mix=1.0,
                                 domains=dom)[i][0] for i in range(3)]
    again = activation_sequence(views, labels, 4, None, np.random.default_rng(7), keras, style_mix=1.0, domains=dom)
    assert all(np.array_equal(m, again[i][0]) for i, m in enumerate(mixed))
    assert not any(np.allclose(m, p) for m, p in zip(mixed, reversed(plain), strict=True))
    labbed = activation_sequence(views, labels, 4, np.ones(10, dtype=np.float32), np.random.default_rng(7), keras,
                                 domains=dom, lab_batches=True)  # `--lab-batches`: half of each batch per lab
    rows_of = {v.tobytes(): i for view in views for i, v in enumerate(view)}
    for b in range(len(labbed)):
        x, y, sw = labbed[b]
        ids = np.array([rows_of[r.tobytes()] for r in x])
        assert len(x) == 4 and (dom[ids] == 1).sum() == 2 and np.array_equal(y, labels[ids]) and len(sw) == 4

    out = tmp_path / "style"
    train(_tiny_cfg(sample_root, out, sample_split, head_epochs=0, finetune_epochs=1, feature_style=0.5),
          progress=False)
    assert json.loads((out / "run.json").read_text())["config"]["feature_style"] == 0.5


def test_consistency_pairs_clean_and_augmented_views_and_adds_their_divergence(sample_root, sample_split, tmp_path):
    """`--consistency`: each batch is the images' clean views then one augmented view of each (same labels and
    weights), the loss adds the pair's Jensen-Shannon divergence (0 when the halves agree), and a run with it
    trains and records it."""
    from wbc_edge.core.tfcompat import import_tf
    from wbc_edge.train import activation_sequence, train
    from wbc_edge.train.cached import consistency_loss
    from wbc_edge.train.config import TrainConfig

    tf, keras = import_tf()
    views = [np.full((10, 2, 2, 1), v, dtype=np.float32) + np.arange(10)[:, None, None, None] / 100
             for v in range(3)]
    labels = np.arange(10) % 2
    seq = activation_sequence(views, labels, 4, {0: 1.0, 1: 3.0}, np.random.default_rng(0), keras, pairs=True)
    for i in range(len(seq)):
        x, y, sw = seq[i]
        n = len(x) // 2
        assert np.all(x[:n].astype(int) == 0) and np.all(x[n:].astype(int) >= 1)   # clean, then augmented
        assert np.allclose(x[:n] % 1, x[n:] % 1)                                   # of the same images
        assert np.array_equal(y[:n], y[n:]) and np.array_equal(sw, np.where(y == 1, 3.0, 1.0))
    y_true = tf.constant([0, 1, 0, 1])
    same = tf.constant([[0.9, 0.1], [0.2, 0.8]] * 2)
    differ = tf.constant([[0.9, 0.1], [0.2, 0.8], [0.1, 0.9], [0.8, 0.2]])
    ce = keras.losses.sparse_categorical_crossentropy
    np.testing.assert_allclose(consistency_loss(tf, keras, 5.0)(y_true, same).numpy(), ce(y_true, same).numpy(),
                               atol=1e-6)
    extra = consistency_loss(tf, keras, 5.0)(y_true, differ).numpy() - ce(y_true, differ).numpy()
    assert np.all(extra > 0.5) and np.all(extra <= 5.0 * np.log(2) + 1e-6) and extra[0] == pytest.approx(extra[2])
    with pytest.raises(WbcEdgeError, match="--consistency"):
        TrainConfig(data_root="d", out_dir="o", consistency=1.0, aug_views=0).validate()

    out = tmp_path / "jsd"
    train(_tiny_cfg(sample_root, out, sample_split, head_epochs=0, finetune_epochs=1, consistency=2.0),
          progress=False)
    assert json.loads((out / "run.json").read_text())["config"]["consistency"] == 2.0
