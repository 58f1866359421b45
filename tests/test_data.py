"""Tests for wbc_edge.data and `wbc-edge data`: scanning, bad files, duplicate grouping, the split manifest.

Fixtures are generated with Pillow in tmp_path; real cells come from samples/pbc_sample (shipped).
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from wbc_edge.data import (
    HASH_BITS,
    MANIFEST_HEADER,
    NEAR_DUP_THRESHOLD,
    SplitManifest,
    group_duplicates,
    hash_distance,
    label_conflicts,
    make_split,
    scan_dataset,
    split_dataset,
)
from wbc_edge.core.errors import DatasetError
from wbc_edge.core.labels import WBC5, WBC5_LABELS
from wbc_edge.core.preprocess import load_image

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "samples" / "pbc_sample"


def noise_image(seed: int, size=(48, 40), mode="RGB") -> Image.Image:
    """A random, non-flat picture: distinct seeds give far-apart hashes (flat images would all collide)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(6, 6, 3), dtype=np.uint8)
    im = Image.fromarray(small, "RGB").resize(size, Image.Resampling.BICUBIC)
    return im.convert(mode) if mode != "RGB" else im


def save(im: Image.Image, path: Path, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, **kw)
    return path


def make_tree(root: Path, counts: dict[str, int], seed0: int = 0) -> Path:
    seed = seed0
    for cls, n in counts.items():
        for i in range(n):
            save(noise_image(seed), root / cls / f"{cls[:2]}_{i:03d}.png")
            seed += 1
    return root


def real(cls: str, i: int = 0) -> Path:
    return sorted((SAMPLE / cls).glob("*.jpg"))[i]


def run_cli(*args):
    from wbc_edge.cli import main

    return CliRunner().invoke(main, list(args), catch_exceptions=False)


# ------------------------------------------------------------------------------------------------ scanning


def test_bad_files_reported_and_skipped(tmp_path):
    root = make_tree(tmp_path / "ds", {"basophil": 3, "monocyte": 2})
    good = io.BytesIO()
    noise_image(99, (80, 80)).save(good, "JPEG", quality=90)
    (root / "basophil" / "truncated.jpg").write_bytes(good.getvalue()[: len(good.getvalue()) // 2])
    (root / "basophil" / "corrupt.jpg").write_bytes(good.getvalue()[:200] + b"\x00garbage" * 100)
    (root / "basophil" / "notes.jpg").write_text("this is not an image\n")
    (root / "basophil" / "empty.jpg").write_bytes(b"")
    (root / "basophil" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (root / "monocyte" / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    (root / "monocyte" / "desktop.ini").write_text("[.ShellClassInfo]\n")

    scan = scan_dataset(root, progress=False)
    assert scan.class_counts == {"basophil": 3, "monocyte": 2}  # the classes are the folders
    assert scan.labels.names == ("basophil", "monocyte") and scan.missing_classes == []
    # given a model's labels, classes without a folder count 0
    scan5 = scan_dataset(root, labels=WBC5_LABELS, progress=False)
    assert scan5.class_counts == {"basophil": 3, "eosinophil": 0, "lymphocyte": 0, "monocyte": 2,
                                  "neutrophil": 0}
    assert scan5.missing_classes == ["eosinophil", "lymphocyte", "neutrophil"]
    assert scan5.records == scan.records and scan5.bad == scan.bad
    reasons = {b.path: b.reason for b in scan.bad}
    assert set(reasons) == {"basophil/truncated.jpg", "basophil/corrupt.jpg", "basophil/notes.jpg",
                            "basophil/empty.jpg", "basophil/.DS_Store", "monocyte/Thumbs.db",
                            "monocyte/desktop.ini"}
    assert "truncated" in reasons["basophil/truncated.jpg"]
    assert "corrupt" in reasons["basophil/corrupt.jpg"]
    assert "not an image" in reasons["basophil/notes.jpg"]
    assert "empty" in reasons["basophil/empty.jpg"]
    for p in ("basophil/.DS_Store", "monocyte/Thumbs.db", "monocyte/desktop.ini"):
        assert reasons[p] == "system file, not an image"
    assert all("\n" not in r for r in reasons.values())

    with pytest.raises(DatasetError) as ei:
        scan_dataset(root, strict=True, progress=False)
    msg = str(ei.value)
    assert "basophil/.DS_Store" in msg and "\n" not in msg  # first bad file by path, one line


def test_formats_accepted_and_rgb(tmp_path):
    cls = tmp_path / "ds" / "lymphocyte"
    base = noise_image(1, (40, 36))
    save(base, cls / "rgb8.png")
    grey16 = (np.asarray(base.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    save(Image.fromarray(grey16), cls / "grey16.png")  # -> mode I;16
    save(base.convert("P", palette=Image.Palette.ADAPTIVE), cls / "palette.png")
    save(base.convert("L"), cls / "grey.png")
    rgba = base.convert("RGBA")
    rgba.putalpha(128)
    save(rgba, cls / "rgba.png")
    save(base, cls / "bmp.bmp")
    save(base, cls / "tiff.tif")
    save(base, cls / "jpeg.jpeg", quality=95)

    scan = scan_dataset(tmp_path / "ds", labels=WBC5_LABELS, progress=False)  # one class: a model's labels
    assert scan.bad == []
    modes = {r.path.split("/")[-1]: r.mode for r in scan.records}
    assert modes["rgb8.png"] == "RGB" and modes["palette.png"] == "P" and modes["grey.png"] == "L"
    assert modes["grey16.png"].startswith("I") and modes["rgba.png"] == "RGBA"
    assert len(scan.records) == 8
    for r in scan.records:
        assert (r.width, r.height) == (40, 36)
        assert load_image(tmp_path / "ds" / r.path).mode == "RGB"
        assert len(r.sha256) == 64 and len(r.dhash) == 8 * ((HASH_BITS + 7) // 8)


def test_case_insensitive_class_folders_and_subfolders(tmp_path):
    root = tmp_path / "ds"
    save(noise_image(1), root / "Basophil" / "a.png")
    save(noise_image(2), root / "EOSINOPHIL" / "batch1" / "deeper" / "b.png")
    scan = scan_dataset(root, progress=False)
    assert [(r.path, r.label) for r in scan.records] == [("Basophil/a.png", "basophil"),
                                                         ("EOSINOPHIL/batch1/deeper/b.png", "eosinophil")]
    assert scan.class_dirs == {"basophil": "Basophil", "eosinophil": "EOSINOPHIL"}


def test_unknown_and_empty_class_folders(tmp_path):
    root = make_tree(tmp_path / "a", {"basophil": 2})
    (root / "Platelet").mkdir()
    # a model's labels: a folder outside them is an error naming it and the accepted names
    with pytest.raises(DatasetError, match="unknown class folder 'Platelet'") as ei:
        scan_dataset(root, labels=WBC5_LABELS, progress=False)
    assert "basophil, eosinophil, lymphocyte, monocyte, neutrophil" in str(ei.value)
    # no labels: every folder is a class, so the empty one is the problem
    with pytest.raises(DatasetError, match=r"class 'platelet' \(.*Platelet\) has no valid images"):
        scan_dataset(root, progress=False)
    (root / "Platelet").rmdir()
    with pytest.raises(DatasetError, match=r"only one class folder \('basophil'\); a classifier needs at least two"):
        scan_dataset(root, progress=False)
    assert scan_dataset(root, labels=WBC5_LABELS, progress=False).class_counts["basophil"] == 2

    root = make_tree(tmp_path / "b", {"basophil": 2})
    (root / "Monocyte").mkdir()
    with pytest.raises(DatasetError, match=r"class 'monocyte' \(.*Monocyte\) has no valid images"):
        scan_dataset(root, progress=False)

    root = make_tree(tmp_path / "c", {"basophil": 2})
    (root / "monocyte").mkdir()
    (root / "monocyte" / "x.jpg").write_text("nope")  # only a bad file -> still no valid image
    with pytest.raises(DatasetError, match="monocyte"):
        scan_dataset(root, progress=False)

    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="empty"):
        scan_dataset(tmp_path / "empty", progress=False)


def test_two_folders_for_one_class(tmp_path):
    root = tmp_path / "ds"
    save(noise_image(1), root / "Basophil" / "a.png")
    save(noise_image(2), root / "basophil" / "b.png")
    if len(list(root.iterdir())) < 2:
        pytest.skip("case-insensitive file system")
    with pytest.raises(DatasetError, match="Basophil.*basophil"):
        scan_dataset(root, progress=False)


def test_loose_root_files(tmp_path):
    root = make_tree(tmp_path / "ds", {"neutrophil": 2, "monocyte": 1})
    save(noise_image(7), root / "stray.png")
    (root / "README.md").write_text("# my data\n")
    (root / "manifest.csv").write_text("path\n")
    (root / ".hidden_dir").mkdir()
    scan = scan_dataset(root, progress=False)
    assert [(b.path, b.reason) for b in scan.bad] == [("stray.png", "not inside a class folder")]
    assert sorted(b.path for b in scan.ignored) == [".hidden_dir/", "README.md", "manifest.csv"]
    assert len(scan.records) == 3 and scan.labels.names == ("monocyte", "neutrophil")


@pytest.mark.skipif(sys.platform == "win32", reason="symlinks need privileges on Windows")
def test_symlink_loops_do_not_hang(tmp_path):
    root = make_tree(tmp_path / "ds", {"basophil": 2})
    os.symlink("..", root / "basophil" / "up")  # folder loop
    os.symlink("b.jpg", root / "basophil" / "a.jpg")  # file loop a -> b -> a
    os.symlink("a.jpg", root / "basophil" / "b.jpg")
    scan = scan_dataset(root, labels=WBC5_LABELS, progress=False)
    reasons = {b.path: b.reason for b in scan.bad}
    assert "symlink" in reasons["basophil/up/"]
    assert "symlink loop" in reasons["basophil/a.jpg"] and "symlink loop" in reasons["basophil/b.jpg"]
    assert len(scan.records) == 2


def test_workers_do_not_change_result(tmp_path):
    root = make_tree(tmp_path / "ds", {"basophil": 40, "eosinophil": 40})
    a = scan_dataset(root, progress=True, workers=1)
    b = scan_dataset(root, progress=False, workers=4)
    assert a.records == b.records


# ------------------------------------------------------------------------------------------------ duplicates


def _variants(src: Path, dst_dir: Path) -> list[Path]:
    im = Image.open(src).convert("RGB")
    out = [dst_dir / src.name]
    shutil.copyfile(src, out[0])
    out.append(save(im.transpose(Image.Transpose.FLIP_LEFT_RIGHT), dst_dir / "flip.png"))
    out.append(save(im.transpose(Image.Transpose.ROTATE_90), dst_dir / "rot90.png"))
    out.append(save(im, dst_dir / "q75.jpg", quality=75))
    w, h = im.size
    small = im.resize((int(w * 0.95), int(h * 0.95)), Image.Resampling.BICUBIC)
    out.append(save(small, dst_dir / "small.png"))
    shutil.copyfile(src, dst_dir / "exact_copy.jpg")
    out.append(dst_dir / "exact_copy.jpg")
    return out


def test_flip_rotate_reencode_resize_grouped_with_original(tmp_path):
    root = tmp_path / "ds"
    (root / "monocyte").mkdir(parents=True)
    _variants(real("monocyte", 0), root / "monocyte")
    for i in (1, 2):  # two different real cells of the same class
        shutil.copyfile(real("monocyte", i), root / "monocyte" / f"other{i}.jpg")
    scan = scan_dataset(root, labels=WBC5_LABELS, progress=False)
    groups = group_duplicates(scan.records)
    orig = f"monocyte/{real('monocyte', 0).name}"
    gid = groups.group_of[orig]
    assert sorted(groups.members[gid]) == sorted(
        f"monocyte/{n}" for n in (real("monocyte", 0).name, "flip.png", "rot90.png", "q75.jpg", "small.png",
                                  "exact_copy.jpg"))
    assert groups.group_of["monocyte/other1.jpg"] != gid != groups.group_of["monocyte/other2.jpg"]
    assert groups.num_merged == 1
    assert len(groups.exact_sets) == 1 and len(groups.exact_sets[0]) == 2
    assert gid == "g" + min(r.sha256 for r in scan.records if r.path in groups.members[gid])[:12]
    assert all(d <= NEAR_DUP_THRESHOLD for d, _, _ in groups.near_pairs)


def test_distinct_real_cells_not_grouped():
    scan = scan_dataset(SAMPLE, progress=False)
    assert len(scan.records) == 40 and scan.bad == []
    groups = group_duplicates(scan.records)
    assert groups.num_merged == 0 and len(groups.members) == 40
    d, _, _ = groups.closest_unmerged
    assert d > NEAR_DUP_THRESHOLD + 8  # a real margin, not a near miss
    # hash_distance agrees with the vectorised search
    a, b = scan.records[0], scan.records[1]
    assert hash_distance(a.dhash, b.dhash) > NEAR_DUP_THRESHOLD
    assert hash_distance(a.dhash, a.dhash) == 0


# ------------------------------------------------------------------------------------------------ split


def test_split_deterministic_and_seed_dependent(tmp_path):
    root = make_tree(tmp_path / "ds", {"basophil": 20, "eosinophil": 30, "monocyte": 12})
    s1, m1, r1 = split_dataset(root, tmp_path / "a.csv", 42, progress=False)
    s2, m2, r2 = split_dataset(root, tmp_path / "b.csv", 42, progress=False)
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    file_sha = hashlib.sha256((tmp_path / "a.csv").read_bytes()).hexdigest()
    assert r1.sha256 == r2.sha256 == m1.sha256() == file_sha
    m3 = make_split(s1.records, seed=7)
    assert m3.sha256() != m1.sha256()
    assert [r.split for r in m3.rows] != [r.split for r in m1.rows]
    # record order must not matter
    m4 = make_split(list(reversed(s1.records)), seed=42)
    assert m4.to_bytes() == m1.to_bytes()


def test_stratified_counts(tmp_path):
    root = make_tree(tmp_path / "ds", {"basophil": 20, "eosinophil": 30, "monocyte": 12, "neutrophil": 3})
    scan = scan_dataset(root, progress=False)
    summ = make_split(scan.records, seed=1).summary()
    assert summ["test"]["basophil"] == 4 and summ["val"]["basophil"] == 2 and summ["train"]["basophil"] == 14
    assert summ["test"]["eosinophil"] == 6 and summ["val"]["eosinophil"] == 3
    assert summ["test"]["monocyte"] == 2 and summ["val"]["monocyte"] == 1
    assert summ["test"]["neutrophil"] == summ["val"]["neutrophil"] == summ["train"]["neutrophil"] == 1
    assert "lymphocyte" not in summ["train"]  # not a class of this dataset
    assert make_split(scan.records, seed=1).summary(WBC5_LABELS)["train"]["lymphocyte"] == 0
    no_val = make_split(scan.records, seed=1, test_fraction=0.2, val_fraction=0.0).summary()
    assert sum(no_val["val"].values()) == 0 and no_val["test"]["basophil"] == 4


def test_groups_never_straddle_splits(tmp_path):
    root = make_tree(tmp_path / "ds", {"monocyte": 15, "lymphocyte": 10})
    for i in range(4):
        d = root / "monocyte" / f"dup{i}"
        d.mkdir()
        _variants(real("monocyte", i), d)
    scan = scan_dataset(root, progress=False)
    groups = group_duplicates(scan.records)
    assert groups.num_merged == 4
    for seed in range(8):
        m = make_split(scan.records, seed=seed, groups=groups)
        split_of = {}
        for r in m.rows:
            assert split_of.setdefault(r.group, r.split) == r.split
        assert m.summary()["test"]["monocyte"] >= 1


def test_label_conflict_and_too_few_groups(tmp_path):
    root = make_tree(tmp_path / "ds", {"eosinophil": 5, "neutrophil": 5})
    shutil.copyfile(root / "eosinophil" / "eo_000.png", root / "neutrophil" / "copy.png")
    scan = scan_dataset(root, progress=False)
    with pytest.raises(DatasetError, match=r"label conflict.*eosinophil/eo_000.png.*neutrophil/copy.png"):
        make_split(scan.records)
    # the one detection make_split and `data check` share
    groups = scan.duplicates(NEAR_DUP_THRESHOLD)
    ((gid, items),) = label_conflicts(scan.records, groups)
    assert items == [("eosinophil/eo_000.png", "eosinophil"), ("neutrophil/copy.png", "neutrophil")]
    assert groups.group_of["neutrophil/copy.png"] == gid
    res = run_cli("data", "check", str(root), "--no-progress")
    assert "LABEL CONFLICTS (same image in two classes): 1" in res.output
    assert f"{gid}: eosinophil/eo_000.png (eosinophil), neutrophil/copy.png (neutrophil)" in res.output

    root = make_tree(tmp_path / "small", {"basophil": 5, "monocyte": 2})
    scan = scan_dataset(root, progress=False)
    with pytest.raises(DatasetError, match="class 'monocyte' has only 2"):
        make_split(scan.records)
    make_split(scan.records, val_fraction=0.0)  # 2 groups suffice for train/test


# ------------------------------------------------------------------------------------------------ manifest


def test_manifest_round_trip_and_helpers(tmp_path):
    root = make_tree(tmp_path / "ds", {"basophil": 10, "neutrophil": 10})
    _, m, rep = split_dataset(root, tmp_path / "split.csv", 3, progress=False)
    raw = (tmp_path / "split.csv").read_bytes()
    assert raw.startswith(b"path,label,sha256,group,split\n") and b"\r" not in raw
    lines = raw.decode().splitlines()[1:]
    assert lines == sorted(lines) and len(lines) == 20
    loaded = SplitManifest.load(tmp_path / "split.csv", root=root)
    assert loaded.rows == m.rows and loaded.sha256() == rep.sha256 == hashlib.sha256(raw).hexdigest()
    assert tuple(loaded.rows[0]._fields) == MANIFEST_HEADER

    files, labels = loaded.files("test")
    assert len(files) == len(labels) == 4 and all(os.path.isabs(f) and os.path.isfile(f) for f in files)
    assert loaded.label_set.names == ("basophil", "neutrophil")
    assert set(labels.tolist()) == {0, 1}
    # in a model's label order instead: the same rows, the model's indices
    _, labels5 = loaded.files("test", labels=WBC5_LABELS)
    assert labels5.tolist() == [WBC5.index(("basophil", "neutrophil")[i]) for i in labels.tolist()]
    assert loaded.paths("train") == sorted(loaded.paths("train"))
    summ = loaded.summary()
    assert list(summ) == ["train", "val", "test"] and list(summ["train"]) == ["basophil", "neutrophil"]
    assert list(loaded.summary(WBC5_LABELS)["train"]) == list(WBC5)
    assert loaded.verify(check_sha256=True) == 20

    victim = root / loaded.paths("val")[0]
    save(noise_image(12345), victim)
    with pytest.raises(DatasetError, match="changed"):
        loaded.verify(check_sha256=True)
    victim.unlink()
    with pytest.raises(DatasetError, match="missing"):
        loaded.verify()


@pytest.mark.parametrize("mutate,pattern", [
    (lambda ls: ls.__setitem__(2, ls[2].replace(",basophil,", ",platelet,")),
     r":3: unknown label 'platelet'"),
    (lambda ls: ls.__setitem__(1, ls[1].replace(",test", ",holdout").replace(",train", ",holdout")
                                  .replace(",val", ",holdout")), r":2: unknown split 'holdout'"),
    (lambda ls: ls.__setitem__(0, "path,label,sha,group,split"), r":1: bad header"),
    (lambda ls: ls.__setitem__(3, ls[3] + ",extra"), r":4: expected 5 fields"),
    (lambda ls: ls.__setitem__(2, ls[2].split(",", 1)[0] + ",basophil,xyz,g1,train"), r":3: bad sha256"),
    (lambda ls: ls.append(ls[1]), r"duplicate path"),
])
def test_manifest_load_errors(tmp_path, mutate, pattern):
    root = make_tree(tmp_path / "ds", {"basophil": 6, "monocyte": 6})
    _, m, _ = split_dataset(root, tmp_path / "split.csv", 0, progress=False)
    lines = (tmp_path / "split.csv").read_text().splitlines()
    mutate(lines)
    (tmp_path / "bad.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=pattern) as ei:
        SplitManifest.load(tmp_path / "bad.csv", labels=WBC5_LABELS)  # a model's labels: platelet is unknown
    assert str(ei.value).startswith(str(tmp_path / "bad.csv")) and "\n" not in str(ei.value)


def test_manifest_labels_come_from_its_rows_and_a_given_list_is_checked(tmp_path):
    root = make_tree(tmp_path / "ds", {"basophil": 6, "monocyte": 6})
    split_dataset(root, tmp_path / "split.csv", 0, progress=False)
    lines = (tmp_path / "split.csv").read_text().splitlines()
    lines[2] = lines[2].replace(",basophil,", ",platelet,")
    (tmp_path / "p.csv").write_text("\n".join(lines) + "\n")
    m = SplitManifest.load(tmp_path / "p.csv")  # no labels given: platelet is one of this manifest's classes
    assert m.label_set.names == ("basophil", "monocyte", "platelet")
    split = m.rows[1].split  # lines[2] is the second row
    with pytest.raises(DatasetError, match=r"p.csv:3: label 'platelet' of .* is not one of the model's classes"):
        m.labels(split, WBC5_LABELS)


def test_manifest_load_accepts_label_case_and_crlf(tmp_path):
    root = make_tree(tmp_path / "ds", {"basophil": 6, "eosinophil": 6})
    _, m, _ = split_dataset(root, tmp_path / "split.csv", 0, progress=False)
    text = (tmp_path / "split.csv").read_text().replace(",basophil,", ",Basophil,").replace(",eosinophil,", ",EOS,")
    text = text.replace("\n", "\r\n")
    (tmp_path / "crlf.csv").write_bytes(text.encode())
    loaded = SplitManifest.load(tmp_path / "crlf.csv")
    assert loaded.rows == m.rows and loaded.sha256() == m.sha256()


# ------------------------------------------------------------------------------------------------ CLI


def test_cli_check(tmp_path):
    res = run_cli("data", "check", str(SAMPLE), "--json", str(tmp_path / "check.json"))
    assert res.exit_code == 0, res.output
    for c in WBC5:
        assert f"{c}" in res.output
    assert "5 classes (one per folder)" in res.output
    assert "Bad files: none" in res.output and "360x363" in res.output
    assert "groups that merged more than one file:   0" in res.output
    import json

    js = json.loads((tmp_path / "check.json").read_text())
    assert js["num_images"] == 40 and js["class_counts"]["neutrophil"] == 8 and js["labels"] == list(WBC5)
    assert {"width": 366, "height": 369, "count": 4} in js["sizes"]

    root = make_tree(tmp_path / "ds", {"basophil": 2, "monocyte": 1})
    (root / "basophil" / "bad.jpg").write_text("x")
    res = run_cli("data", "check", str(root), "--no-progress")
    assert res.exit_code == 0 and "basophil/bad.jpg: not an image" in res.output
    res = run_cli("data", "check", str(root), "--strict")
    assert res.exit_code == 1 and "Error:" in res.output and "basophil/bad.jpg" in res.output

    (root / "Blasts").mkdir()
    res = run_cli("data", "check", str(root))
    assert res.exit_code == 1 and "Blasts" in res.output
    assert "Traceback" not in res.output


def test_cli_split(tmp_path):
    out = tmp_path / "split.csv"
    res = run_cli("data", "split", str(SAMPLE), "--out", str(out), "--seed", "5")
    assert res.exit_code == 0, res.output
    sha = hashlib.sha256(out.read_bytes()).hexdigest()
    assert f"sha256 {sha}" in res.output
    assert "total" in res.output and "merged more than one file" in res.output
    m = SplitManifest.load(out)
    assert m.summary()["test"] == {c: 2 for c in WBC5}
    assert m.summary()["val"] == {c: 1 for c in WBC5}

    res = run_cli("data", "split", str(SAMPLE), "--out", str(out), "--seed", "6")
    assert res.exit_code == 1 and "already exists" in res.output
    assert hashlib.sha256(out.read_bytes()).hexdigest() == sha  # untouched
    res = run_cli("data", "split", str(SAMPLE), "--out", str(out), "--seed", "6", "--force",
                  "--test-fraction", "0.25", "--val-fraction", "0")
    assert res.exit_code == 0, res.output
    assert hashlib.sha256(out.read_bytes()).hexdigest() != sha

    res = run_cli("data", "split", str(tmp_path / "nope"), "--out", str(tmp_path / "x.csv"))
    assert res.exit_code == 2
    res = run_cli("data", "check", str(tmp_path / "nope"))
    assert res.exit_code == 2


# ------------------------------------------------------------------------------------------------ full PBC


@pytest.mark.slow
def test_full_pbc():
    pbc = os.environ.get("WBC_EDGE_PBC")
    if not pbc or not Path(pbc).is_dir():
        pytest.skip("set WBC_EDGE_PBC to the full PBC folder (10,284 images) to run this test")
    scan = scan_dataset(pbc, progress=False)
    assert len(scan.records) == 10284
    assert scan.bad == []
    assert scan.class_counts == {"basophil": 1212, "eosinophil": 3111, "lymphocyte": 1214, "monocyte": 1419,
                                 "neutrophil": 3328}
    assert dict(scan.size_histogram()) == {(360, 363): 10034, (366, 369): 250}
    groups = scan.duplicates()
    assert groups.exact_sets == [] and groups.num_merged == 2
    assert groups.closest_unmerged[0] >= NEAR_DUP_THRESHOLD + 10
    m = make_split(scan.records, seed=42, groups=groups)
    assert {s: sum(c.values()) for s, c in m.summary().items()} == {"train": 7199, "val": 1028, "test": 2057}


def _cell_on_white(seed: int) -> Image.Image:
    """A segmented 'cell' on a flat white background, as Tecom's last crops are: a round body with its own
    nucleus shape (seeded), everything outside it exactly 255."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:120, :120]
    img = np.full((120, 120, 3), 255, np.uint8)
    body = (yy - 60) ** 2 + (xx - 60) ** 2 < 36 ** 2
    img[body] = (200, 150, 210)
    for _ in range(3):  # a lobed nucleus: three dark discs at seeded places
        cy, cx, r = rng.integers(40, 80), rng.integers(40, 80), rng.integers(8, 16)
        img[((yy - cy) ** 2 + (xx - cx) ** 2 < r ** 2) & body] = (70, 30, 110)
    return Image.fromarray(img)


def test_cells_on_a_flat_background_are_not_chained_into_one_group(tmp_path):
    """Issue 30: on a flat background every dHash comparison is 'not brighter', so different cells are a few
    bits apart and plain union-find chained 45 Tecom cells of all five classes into one group (a false label
    conflict).  Different cells stay apart; a flipped, re-encoded copy of one still joins it."""
    root = tmp_path / "lab"
    # seeds whose cells differ by > 15 grey levels (seed 5 draws nearly seed 2's nucleus: 7.3, one cell twice)
    for i, cls in zip((0, 1, 2, 3, 4, 6, 7, 8, 9, 10), WBC5 * 2, strict=True):
        (root / cls).mkdir(parents=True, exist_ok=True)
        _cell_on_white(i).save(root / cls / f"cell{i}.png")
    buf = io.BytesIO()
    _cell_on_white(0).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(buf, "JPEG", quality=70)
    (root / WBC5[0] / "cell0_copy.jpg").write_bytes(buf.getvalue())
    scan = scan_dataset(root, progress=False)
    from wbc_edge.data.dedup import THUMB_THRESHOLD, thumb_distance

    by = {r.path: r for r in scan.records}
    close = [(a, b) for a in by for b in by if a < b and hash_distance(by[a].dhash, by[b].dhash) <= NEAR_DUP_THRESHOLD]
    assert len(close) >= 10  # the hash alone would link many different cells: the test can fail
    groups = group_duplicates(scan.records)
    assert groups.merged == {groups.group_of[f"{WBC5[0]}/cell0.png"]: [f"{WBC5[0]}/cell0.png",
                                                                        f"{WBC5[0]}/cell0_copy.jpg"]}
    assert label_conflicts(scan.records, groups) == []
    assert thumb_distance(by[f"{WBC5[0]}/cell0.png"].thumb, by[f"{WBC5[0]}/cell0_copy.jpg"].thumb) < THUMB_THRESHOLD


def test_groups_never_chain_past_the_threshold():
    """Complete linkage: A~B and B~C within the threshold but A, C far apart -> A and C are not one group."""
    from dataclasses import dataclass

    from wbc_edge.data.dedup import HASH_BYTES

    @dataclass
    class Rec:
        path: str
        label: str
        sha256: str
        dhash: bytes
        thumb: bytes = b""

    def rec(name, ones):  # identity hash with the first `ones` bits set, the same for all 8 transforms
        bits = np.zeros(HASH_BYTES * 8, np.uint8)
        bits[:ones] = 1
        return Rec(name, "x", hashlib.sha256(name.encode()).hexdigest(), np.packbits(bits).tobytes() * 8)

    a, b, c = rec("a", 0), rec("b", 30), rec("c", 60)  # a~b 30, b~c 30, a~c 60
    groups = group_duplicates([a, b, c], threshold=36)
    assert groups.num_merged == 1 and groups.group_of["a"] != groups.group_of["c"]
    assert sorted(map(len, groups.members.values())) == [1, 2]


def test_a_declared_group_column_keeps_shifted_crops_of_one_cell_together(tmp_path):
    """Issue 31: LISC's shifted crops of one cell are not near-duplicates to a hash (1,186 groups for 224
    cells); its manifest.csv `group` column is honoured by the grouping and so by every split."""
    root = make_tree(tmp_path / "ds", {"basophil": 12, "eosinophil": 12})
    files = sorted(p.relative_to(root).as_posix() for p in root.glob("*/*.png"))
    # cells of 3 crops each: different noise images, declared as one group
    rows = [f"{f},{f.split('/')[0]},cell-{f.split('/')[0]}-{i // 3}" for i, f in enumerate(files)]
    (root / "manifest.csv").write_text("path,label,group\n" + "\n".join(rows) + "\n", encoding="utf-8")
    scan = scan_dataset(root, progress=False)
    groups = scan.duplicates()
    assert len(groups.members) == 8 and group_duplicates(scan.records).num_merged == 0
    for seed in (1, 2, 3):
        _, manifest, _ = split_dataset(root, tmp_path / f"s{seed}.csv", seed=seed, progress=False)
        split_of = {r.path: r.split for r in manifest.rows}
        for i in range(0, len(files), 3):
            assert len({split_of[f] for f in files[i:i + 3] if f.split("/")[0] == files[i].split("/")[0]}) == 1
    (root / "manifest.csv").write_text("path,label,group\nbasophil/x.png,basophil,\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="manifest.csv:2: empty path or group"):
        scan_dataset(root, progress=False).duplicates()
