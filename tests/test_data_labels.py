"""Labels from the data: 3- and 8-class synthetic datasets through scan, split, manifest and metrics; alias
folder names; the 5-class PBC sample split byte-identical to before; the one sampler; the split's one hash.

Synthetic images are coloured squares with noise (one hue per class), generated in tmp_path.
"""

from __future__ import annotations

import colorsys
import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wbc_edge.core.atomic import sha256_file
from wbc_edge.data import (
    SplitManifest,
    balanced_indices,
    class_ranks,
    manifest_sha256,
    per_class_indices,
    scan_dataset,
    split_dataset,
    stratified_indices,
)
from wbc_edge.core.errors import DatasetError
from wbc_edge.core.labels import WBC5, WBC5_LABELS, Labels
from wbc_edge.metrics import compute_metrics

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "samples" / "pbc_sample"


def coloured_square(hue: float, seed: int, size: int = 40) -> Image.Image:
    """A square of one hue on grey, with per-image noise and offset: distinct images, a learnable colour."""
    rng = np.random.default_rng(seed)
    r, g, b = (int(255 * c) for c in colorsys.hsv_to_rgb(hue, 0.8, 0.9))
    a = np.full((size, size, 3), 128, dtype=np.int16)
    x0, y0 = rng.integers(2, size // 3, 2)
    a[y0:y0 + size // 2, x0:x0 + size // 2] = (r, g, b)
    a += rng.integers(-40, 41, size=a.shape)
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "RGB")


def make_dataset(root: Path, folders: dict[str, int], seed0: int = 0) -> Path:
    for k, (folder, n) in enumerate(folders.items()):
        (root / folder).mkdir(parents=True)
        for i in range(n):
            coloured_square(k / len(folders), seed0 + 1000 * k + i).save(root / folder / f"img_{i:03d}.png")
    return root


def _round_trip(root: Path, tmp_path: Path, expect: tuple[str, ...], folders: dict[str, str]) -> None:
    """scan -> split -> save -> load -> files/labels -> metrics, checking the labels at every step."""
    scan, manifest, rep = split_dataset(root, tmp_path / "split.csv", seed=3, progress=False)
    assert scan.labels.names == expect
    assert scan.class_dirs == folders  # canonical name -> folder name on disk
    assert {r.label for r in scan.records} == set(expect)  # records store canonical names
    assert all(r.path.split("/")[0] == folders[r.label] for r in scan.records)  # paths keep the folder names
    assert list(rep.summary["test"]) == list(expect)

    loaded = SplitManifest.load(tmp_path / "split.csv", root=root)
    assert loaded.rows == manifest.rows and loaded.label_set == scan.labels
    assert loaded.sha256() == rep.sha256 == sha256_file(tmp_path / "split.csv")
    for split in ("train", "val", "test"):
        files, y = loaded.files(split)
        assert sorted(set(y.tolist())) == list(range(len(expect)))  # every class in every split
        for f, i in zip(files, y.tolist(), strict=True):
            assert Path(f).parent.name == folders[expect[i]]
    files, y = loaded.files("test")
    pred = y.copy()
    pred[0] = (pred[0] + 1) % len(expect)  # one mistake
    m = compute_metrics(y, pred, loaded.label_set, bootstrap=0)
    assert m.labels == list(expect) and len(m.confusion) == len(expect) == len(m.per_class)
    assert m.accuracy == pytest.approx(1 - 1 / len(y))
    assert all(name in m.format_table() for name in expect)


def test_three_class_dataset_end_to_end(tmp_path):
    root = make_dataset(tmp_path / "ds", {"cat": 10, "Dog": 10, "bird": 10})
    _round_trip(root, tmp_path, ("bird", "cat", "dog"), {"bird": "bird", "cat": "cat", "dog": "Dog"})


def test_eight_class_dataset_with_alias_folders_end_to_end(tmp_path):
    folders = {"Neutrophils": 10, "EOS": 10, "lymphocytes": 10, "Monocyte": 10, "basophil": 10,
               "IG": 10, "erythroblast": 10, "Platelets": 10}
    root = make_dataset(tmp_path / "ds", folders)
    expect = ("basophil", "eosinophil", "erythroblast", "ig", "lymphocyte", "monocyte", "neutrophil", "platelet")
    _round_trip(root, tmp_path, expect, {
        "basophil": "basophil", "eosinophil": "EOS", "erythroblast": "erythroblast", "ig": "IG",
        "lymphocyte": "lymphocytes", "monocyte": "Monocyte", "neutrophil": "Neutrophils", "platelet": "Platelets"})


def test_alias_folders_meet_a_models_labels(tmp_path):
    root = make_dataset(tmp_path / "ds", {"Neutrophils": 3, "EOS": 2, "lymph": 2})
    scan = scan_dataset(root, labels=WBC5_LABELS, progress=False)
    assert scan.labels is WBC5_LABELS
    assert scan.class_counts == {"basophil": 0, "eosinophil": 2, "lymphocyte": 2, "monocyte": 0, "neutrophil": 3}
    assert scan.missing_classes == ["basophil", "monocyte"]
    assert sorted(set(scan.label_indices().tolist())) == [WBC5.index(c) for c in ("eosinophil", "lymphocyte",
                                                                                 "neutrophil")]
    # A 3-class model: a WBC folder outside its classes is the one-line "unknown class folder" error.
    with pytest.raises(DatasetError, match=r"unknown class folder 'EOS'.*accepted .*: lymphocyte, neutrophil, x"):
        scan_dataset(root, labels=Labels.from_list(["lymphocyte", "neutrophil", "x"]), progress=False)


def test_two_folders_meaning_one_class_is_a_one_line_error(tmp_path):
    root = make_dataset(tmp_path / "ds", {"EOS": 2, "eosinophils": 2, "basophil": 2})
    with pytest.raises(DatasetError, match="'EOS' and 'eosinophils' both mean class 'eosinophil'") as ei:
        scan_dataset(root, progress=False)
    assert "\n" not in str(ei.value)


def test_pbc_sample_split_is_byte_identical_to_before():
    """The 5-class path is unchanged: these are the sha256 of the manifests the code wrote before the class
    list came from the data (labels were the frozen CLASSES tuple then)."""
    before = {42: "d8a864a4a1f812ec233b0349b6c31e6d70b3d34db414345d91e4b928dcb96c97",
              0: "aab05513337f4cb79fd0ef2390a715b3318238963702889b969fa83291801c3e",
              7: "3ab4b4b88ec6835d1c298c0d36321e0ee37e208387114941ff8a8af3720a0626"}
    scan = scan_dataset(SAMPLE, progress=False)
    assert scan.labels == WBC5_LABELS
    from wbc_edge.data import make_split

    for seed, sha in before.items():
        assert make_split(scan.records, seed=seed, groups=scan.duplicates()).sha256() == sha, seed


# ------------------------------------------------------------------------------------------------ sampler


def test_one_sampler_three_policies():
    y = np.array([0, 1, 1, 2, 2, 2, 2, 2, 2, 1, 0, 2])
    assert class_ranks(y).tolist() == [0, 0, 1, 0, 1, 2, 3, 4, 5, 2, 1, 6]  # input order within class
    r = class_ranks(y, seed=5)
    for c in (0, 1, 2):
        assert sorted(r[y == c].tolist()) == list(range(int((y == c).sum())))
    # per-class cap: the first `cap` of each class
    assert per_class_indices(y, 2).tolist() == [0, 1, 2, 3, 4, 10]
    assert per_class_indices(y, None).tolist() == list(range(len(y)))
    # balanced: round robin, equal shares while a class has images
    assert np.bincount(y[balanced_indices(y, 6)]).tolist() == [2, 2, 2]
    assert np.bincount(y[balanced_indices(y, 8)]).tolist() == [2, 3, 3]
    # proportional, at least one per class, deterministic per seed
    a = stratified_indices(y, 4, seed=1)
    assert np.array_equal(a, stratified_indices(y, 4, seed=1)) and len(a) == 4
    assert set(y[a].tolist()) == {0, 1, 2}
    # all three agree on the within-class order for a seed: the cap keeps a prefix of the seeded order
    capped = per_class_indices(y, 1, seed=9)
    assert (class_ranks(y, 9)[capped] == 0).all()


# ------------------------------------------------------------------------------------------------ hash


def _messy_copy(src: Path, dst: Path) -> Path:
    """The same split as `src`, as a hand-edited file: BOM, CRLF line ends, rows not sorted."""
    lines = src.read_text(encoding="utf-8").splitlines()
    dst.write_bytes(("\ufeff" + "\r\n".join([lines[0]] + lines[:0:-1]) + "\r\n").encode("utf-8"))
    return dst


def test_manifest_sha256_names_the_split_not_the_file_bytes(tmp_path, sample_split_csv):
    messy = _messy_copy(sample_split_csv, tmp_path / "messy.csv")
    canonical = sha256_file(sample_split_csv)
    assert sha256_file(messy) != canonical
    assert manifest_sha256(messy) == manifest_sha256(sample_split_csv) == canonical
    assert SplitManifest.load(messy).sha256() == canonical


def test_train_saves_the_canonical_split_it_records(tmp_path, sample_root, sample_split_csv):
    """Regression: train recorded the canonical sha256 but copied the raw bytes of --split-manifest, so a
    CRLF / unsorted manifest made export warn 'sha256 differs' about an unchanged split."""
    from wbc_edge.train import PENDING_SPLIT, TrainConfig, prepare_run

    messy = _messy_copy(sample_split_csv, tmp_path / "messy.csv")
    cfg = TrainConfig(data_root=str(sample_root), out_dir=str(tmp_path / "run"), split_manifest=str(messy))
    run, manifest = prepare_run(cfg)[:2]
    written = Path(run) / PENDING_SPLIT  # becomes RUN_DIR/split.csv when the run finishes
    assert written.read_bytes() == Path(sample_split_csv).read_bytes()
    assert sha256_file(written) == manifest.sha256() == manifest_sha256(messy)


def test_label_order_of_a_manifest_is_the_datasets():
    rows = [("a/1.png", "neutrophil", "0" * 64, "g1", "train"), ("b/2.png", "basophil", "1" * 64, "g2", "test")]
    m = SplitManifest(rows)
    assert m.label_set == Labels(("basophil", "neutrophil"))
    assert m.labels("train").tolist() == [1] and m.labels("train", WBC5_LABELS).tolist() == [4]
    assert hashlib.sha256(m.to_bytes()).hexdigest() == m.sha256()


def test_one_reading_of_a_stored_class_list_and_one_legacy_fallback(tmp_path):
    """core.labels.stored_labels / legacy_labels are what export, adapt and data.run_files all use: the same
    bad list is refused the same way, and the five WBC classes stand in only for a model that could have them."""
    import json

    from wbc_edge.core.errors import ModelFileError
    from wbc_edge.core.labels import WBC5_LABELS, legacy_labels, stored_labels
    from wbc_edge.data.run_files import model_labels

    assert stored_labels(None, "x") is None
    assert stored_labels(["monocyte", "lymphocyte"], "x").to_list() == ["monocyte", "lymphocyte"]  # output order kept
    with pytest.raises(ModelFileError, match="run.json: labels must be a list"):
        stored_labels("basophil", "run.json")
    assert legacy_labels(None, "m") == WBC5_LABELS and legacy_labels(5, "m") == WBC5_LABELS
    with pytest.raises(ModelFileError, match="m.keras: 3 outputs and no stored labels \\(pass --labels"):
        legacy_labels(3, "m.keras", "pass --labels")
    (tmp_path / "run.json").write_text(json.dumps({"labels": ["eosinophil", "neutrophil"]}))
    assert model_labels(tmp_path / "model.keras").to_list() == ["eosinophil", "neutrophil"]
    (tmp_path / "run.json").write_text(json.dumps({"labels": [1, 2]}))
    with pytest.raises(ModelFileError, match="labels must be a list of class names"):
        model_labels(tmp_path / "model.keras")
    assert model_labels(tmp_path / "other" / "model.keras") == WBC5_LABELS
