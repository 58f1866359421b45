"""Narrowing a wider network into a narrower one (issue 33, `--narrow-from`): the channels kept are the source's
strongest, residual groups keep one set, the copy is exact where the dropped channels carried nothing, BatchNorm
statistics are re-estimated from the images, and a run records and resumes its narrowed start."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import tiny_train_config

from wbc_edge.core.errors import ModelFileError, WbcEdgeError


def _pair(keras_alpha_src=0.5, keras_alpha_dst=0.35, size=64):
    from wbc_edge.model.network import ModelConfig, build_model

    src = build_model(ModelConfig(alpha=keras_alpha_src, input_size=size, weights="none"))
    dst = build_model(ModelConfig(alpha=keras_alpha_dst, input_size=size, weights="none"))
    return src, dst


def _silence_all_but_the_kept(src, dst, keras, rng):
    """Give `src` random weights and BatchNorm statistics, then zero the scale and shift of every channel outside
    a random set as wide as `dst`'s layer (one set per residual group): those channels output exactly 0, so a
    correct narrowing reproduces `src`'s outputs."""
    from wbc_edge.model.narrow import _channel_producers

    producer, groups = _channel_producers(src, keras)
    kept: dict[str, np.ndarray] = {}
    for layer in dst.layers:
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)) and not isinstance(
                layer, keras.layers.DepthwiseConv2D):
            root = groups.find(layer.name)
            width = layer.get_weights()[0].shape[-1]
            full = src.get_layer(layer.name).get_weights()[0].shape[-1]
            kept.setdefault(root, np.sort(rng.choice(full, size=width, replace=False)))
    for layer in src.layers:
        w = layer.get_weights()
        if isinstance(layer, keras.layers.BatchNormalization):
            root = groups.find(producer[layer.name])
            gamma, beta, mean, var = (rng.uniform(0.5, 1.5, w[0].shape), rng.normal(0, 0.1, w[0].shape),
                                      rng.normal(0, 0.1, w[0].shape), rng.uniform(0.5, 2.0, w[0].shape))
            off = np.setdiff1d(np.arange(len(gamma)), kept[root])
            gamma[off] = 0.0
            beta[off] = 0.0
            layer.set_weights([a.astype(np.float32) for a in (gamma, beta, mean, var)])
    return kept, groups


def test_narrowing_keeps_the_strongest_channels_and_reproduces_the_source_where_the_rest_is_silent():
    from wbc_edge.core.tfcompat import import_tf
    from wbc_edge.model.narrow import narrow_into

    tf, keras = import_tf()
    src, dst = _pair()
    rng = np.random.default_rng(0)
    kept, groups = _silence_all_but_the_kept(src, dst, keras, rng)
    done = narrow_into(dst, src, keras)
    assert done["kept_fresh"] == [] and done["copied"] > 50
    # A residual stage shares one set: block_2 adds to block_1's output, so both projections keep the same channels
    assert groups.find("block_1_project") == groups.find("block_2_project")
    np.testing.assert_array_equal(dst.get_layer("block_1_project").get_weights()[0],
                                  src.get_layer("block_1_project").get_weights()[0][..., kept[
                                      groups.find("block_1_project")]][:, :, kept[groups.find("block_1_expand")]])
    x = rng.uniform(0, 255, size=(4, 64, 64, 3)).astype(np.float32)
    np.testing.assert_allclose(dst(x, training=False).numpy(), src(x, training=False).numpy(), atol=1e-5)


def test_a_source_narrower_than_the_target_is_refused():
    from wbc_edge.core.tfcompat import import_tf
    from wbc_edge.model.narrow import narrow_into

    _, keras = import_tf()
    src, dst = _pair(0.35, 0.5)
    with pytest.raises(ModelFileError, match="at least as wide"):
        narrow_into(dst, src, keras)


def test_recalibrated_batchnorm_holds_the_statistics_of_its_inputs():
    from wbc_edge.core.tfcompat import import_tf
    from wbc_edge.model.narrow import recalibrate_batchnorm

    _, keras = import_tf()
    _, model = _pair()
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 255, size=(40, 64, 64, 3)).astype(np.float32)
    assert recalibrate_batchnorm(model, x, keras, batch_size=16) == 52
    for name in ("bn_Conv1", "block_8_depthwise_BN", "Conv_1_bn"):
        bn = model.get_layer(name)
        a = keras.Model(model.input, bn.input)(x, training=False).numpy().reshape(-1, bn.input.shape[-1])
        mean, var = bn.get_weights()[2:]
        np.testing.assert_allclose(mean, a.mean(0), rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(var, a.var(0), rtol=1e-3, atol=1e-4)


def test_narrow_from_names_what_is_wrong(tmp_path, sample_root, tiny_run_dir):
    from wbc_edge.model.network import ModelConfig

    split = tiny_run_dir / "split.csv"
    with pytest.raises(ModelFileError, match="--narrow-from .*nothing there"):
        tiny_train_config(sample_root, tmp_path / "a", split,
                          model=ModelConfig(alpha=0.3, input_size=64, weights="none",
                                            narrow_from=str(tmp_path / "missing"))).validate()
    (tmp_path / "w.txt").write_text("x")
    with pytest.raises(ModelFileError, match="not a .keras model or a .h5"):
        tiny_train_config(sample_root, tmp_path / "a", split,
                          model=ModelConfig(alpha=0.3, input_size=64, weights="none",
                                            narrow_from=str(tmp_path / "w.txt"))).validate()
    with pytest.raises(WbcEdgeError, match="replaces --weights"):
        tiny_train_config(sample_root, tmp_path / "a", split,
                          model=ModelConfig(alpha=0.3, input_size=64, weights="imagenet",
                                            narrow_from=str(tiny_run_dir))).validate()
    with pytest.raises(WbcEdgeError, match="--narrow-recalibrate needs --narrow-from"):
        tiny_train_config(sample_root, tmp_path / "a", split, narrow_recalibrate=True).validate()
    assert not (tmp_path / "a").exists()


def test_a_narrowed_run_records_its_start_and_resumes_from_the_saved_weights(sample_root, tiny_run_dir, tmp_path):
    """alpha 0.3 from the tiny 0.35 run: the run starts from the narrowed weights (saved once), records the
    narrowing in run.json, and a resumed run loads the saved start instead of narrowing again."""
    from wbc_edge.core.tfcompat import import_tf
    from wbc_edge.model.network import ModelConfig, build_model, load_model
    from wbc_edge.train import train
    from wbc_edge.train.initial import RECALIBRATION_IMAGES, initial_model

    _, keras = import_tf()
    out = tmp_path / "narrow"
    cfg = tiny_train_config(sample_root, out, tiny_run_dir / "split.csv", finetune_epochs=1, narrow_recalibrate=True,
                            model=ModelConfig(alpha=0.3, input_size=64, weights="none",
                                              narrow_from=str(tiny_run_dir)))
    train(cfg, progress=False)
    run = json.loads((out / "run.json").read_text())
    rec = run["timings"]["narrowed"]
    assert rec["source"] == str(tiny_run_dir) and rec["kept_fresh"] == []
    assert 0 < rec["batchnorm_recalibrated_on"] <= RECALIBRATION_IMAGES
    assert run["config"]["model"]["narrow_from"] == str(tiny_run_dir)
    model = load_model(out / "model.keras")
    assert model.get_layer("Conv_1").get_weights()[0].shape[-2] < \
        load_model(tiny_run_dir / "model.keras").get_layer("Conv_1").get_weights()[0].shape[-2]
    # The saved start is what a resumed run begins from: not a fresh narrowing, not a random init.
    saved = build_model(cfg.model)
    saved.load_weights(out / "checkpoints" / "narrowed.weights.h5")

    class Quiet:
        def say(self, *_):
            pass

    again, record = initial_model(cfg, out, {}, Quiet(), keras)  # no data given: it must not narrow again
    assert record == rec
    for a, b in zip(again.get_weights(), saved.get_weights()):  # noqa: B905
        np.testing.assert_array_equal(a, b)


def test_a_width_that_adds_a_residual_the_source_lacks_is_refused():
    """At alpha 0.2 Conv1 and block 0's projection both have 8 channels and keras joins them with an Add that
    the 0.5 source does not have: no channel copy can reproduce that, so it is refused by name."""
    from wbc_edge.core.tfcompat import import_tf
    from wbc_edge.model.narrow import narrow_into

    _, keras = import_tf()
    src, dst = _pair(0.5, 0.2)
    with pytest.raises(ModelFileError, match="residual Add"):
        narrow_into(dst, src, keras)
