"""A MobileNetV2 cut after an upper block (`ModelConfig.last_block`, `train --last-block`; issue 33): the blocks
above are gone, a 1x1 convolution to 4x the block's channels ends the backbone, the ImageNet bottom still loads,
a bad value is refused before anything is written, and the cached mode trains it."""

from __future__ import annotations

import json

import pytest
from helpers import tiny_train_config

from wbc_edge.core.errors import WbcEdgeError


def test_the_blocks_above_are_dropped_and_a_wide_1x1_ends_the_backbone():
    from wbc_edge.model.network import ModelConfig, build_model

    whole = build_model(ModelConfig(alpha=1.0, input_size=96, weights="none"))
    cut = build_model(ModelConfig(alpha=1.0, input_size=96, weights="none", last_block=13))
    names = {layer.name for layer in cut.layers}
    assert "block_13_project_BN" in names and not any(n.startswith(("block_14", "block_16", "Conv_1")) for n in names)
    head = cut.get_layer("head_conv")
    assert head.input.shape[-1] == 160 and head.output.shape[-1] == 640
    assert cut.get_layer("pool").input.name.startswith("head_relu")
    # The top blocks hold most weights: what makes an int8 file under 1 MB possible at width 1.0.
    assert cut.count_params() < 1_000_000 < 2_000_000 < whole.count_params()
    # Block 14 is residual: the cut takes its sum, not the projection alone.
    b14 = build_model(ModelConfig(alpha=0.35, input_size=96, weights="none", last_block=14))
    assert b14.get_layer("head_conv").input.name.startswith("block_14_add")


def test_the_imagenet_bottom_loads_into_a_cut_network(tmp_path):
    """Every kept backbone layer gets the file's weights (the same as in the whole network built from it)."""
    import numpy as np

    from wbc_edge.core.tfcompat import import_tf
    from wbc_edge.model.network import ModelConfig, build_model

    _, keras = import_tf()
    path = tmp_path / "no_top.h5"  # a no-top file like the ImageNet one, random weights, alpha 0.35
    keras.applications.MobileNetV2(input_shape=(96, 96, 3), include_top=False, alpha=0.35,
                                   weights=None).save_weights(str(path))
    whole = build_model(ModelConfig(alpha=0.35, input_size=96, weights=str(path)))
    cut = build_model(ModelConfig(alpha=0.35, input_size=96, weights=str(path), last_block=13))
    for layer in cut.layers:
        if layer.name.startswith(("Conv1", "expanded_conv", "block_")) and layer.get_weights():
            for a, b in zip(layer.get_weights(), whole.get_layer(layer.name).get_weights(), strict=True):
                np.testing.assert_array_equal(a, b)


def test_a_bad_last_block_is_refused_before_the_run_dir(sample_root, tiny_run_dir, tmp_path):
    from wbc_edge.model.network import ModelConfig, build_model

    split = tiny_run_dir / "split.csv"
    with pytest.raises(WbcEdgeError, match="--last-block must be a MobileNetV2 block 10..16, got 9"):
        tiny_train_config(sample_root, tmp_path / "a", split,
                          model=ModelConfig(alpha=0.35, input_size=96, weights="none", last_block=9)).validate()
    with pytest.raises(WbcEdgeError, match="--finetune-from 15 is above --last-block 14"):
        tiny_train_config(sample_root, tmp_path / "a", split, finetune_from=15,
                          model=ModelConfig(alpha=0.35, input_size=96, weights="none", last_block=14)).validate()
    assert not (tmp_path / "a").exists()
    with pytest.raises(WbcEdgeError, match="last block 17"):
        build_model(ModelConfig(alpha=0.35, input_size=96, weights="none", last_block=17))


def test_the_cached_mode_trains_a_cut_network_and_records_it(sample_root, tiny_run_dir, tmp_path):
    from wbc_edge.model.network import ModelConfig, load_model
    from wbc_edge.train import train

    out = tmp_path / "b13"
    cfg = tiny_train_config(sample_root, out, tiny_run_dir / "split.csv", head_epochs=1, finetune_epochs=1,
                            model=ModelConfig(alpha=0.35, input_size=96, weights="none", last_block=13))
    train(cfg, progress=False)
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["model"]["last_block"] == 13
    model = load_model(out / "model.keras")
    assert model.get_layer("head_conv").output.shape[-1] == 4 * model.get_layer("head_conv").input.shape[-1]
