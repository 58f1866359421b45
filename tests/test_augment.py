"""The augmentation module: determinism, each family doing what it claims, and where it must never run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from wbc_edge.data.augment import PRESETS, AugmentConfig, augment, preset, shifted_view
from wbc_edge.core.errors import WbcEdgeError


@pytest.fixture(scope="module")
def cell(sample_files):
    from wbc_edge.core.preprocess import preprocess

    return preprocess(sample_files[0][0], 96)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_are_deterministic_per_seed_and_keep_shape(cell, name):
    cfg = preset(name)
    a = augment(cell, np.random.default_rng([1, 2, 3]), cfg)
    b = augment(cell, np.random.default_rng([1, 2, 3]), cfg)
    assert a.dtype == np.uint8 and a.shape == cell.shape
    assert np.array_equal(a, b)
    if name != "none":
        others = [augment(cell, np.random.default_rng([1, 2, k]), cfg) for k in range(4, 8)]
        assert any(not np.array_equal(a, o) for o in others), "different seeds must give different views"
    else:
        assert np.array_equal(a, cell)


def test_zoom_in_magnifies_the_cell(cell):
    """A zoom-in must make the dark (stained) area larger: the scale factor is what matters off-domain."""
    cfg = AugmentConfig(dihedral=False, brightness=0, contrast=0, saturation=0, stain=0,
                        zoom_p=1.0, zoom_min=2.5, zoom_max=2.5)
    zoomed = augment(cell, np.random.default_rng(0), cfg)
    dark = lambda px: float(np.mean(px.mean(axis=2) < 140))  # noqa: E731
    assert dark(zoomed) > 3 * dark(cell) > 0


def test_zoom_out_pads_with_the_border_colour(cell):
    cfg = AugmentConfig(dihedral=False, brightness=0, contrast=0, saturation=0, stain=0,
                        zoom_p=1.0, zoom_min=0.5, zoom_max=0.5)
    out = augment(cell, np.random.default_rng(0), cfg)
    border = np.median(np.concatenate([cell[0], cell[-1], cell[:, 0], cell[:, -1]]), axis=0)
    assert np.abs(out[0, 0].astype(float) - border).max() <= 2


def test_grey_and_tint_and_hed_change_colour_not_geometry(cell):
    grey = augment(cell, np.random.default_rng(0), AugmentConfig(dihedral=False, grey_p=1.0, brightness=0,
                                                                 contrast=0, saturation=0, stain=0))
    assert np.abs(grey[..., 0].astype(int) - grey[..., 2]).max() <= 1
    warm = AugmentConfig(dihedral=False, tint_p=1.0, tint=0.4, brightness=0, contrast=0, saturation=0, stain=0)
    tinted = [augment(cell, np.random.default_rng(k), warm) for k in range(8)]
    ratios = [t[..., 2].mean() / max(t[..., 0].mean(), 1) for t in tinted]
    assert max(ratios) - min(ratios) > 0.1, "white-balance casts must vary the blue/red balance"
    hed = augment(cell, np.random.default_rng(0), AugmentConfig(dihedral=False, hed_p=1.0, hed_scale=0.3,
                                                                hed_bias=0.05, brightness=0, contrast=0,
                                                                saturation=0, stain=0))
    assert not np.array_equal(hed, cell)
    # Pixel positions are unchanged: the edge structure (luma gradient sign) is mostly preserved.
    g0 = np.sign(np.diff(cell.mean(axis=2), axis=1))
    g1 = np.sign(np.diff(hed.mean(axis=2), axis=1))
    assert np.mean(g0 == g1) > 0.6


def test_restain_recolours_the_dyes_apart_and_leaves_other_presets_alone(cell):
    """Re-stain moves each dye's colour on its own: the nucleus (haematoxylin-rich, dark) and the background change
    hue by different amounts, which a global hue rotation cannot do; with restain_p 0 (every other preset) it
    draws nothing from the rng, so those presets' views are what they were."""
    from dataclasses import replace

    from wbc_edge.data.augment import _restain

    f = cell.astype(np.float32)
    dark = f.mean(axis=2) < np.percentile(f.mean(axis=2), 10)
    light = f.mean(axis=2) > np.percentile(f.mean(axis=2), 70)

    def hue(px, mask):
        m = px[mask].mean(axis=0)
        return np.arctan2(np.sqrt(3) * (m[1] - m[2]), 2 * m[0] - m[1] - m[2])

    shifts = []
    for k in range(6):
        out = _restain(f, np.random.default_rng(k), 0.2)
        assert out.shape == f.shape and np.array_equal(out, _restain(f, np.random.default_rng(k), 0.2))
        shifts.append((hue(out, dark) - hue(f, dark), hue(out, light) - hue(f, light)))
    d = np.array(shifts)
    assert np.max(np.abs(d[:, 0] - d[:, 1])) > 0.05, "nucleus and background must be able to shift apart"
    robust = preset("robust")
    assert robust.restain_p == 0 and preset("restain").restain_p > 0
    for k in range(4):
        rng_a, rng_b = np.random.default_rng([7, k]), np.random.default_rng([7, k])
        assert np.array_equal(augment(cell, rng_a, robust), augment(cell, rng_b, replace(robust, restain=0.3)))


def test_randconv_changes_local_texture_keeps_channel_statistics_and_leaves_other_presets_alone(cell):
    """The random convolution (preset `randconv`) redraws local texture, not the image's overall colour: each
    channel keeps its mean and gains no spread, while the pixel-to-pixel pattern changes; with randconv_p 0 it
    draws nothing from the rng, so the other presets' views are what they were."""
    from dataclasses import replace

    from wbc_edge.data.augment import _randconv

    f = cell.astype(np.float32)
    corrs = []
    for k in range(8):
        out = _randconv(f, np.random.default_rng(k), 1.0)
        assert out.shape == f.shape and np.array_equal(out, _randconv(f, np.random.default_rng(k), 1.0))
        assert np.allclose(out.mean(axis=(0, 1)), f.mean(axis=(0, 1)), atol=0.5)
        assert np.all(out.std(axis=(0, 1)) <= f.std(axis=(0, 1)) + 1e-3)  # a mix of two arrays of that spread
        corrs.append(np.corrcoef(out.mean(axis=2).ravel(), f.mean(axis=2).ravel())[0, 1])
    assert min(corrs) < 0.95 and np.median(corrs) < 0.995, f"the convolution must change the pattern: {corrs}"
    robust = preset("robust")
    assert robust.randconv_p == 0 and preset("randconv").randconv_p > 0
    for k in range(4):
        rng_a, rng_b = np.random.default_rng([8, k]), np.random.default_rng([8, k])
        assert np.array_equal(augment(cell, rng_a, robust), augment(cell, rng_b, replace(robust, randconv=0.9)))


def test_shifted_view_is_seeded_and_tight(cell):
    a = shifted_view(cell, np.random.default_rng(5))
    assert np.array_equal(a, shifted_view(cell, np.random.default_rng(5)))
    assert a.shape == cell.shape and a.dtype == np.uint8


def test_bad_strengths_are_refused():
    with pytest.raises(WbcEdgeError, match="probability"):
        preset("robust", zoom_p=1.5)
    with pytest.raises(WbcEdgeError, match="zoom_min"):
        preset("robust", zoom_min=3.0, zoom_max=1.0)
    with pytest.raises(WbcEdgeError, match="unknown augmentation preset"):
        preset("extreme")
    with pytest.raises(WbcEdgeError, match="augmentation"):
        preset("robust", no_such_strength=1)


def test_train_config_records_the_augmentation():
    """config.json / run.json hold the recipe's name and every strength (what a resume compares)."""
    from dataclasses import asdict

    from wbc_edge.train import TrainConfig

    cfg = TrainConfig(data_root="d", out_dir="o", aug_preset="colour", augment=preset("colour"))
    stored = json.loads(json.dumps(cfg.to_dict()))
    assert stored["aug_preset"] == "colour" and stored["augment"] == asdict(preset("colour"))
    default = TrainConfig(data_root="d", out_dir="o")
    assert default.aug_preset == "robust" and default.augment == preset("robust")


def test_augmentation_never_runs_in_runtime_evaluation_or_reference():
    """The runtime, evaluation, the cross-domain report and the Keras parity path must not import the
    augmentation module; export uses it only for int8 calibration / QAT images, via augment_share.

    (The CLI itself imports it: the train and adapt commands read their defaults - the recipe included -
    from their config dataclasses.  Importing is not running: the check here is on the library paths.)"""
    root = Path(__file__).resolve().parents[1]
    code = ("import sys\n"
            "import wbc_edge.runtime, wbc_edge.metrics, wbc_edge.model.scoring, wbc_edge.bench.crossdomain, "
            "wbc_edge.core.preprocess\n"
            "bad = [m for m in sys.modules if m.startswith('wbc_edge.data.augment')]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True)
    # The Keras reference / parity pixels come straight from preprocess_batch; augment only inside augment_share.
    sources = {p.name: p.read_text() for p in (root / "wbc_edge" / "export").glob("*.py")}
    users = [name for name, src in sources.items() if "import augment" in src]
    assert len(users) == 1, users
    assert "def augment_share(" in sources[users[0]]


def test_augment_share_is_seeded_and_partial(cell):
    from wbc_edge.export import augment_share

    batch = np.stack([cell] * 10)
    a, n = augment_share(batch, "robust", 0.5, seed=3)
    b, _ = augment_share(batch, "robust", 0.5, seed=3)
    assert n == 5 and np.array_equal(a, b)
    changed = [not np.array_equal(a[i], cell) for i in range(10)]
    assert sum(changed) == 5
    assert np.array_equal(batch[0], cell), "the input batch is not modified"
    same, n0 = augment_share(batch, None, 0.5, seed=3)
    assert n0 == 0 and same is batch


def test_preview_aug_writes_a_png(sample_root, tmp_path):
    from click.testing import CliRunner
    from PIL import Image

    from wbc_edge.cli import main

    out = tmp_path / "grid.png"
    res = CliRunner().invoke(main, ["data", "preview-aug", str(sample_root), "--out", str(out), "--per-class", "1",
                                    "--views", "2", "--input-size", "64"])
    assert res.exit_code == 0, res.output
    assert "ms per augmented view" in res.output
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[0] == 4 * 128 and im.size[1] == 5 * (128 + 18)


def test_feature_style_jitter_redraws_statistics_of_the_chosen_samples_only():
    """DSU on cached activations: the chosen samples keep their spatial pattern (the map normalised by its
    own mean/std is unchanged) but get new per-channel statistics; the others are untouched; seeded."""
    from wbc_edge.data.augment import feature_style_jitter

    x = np.random.default_rng(0).normal(1.0, 3.0, size=(16, 7, 7, 8)).astype(np.float32)
    x *= np.random.default_rng(1).uniform(0.5, 2.0, size=(16, 1, 1, 8)).astype(np.float32)
    y = feature_style_jitter(x, np.random.default_rng(5), 0.5)
    assert y.dtype == np.float32 and y.shape == x.shape
    assert np.array_equal(y, feature_style_jitter(x, np.random.default_rng(5), 0.5))
    moved = ~np.all(np.isclose(y, x), axis=(1, 2, 3))
    assert 0 < moved.sum() < 16, "p = 0.5 jitters some samples, not all"

    def normalised(a):
        return (a - a.mean(axis=(1, 2), keepdims=True)) / a.std(axis=(1, 2), keepdims=True)

    # (DSU draws std around its own value without clipping, so a channel may flip sign: compare magnitudes)
    assert np.allclose(np.abs(normalised(y)), np.abs(normalised(x)), atol=1e-3), "the spatial pattern is kept"
    assert not np.allclose(y[moved].mean(axis=(1, 2)), x[moved].mean(axis=(1, 2)), atol=1e-3)
    assert feature_style_jitter(x, np.random.default_rng(5), 0.0) is x
    assert np.all(~np.all(np.isclose(feature_style_jitter(x, np.random.default_rng(5), 1.0), x), axis=(1, 2, 3)))
    with pytest.raises(WbcEdgeError, match="--feature-style"):
        from wbc_edge.train import TrainConfig
        TrainConfig(data_root="d", out_dir="o", feature_style=1.5).validate()


def test_feature_style_mix_blends_each_chosen_sample_towards_another_lab():
    """MixStyle between labs: a chosen sample keeps its normalised pattern and takes per-channel statistics
    between its own and those of a sample of the *other* lab (lab 0 near 0, lab 1 near 10: a mixed lab-0
    sample moves up, never down); unchosen samples are untouched; seeded; one lab in the batch still mixes."""
    from wbc_edge.data.augment import feature_style_mix

    rng = np.random.default_rng(0)
    dom = np.array([0] * 6 + [1] * 2)
    x = (rng.normal(0.0, 1.0, size=(8, 5, 5, 4)) + 10.0 * dom[:, None, None, None]).astype(np.float32)
    y = feature_style_mix(x, dom, np.random.default_rng(3), 1.0)
    assert y.dtype == np.float32 and np.array_equal(y, feature_style_mix(x, dom, np.random.default_rng(3), 1.0))
    m0, m1 = x.mean(axis=(1, 2)), y.mean(axis=(1, 2))
    assert np.all(m1[dom == 0] >= m0[dom == 0] - 1e-4) and np.all(m1[dom == 1] <= m0[dom == 1] + 1e-4)
    assert np.all((m1 > -1.5) & (m1 < 11.5)), "mixed statistics lie between the two labs'"
    assert (np.abs(m1 - m0) > 0.5).any(), "Beta(0.1, 0.1) moves at least some samples far"

    def normalised(a):
        return (a - a.mean(axis=(1, 2), keepdims=True)) / a.std(axis=(1, 2), keepdims=True)

    assert np.allclose(normalised(y), normalised(x), atol=1e-3), "the spatial pattern is kept"
    some = feature_style_mix(x, dom, np.random.default_rng(3), 0.3)
    same = np.all(np.isclose(some, x), axis=(1, 2, 3))
    assert same.any() and (~same).any()
    assert feature_style_mix(x, dom, np.random.default_rng(3), 0.0) is x
    assert not np.allclose(feature_style_mix(x[:6], dom[:6], np.random.default_rng(3), 1.0), x[:6])
    from wbc_edge.train import TrainConfig
    with pytest.raises(WbcEdgeError, match="--style-mix needs"):
        TrainConfig(data_root="d", out_dir="o", style_mix=0.5).validate()
    with pytest.raises(WbcEdgeError, match="--style-mix must"):
        TrainConfig(data_root="d", out_dir="o", style_mix=2.0).validate()
