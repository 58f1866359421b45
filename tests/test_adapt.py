"""wbc_edge.adapt / `wbc-edge adapt`: the local split (deterministic, stratified, group-aware, tiny classes),
one-line errors for bad local folders, and an adapted run directory that evaluate and export accept.

The heavy test adapts the tiny fixture model (alpha 0.35, 96 px) on a copy of the shipped samples; the real
learning curve is benchmarks/adapt/ (not part of the default suite).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from wbc_edge.cli import main
from wbc_edge.core.labels import WBC5, WBC5_LABELS


def _local_copy(sample_root: Path, dest: Path, per_class: dict[str, int] | None = None) -> Path:
    """A local ImageFolder with the first n sample images of each class (all when not given)."""
    for c in WBC5:
        n = (per_class or {}).get(c)
        if n == 0:
            continue
        files = sorted(p for p in (sample_root / c).iterdir() if p.suffix.lower() in (".jpg", ".png"))
        (dest / c.capitalize()).mkdir(parents=True)  # folder names are matched case-insensitively
        for p in files[:n]:
            shutil.copyfile(p, dest / c.capitalize() / p.name)
    return dest


def _split(root: Path, **kw):
    from wbc_edge.adapt import make_adapt_split, scan_local

    scan = scan_local(root, WBC5_LABELS)
    return make_adapt_split(scan.records, scan.duplicates(), **kw)


# --- the split (numpy + Pillow only) -----------------------------------------------------------------------

def test_split_is_deterministic_stratified_and_keeps_a_test_image_per_class(tmp_path, sample_root):
    local = _local_copy(sample_root, tmp_path / "lab", {"basophil": 1, "eosinophil": 3})
    a = _split(local, per_class=5, seed=7)
    b = _split(local, per_class=5, seed=7)
    assert a.to_bytes() == b.to_bytes()                       # same seed -> byte-identical split.csv
    assert _split(local, per_class=5, seed=8).to_bytes() != a.to_bytes()
    s = a.summary()
    assert s["train"] == {"basophil": 0, "eosinophil": 2, "lymphocyte": 5, "monocyte": 5, "neutrophil": 5}
    for c in WBC5:                                         # every class keeps >= 1 test image
        assert s["test"][c] >= 1
        assert s["train"][c] + s["val"][c] + s["test"][c] == {"basophil": 1, "eosinophil": 3}.get(c, 8)
    assert s["val"]["lymphocyte"] == 1 and s["test"]["lymphocyte"] == 2   # floor(0.5 * 3) val, rest test
    # Without --per-class: hold out 30 % (>= 1) of each class.
    h = _split(local, holdout_fraction=0.3, seed=7).summary()
    assert h["train"]["lymphocyte"] == 6 and h["train"]["eosinophil"] == 2 and h["train"]["basophil"] == 0


def test_split_never_separates_duplicates(tmp_path, sample_root):
    local = _local_copy(sample_root, tmp_path / "lab")
    src = sorted((local / "Neutrophil").iterdir())[0]
    for i in range(3):  # three byte-identical copies of one cell
        shutil.copyfile(src, local / "Neutrophil" / f"copy{i}.jpg")
    for seed in range(6):
        rows = _split(local, per_class=4, seed=seed).rows
        splits = {r.split for r in rows if r.sha256 == rows[[r.path for r in rows].index(
            "Neutrophil/" + src.name)].sha256}
        assert len(splits) == 1


def test_near_duplicates_across_classes_are_split_by_class_exact_copies_are_refused(tmp_path, sample_root):
    """Small tight crops can hash alike across classes (Tecom's 120 px cells): such a near-duplicate group is
    split by class; the same bytes filed under two classes is a real label conflict."""
    from PIL import Image

    from wbc_edge.core.errors import DatasetError

    local = _local_copy(sample_root, tmp_path / "lab")
    src = sorted((local / "Neutrophil").iterdir())[0]
    with Image.open(src) as im:
        im.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(local / "Monocyte" / "flipped.png")
    rows = {r.path: r for r in _split(local, per_class=4, seed=0).rows}
    a, b = rows["Monocyte/flipped.png"], rows["Neutrophil/" + src.name]
    assert a.group != b.group and a.group.split("-")[0] == b.group.split("-")[0]  # one hash group, split by class
    shutil.copyfile(src, local / "Monocyte" / "copy.jpg")
    with pytest.raises(DatasetError, match="label conflict: the same image is filed under monocyte and neutrophil"):
        _split(local, per_class=4, seed=0)


# --- bad local folders: one line, naming the folder or file, before any model is loaded --------------------

@pytest.mark.parametrize("case, expected", [
    ("empty", "dataset folder is empty"),
    ("one_class", "only one class (lymphocyte) has images"),
    ("unknown", "unknown class folder 'blasts'"),
    ("corrupt", "Lymphocyte/broken.jpg"),
    ("too_few", "keep images to adapt with"),
])
def test_bad_local_folder_gives_one_line_error(tmp_path, sample_root, case, expected):
    local = tmp_path / "lab"
    local.mkdir()
    if case == "one_class":
        _local_copy(sample_root, tmp_path / "src", {"lymphocyte": 8})
        shutil.copytree(tmp_path / "src" / "Lymphocyte", local / "Lymphocyte")
    elif case == "unknown":
        _local_copy(sample_root, local, {"basophil": 2, "eosinophil": 2, "lymphocyte": 2, "monocyte": 2,
                                          "neutrophil": 2})
        (local / "blasts").mkdir()
    elif case == "corrupt":
        _local_copy(sample_root, local)
        (local / "Lymphocyte" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    elif case == "too_few":  # every class has one image: all are held out, nothing is left to adapt with
        _local_copy(sample_root, local, {c: 1 for c in WBC5})
    fake_model = tmp_path / "model.keras"  # never loaded: the folder is checked first
    fake_model.write_bytes(b"x")
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["adapt", str(fake_model), str(local), "--out", str(out), "--no-replay"])
    assert res.exit_code == 1, res.output
    lines = [line for line in res.output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1 and expected in lines[0], res.output
    assert "Traceback" not in res.output
    assert not out.exists()  # nothing written for a refused folder


def test_skip_bad_and_system_files_are_not_errors(tmp_path, sample_root):
    from wbc_edge.adapt import scan_local
    from wbc_edge.core.errors import DatasetError

    local = _local_copy(sample_root, tmp_path / "lab")
    (local / "Monocyte" / ".DS_Store").write_bytes(b"\0\0")
    assert len(scan_local(local, WBC5_LABELS).records) == 40                 # a .DS_Store is not an error
    (local / "Monocyte" / "empty.png").write_bytes(b"")
    with pytest.raises(DatasetError, match=r"Monocyte/empty.png: .*--skip-bad"):
        scan_local(local, WBC5_LABELS)
    assert len(scan_local(local, WBC5_LABELS, skip_bad=True).records) == 40


# --- adapting the tiny model: an ordinary run directory ---------------------------------------------------

@pytest.fixture(scope="module")
def adapted_run(tiny_run_dir, sample_root, tmp_path_factory):
    from wbc_edge.adapt import AdaptConfig, adapt

    base = tmp_path_factory.mktemp("adapt")
    local = _local_copy(sample_root, base / "lab")
    cfg = AdaptConfig(source=str(tiny_run_dir), data_root=str(local), out_dir=str(base / "run"), per_class=4,
                      aug_views=1, head_epochs=2, min_steps=4, finetune_epochs=1, batch_size=8, replay_images=10,
                      seed=3, interpolate=True)  # --keep-source: the whole path, end to end
    res = adapt(cfg, progress=False)
    return res, local, cfg


def test_adapt_writes_a_run_directory(adapted_run, tiny_run_dir, sample_root):
    from wbc_edge.core.atomic import sha256_file
    from wbc_edge.data import SplitManifest

    res, local, cfg = adapted_run
    run = res.run_dir
    for name in ("model.keras", "split.csv", "run.json", "config.json", "history.json", "calibration.json",
                 "test_metrics.json", "test_confusion.json"):
        assert (run / name).is_file(), name
    info = json.loads((run / "run.json").read_text())
    assert info["config"]["data_root"] == str(local)           # export / evaluate find the local images here
    assert info["config"]["mode"] == "adapt"
    assert info["split_manifest_sha256"] == sha256_file(run / "split.csv")
    assert info["model_sha256"] == sha256_file(run / "model.keras")
    assert info["source"]["model_sha256"] == sha256_file(tiny_run_dir / "model.keras")
    # Replay defaults to the source run's data root and the train split of its split.csv.
    assert info["replay"]["images"] == 10 and info["replay"]["data_root"] == str(sample_root)
    assert info["replay"]["split_manifest"] == str(tiny_run_dir / "split.csv")
    assert info["split_counts"] == {"train": 20, "val": 10, "test": 10}
    m = SplitManifest.load(run / "split.csv")
    m.verify(local)
    cal = json.loads((run / "calibration.json").read_text())
    assert cal["temperature"] > 0 and "local val split" in cal["fitted_on"]
    assert info["heldout"]["n"] == 20
    for part in ("heldout", "test"):  # what 10-20 held-out images can tell apart: a wide interval
        lo, hi = info[part]["balanced_accuracy_interval95"]
        assert 0 < lo < hi < 1 and hi - lo > 0.2, (part, lo, hi)
    at = info["test"]["at_threshold"]   # what the val-fitted threshold does on the test split alone
    assert at["n"] == 10 and at["threshold"] == pytest.approx(cal["abstain_threshold"]) and 0 <= at["coverage"] <= 1
    # Interpolated back towards the source, alpha chosen on the source run's val images (never local ones).
    ip = info["interpolation"]
    assert ip["alpha"] in cfg.alphas and ip["images_from"] == f"{tiny_run_dir / 'split.csv'} (val split)"
    assert f"{ip['alpha']:g}" in ip["accuracy_by_alpha"] and 0 < ip["images"] <= cfg.source_check_images


def test_adapted_model_equals_the_cached_path_and_differs_from_the_source(adapted_run, tiny_run_dir):
    from wbc_edge.model.network import load_model
    from wbc_edge.core.preprocess import preprocess

    res, local, _ = adapted_run
    new, old = load_model(res.model_path), load_model(tiny_run_dir / "model.keras")
    x = np.stack([preprocess(p, 96) for p in sorted((local / "Monocyte").iterdir())[:4]]).astype(np.float32)
    assert not np.allclose(new(x).numpy(), old(x).numpy(), atol=1e-4)  # it was trained
    # The bottom (below block_13) is frozen: identical weights.
    for name in ("Conv1", "block_6_expand", "block_12_project"):
        for a, b in zip(new.get_layer(name).get_weights(), old.get_layer(name).get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)


def test_adapted_run_is_accepted_by_evaluate_and_export(adapted_run, tmp_path):
    from wbc_edge.core.contract import read_contract
    from wbc_edge.model.scoring import evaluate_keras
    from wbc_edge.export import ExportConfig, export_model

    res, local, _ = adapted_run
    metrics, _ = evaluate_keras(str(res.model_path), str(local), out_dir=str(tmp_path / "eval"), progress=False)
    saved = json.loads((res.run_dir / "test_metrics.json").read_text())
    assert metrics.n == saved["n"] == 10
    assert abs(metrics.accuracy - saved["accuracy"]) < 1e-9     # the same test split, the same predictions
    out = export_model(ExportConfig(res.run_dir, out_dir=tmp_path / "export", variants=("float32",),
                                    verbose=False))
    tfl = tmp_path / "export" / "wbc_float32.tflite"
    assert tfl.is_file() and out.manifest["variants"][0]["status"] == "ok"
    c = read_contract(tfl)
    cal = json.loads((res.run_dir / "calibration.json").read_text())
    assert c.temperature == pytest.approx(cal["temperature"])   # adapt's calibration travels with the model


def test_adapt_refuses_an_existing_run_without_force(adapted_run, tmp_path):
    res, local, cfg = adapted_run
    r = CliRunner().invoke(main, ["adapt", cfg.source, str(local), "--out", str(res.run_dir), "--no-replay"])
    assert r.exit_code == 1 and "--force" in r.output


def test_adapt_with_a_missing_class_and_no_replay(tiny_run_dir, sample_root, tmp_path):
    """A class missing locally gets no local examples; the run still completes (the head keeps 5 outputs)."""
    from wbc_edge.adapt import AdaptConfig, adapt

    local = _local_copy(sample_root, tmp_path / "lab", {"basophil": 0})
    cfg = AdaptConfig(source=str(tiny_run_dir / "model.keras"), data_root=str(local), out_dir=str(tmp_path / "run"),
                      per_class=3, aug_views=0, head_epochs=1, min_steps=2, finetune_epochs=1, batch_size=8,
                      replay=False, seed=1)
    res = adapt(cfg, progress=False)
    info = json.loads((res.run_dir / "run.json").read_text())
    assert info["replay"] is None and info["split_per_class"]["train"]["basophil"] == 0
    assert info["split_counts"]["train"] == 12


def test_swa_averages_the_low_rate_half_of_the_fine_tune(tiny_run_dir, sample_root, tmp_path):
    """`swa`: the top's weights at the ends of chunks 5-9 of 10 are averaged; without it the last chunk's are kept
    (same seed, same trajectory: the two models differ only by the average)."""
    from wbc_edge.adapt import AdaptConfig, adapt
    from wbc_edge.model.network import load_model

    local = _local_copy(sample_root, tmp_path / "lab")
    runs = {}
    for swa in (False, True):
        cfg = AdaptConfig(source=str(tiny_run_dir), data_root=str(local), out_dir=str(tmp_path / f"run_{swa}"),
                          per_class=3, aug_views=0, min_steps=10, finetune_epochs=1, batch_size=8, replay=False,
                          seed=2, swa=swa)
        runs[swa] = adapt(cfg, progress=False)
    hist = {k: json.loads((r.run_dir / "history.json").read_text())["epochs"] for k, r in runs.items()}
    assert hist[True][-1]["swa_chunks"] == 5 and "swa_chunks" not in hist[False][-1]
    assert [h["loss"] for h in hist[True]] == [h["loss"] for h in hist[False]]  # the same trajectory
    a, b = (load_model(runs[k].model_path).get_layer("predictions").get_weights()[0] for k in (False, True))
    assert not np.allclose(a, b)


def test_adapt_from_a_lower_block_trains_from_there_and_no_lower(tiny_run_dir, sample_root, tmp_path):
    """`--adapt-from 10`: blocks 10-16 and the head learn, blocks below 10 keep the source's weights; `--augment`
    picks the views' preset."""
    from wbc_edge.model.network import load_model

    local = _local_copy(sample_root, tmp_path / "lab")
    run = tmp_path / "run"
    r = CliRunner().invoke(main, ["adapt", str(tiny_run_dir), str(local), "--out", str(run), "--per-class", "3",
                                  "--aug-views", "1", "--min-steps", "3", "--epochs", "1", "--no-replay",
                                  "--adapt-from", "10", "--augment", "robust", "--quiet"])
    assert r.exit_code == 0, r.output
    conf = json.loads((run / "run.json").read_text())["config"]
    assert conf["adapt_from"] == 10
    assert conf["aug_preset"] == "robust" and conf["augment"]["hed_p"] > 0   # the preset's strengths, recorded
    new, old = load_model(run / "model.keras"), load_model(tiny_run_dir / "model.keras")

    def same(name: str) -> bool:
        return all(np.array_equal(a, b) for a, b in zip(new.get_layer(name).get_weights(),
                                                         old.get_layer(name).get_weights(), strict=True))
    assert same("Conv1") and same("block_9_expand") and same("block_9_project")
    assert not same("block_10_expand") and not same("block_12_project")
    assert same("block_10_expand_BN")    # BatchNorm stays frozen wherever the cut is


def test_adapt_from_must_be_a_block_and_the_default_views_keep_the_lab_colours():
    from wbc_edge.adapt import AdaptConfig
    from wbc_edge.data.augment import preset
    from wbc_edge.core.errors import WbcEdgeError

    cfg = AdaptConfig(source="m", data_root="d", out_dir="o")
    assert cfg.aug_preset == "scale" and cfg.augment == preset("scale") and cfg.augment.hed_p == 0

    with pytest.raises(WbcEdgeError, match="--adapt-from"):
        AdaptConfig(source="m", data_root="d", out_dir="o", adapt_from=0).validate()
    r = CliRunner().invoke(main, ["adapt", "--help"])
    assert "--adapt-from" in r.output


def test_a_three_class_model_adapts_with_its_own_labels(tmp_path, sample_root):
    """The class list comes from the source run (run.json `labels`), not a global: a lab's 3-class model
    adapts as a 3-class model, a local folder of a class it does not have is a one-line error, and a
    non-5-output model without stored labels is refused by name (the WBC5 fallback is for old runs only)."""
    from wbc_edge.adapt import AdaptConfig, adapt
    from wbc_edge.core.errors import DatasetError, ModelFileError
    from wbc_edge.model.network import ModelConfig, build_model, load_model
    from wbc_edge.core.tfcompat import import_tf

    _, keras = import_tf()
    keras.utils.set_random_seed(0)
    src = tmp_path / "src"
    src.mkdir()
    build_model(ModelConfig(alpha=0.35, input_size=96, weights="none", num_classes=3)).save(src / "model.keras")
    names = ["eosinophil", "lymphocyte", "neutrophil"]
    (src / "run.json").write_text(json.dumps({"labels": names}), encoding="utf-8")
    local = _local_copy(sample_root, tmp_path / "lab", {"basophil": 0, "monocyte": 0})

    def cfg(data: Path, out: str) -> AdaptConfig:
        return AdaptConfig(source=str(src), data_root=str(data), out_dir=str(tmp_path / out), per_class=4,
                           aug_views=0, min_steps=2, finetune_epochs=1, batch_size=8, seed=0)

    res = adapt(cfg(local, "run"), progress=False)
    info = json.loads((res.run_dir / "run.json").read_text())
    assert info["labels"] == names and info["replay"] is None
    assert info["split_per_class"]["train"] == {"eosinophil": 4, "lymphocyte": 4, "neutrophil": 4}
    assert load_model(res.model_path).output_shape[-1] == 3
    assert set(info["heldout"]["per_class_recall"]) == set(names)

    with pytest.raises(DatasetError, match="unknown class folder 'Basophil'"):
        adapt(cfg(_local_copy(sample_root, tmp_path / "lab5"), "run5"), progress=False)
    assert not (tmp_path / "run5").exists()

    (src / "run.json").write_text("{}", encoding="utf-8")  # an old run: no labels stored
    with pytest.raises(ModelFileError, match="3 outputs and no stored class list"):
        adapt(cfg(local, "run_old"), progress=False)


# --- weight interpolation (WiSE-FT): the rule, on a stand-in network --------------------------------------

class _FakeNet:
    """predict_top's view of a SplitNet: one scalar weight w; image i is classified right iff w <= limit[i]."""

    num_classes = 2

    def __init__(self, limits):
        self.limits = np.asarray(limits, dtype=np.float64)
        self.w = [np.zeros(1, np.float32)]
        outer = self

        class _Model:
            def set_weights(self, ws):
                outer.w = [np.array(a, copy=True) for a in ws]

            def get_weights(self):
                return [np.array(a, copy=True) for a in outer.w]

        class _Top:
            def predict(self, x, batch_size=None, verbose=0):
                right = outer.w[0][0] <= outer.limits + 1e-6
                return np.stack([right, ~right], 1).astype(np.float32)  # label 0 is right

        self.model, self.top = _Model(), _Top()


def test_interpolate_weights_mixes_tensor_by_tensor():
    from wbc_edge.adapt import interpolate_weights

    s, a = [np.zeros((2, 2), np.float32), np.ones(3, np.float32)], [np.ones((2, 2), np.float32), np.full(3, 3, np.float32)]
    mix = interpolate_weights(s, a, 0.25)
    np.testing.assert_allclose(mix[0], 0.25) and np.testing.assert_allclose(mix[1], 1.5)
    assert mix[0].dtype == np.float32
    assert interpolate_weights(s, a, 1.0)[1] is a[1] and interpolate_weights(s, a, 0.0)[0] is s[0]
    # A tensor adapting left alone comes back bit for bit (a naive (1-a)s + a*s rounds it).
    w = np.random.default_rng(0).normal(size=1000).astype(np.float32)
    np.testing.assert_array_equal(interpolate_weights([w], [w.copy()], 0.7)[0], w)
    with pytest.raises(ValueError):
        interpolate_weights(s, a[:1], 0.5)


@pytest.mark.parametrize("drop, expected", [(0.0, 0.6), (0.25, 0.8), (0.5, 0.8), (0.75, 1.0)])
def test_choose_alpha_takes_the_largest_alpha_within_the_source_drop(drop, expected):
    """Source w = 0, adapted w = 1: the mix at alpha has w = alpha.  Four check images stay right up to w = 0.6,
    0.8, 0.8 and 1.0: accuracy 1.0 at alpha <= 0.6, 0.75 up to 0.8, 0.25 at 0.9 and 1.0."""
    from wbc_edge.adapt import choose_alpha

    net = _FakeNet([0.6, 0.8, 0.8, 1.0])
    y = np.zeros(4, np.int64)
    ch = choose_alpha(net, [np.zeros(1, np.float32)], [np.ones(1, np.float32)], np.zeros((4, 1)), y,
                      alphas=(0.5, 0.6, 0.7, 0.8, 0.9, 1.0), max_source_drop=drop)
    assert ch.source_accuracy == 1.0 and ch.alpha == pytest.approx(expected)
    assert net.w[0][0] == pytest.approx(expected)            # the network is left at the chosen mix
    assert list(ch.accuracy_by_alpha)[0] == "1"              # tried from the adapted model down


def test_choose_alpha_falls_back_to_the_smallest_alpha():
    from wbc_edge.adapt import choose_alpha

    net = _FakeNet([0.1, 0.1])
    ch = choose_alpha(net, [np.zeros(1, np.float32)], [np.ones(1, np.float32)], np.zeros((2, 1)), np.zeros(2, np.int64),
                      alphas=(1.0, 0.5), max_source_drop=0.0)
    assert ch.alpha == 0.5 and ch.accuracy_by_alpha == {"1": 0.0, "0.5": 0.0}
