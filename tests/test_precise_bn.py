"""Precise BatchNorm (`model.batchnorm`, full mode's `--precise-bn`): the statistics it sets are the ones the
network normalises with in training, only trainable BatchNorm layers move, and in a full-mode run the val
figure that picks the saved weights is what the saved model scores (the re-estimate happens before val)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import tiny_train_config

from wbc_edge.core.errors import WbcEdgeError


def _tiny_model(keras, size=32):
    from wbc_edge.model.network import ModelConfig, build_model

    return build_model(ModelConfig(alpha=0.35, input_size=size, weights="none"))


def _bns(model, keras):
    return [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]


def test_after_precise_bn_inference_equals_training_mode_on_the_same_images():
    """With the whole sample in one batch, training mode normalises every layer by exactly the population
    statistics precise BN stores: inference-mode outputs must then equal training-mode ones, layer by layer.
    Keras' defaults (mean 0, var 1) are far from that on random weights."""
    from wbc_edge.core.tfcompat import import_tf
    from wbc_edge.model.batchnorm import precise_batchnorm

    _, keras = import_tf()
    model = _tiny_model(keras)
    x = np.random.default_rng(0).uniform(0, 255, (24, 32, 32, 3)).astype(np.float32)
    bns = _bns(model, keras)
    probe = keras.Model(model.input, [bn.output for bn in bns])
    before = [a.numpy() for a in probe(x, training=False)]
    train_mode = [a.numpy() for a in probe(x, training=True)]
    assert max(np.abs(b - t).max() for b, t in zip(before, train_mode, strict=True)) > 1.0  # the test can fail
    gammas = [bn.get_weights()[:2] for bn in bns]
    assert precise_batchnorm(model, x, keras, batch_size=len(x)) == len(bns)
    after = [a.numpy() for a in probe(x, training=False)]
    for a, t in zip(after, train_mode, strict=True):
        np.testing.assert_allclose(a, t, atol=2e-3 * max(1.0, float(np.abs(t).max())))
    for bn, (g, b) in zip(bns, gammas, strict=True):  # scale and shift untouched
        np.testing.assert_array_equal(bn.get_weights()[0], g)
        np.testing.assert_array_equal(bn.get_weights()[1], b)


def test_small_batches_average_to_the_population_statistics_and_frozen_layers_stay():
    """The first BatchNorm's input does not depend on any other BatchNorm: its estimate from batches of 5 must
    equal numpy's mean and variance of that input over all images.  A frozen layer keeps its statistics."""
    from wbc_edge.core.tfcompat import import_tf
    from wbc_edge.model.batchnorm import precise_batchnorm

    _, keras = import_tf()
    model = _tiny_model(keras)
    bns = _bns(model, keras)
    frozen = bns[-1]
    frozen.trainable = False
    kept = [w.copy() for w in frozen.get_weights()]
    x = np.random.default_rng(1).uniform(0, 255, (23, 32, 32, 3)).astype(np.float32)
    first = keras.Model(model.input, bns[0].input)(x).numpy().reshape(-1, bns[0].input.shape[-1])
    assert precise_batchnorm(model, x, keras, batch_size=5) == len(bns) - 1
    _, _, mean, var = bns[0].get_weights()
    np.testing.assert_allclose(mean, first.mean(0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(var, first.var(0), rtol=1e-3, atol=1e-4)
    for a, b in zip(frozen.get_weights(), kept, strict=True):
        np.testing.assert_array_equal(a, b)


def test_precise_bn_must_not_be_negative(sample_root, tiny_run_dir, tmp_path):
    with pytest.raises(WbcEdgeError, match="--precise-bn must be >= 0"):
        tiny_train_config(sample_root, tmp_path / "a", tiny_run_dir / "split.csv", precise_bn=-1).validate()


def test_a_full_run_from_scratch_saves_the_statistics_its_val_figure_was_scored_with(sample_root, tiny_run_dir,
                                                                                       tmp_path):
    """Full mode, random start: every epoch has a val figure, the saved model (best epoch) scores exactly the
    best val accuracy recorded, and its first BatchNorm holds the statistics of its input over the trainer's
    precise-BN views - so the statistics were re-estimated before val and saved with the weights."""
    from types import SimpleNamespace

    from wbc_edge.data import SplitManifest
    from wbc_edge.model.network import load_model
    from wbc_edge.core.tfcompat import import_tf
    from wbc_edge.train import train
    from wbc_edge.train.full import FullTrainer
    from wbc_edge.train.inputs import load_pixels

    _, keras = import_tf()

    out = tmp_path / "full"
    cfg = tiny_train_config(sample_root, out, tiny_run_dir / "split.csv", mode="full", epochs=2, precise_bn=16)
    train(cfg, progress=False)
    history = json.loads((out / "history.json").read_text())
    val = [r["value"] if isinstance(r, dict) else r for r in history["val_accuracy"]]
    assert len(val) == 2
    paths, labels = SplitManifest.load(out / "split.csv").files("val", str(sample_root))
    x = np.stack([load_pixels(p, 96, None, cfg.augment) for p in paths]).astype(np.float32)
    model = load_model(out / "model.keras")
    pred = model.predict(x, verbose=0).argmax(1)
    assert float(np.mean(pred == np.asarray(labels))) == pytest.approx(max(val), abs=1e-6)
    manifest = SplitManifest.load(out / "split.csv")
    trainer = SimpleNamespace(cfg=cfg, size=96, data={"train": manifest.files("train", str(sample_root))})
    views = FullTrainer._precise_bn_views(trainer)
    assert len(views) == 16
    bn = _bns(model, keras)[0]
    first = keras.Model(model.input, bn.input)(views).numpy().reshape(-1, bn.input.shape[-1])
    _, _, mean, var = bn.get_weights()
    np.testing.assert_allclose(mean, first.mean(0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(var, first.var(0), rtol=1e-3, atol=1e-4)
