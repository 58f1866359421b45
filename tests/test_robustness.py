"""Robustness and safety: bad input gets a clear one-line error, nothing is lost, nothing untrusted runs.

Every fixture is generated here with a few lines of Pillow / numpy / tf_keras (no binary blobs).  Cases that
tests/test_data.py, test_runtime.py and test_train.py already assert are not repeated; docs/INPUT_HANDLING.md
maps every case to the test that covers it.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import shutil
import struct
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from helpers import tiny_train_config
from click.testing import CliRunner
from PIL import Image

from wbc_edge.core import atomic
from wbc_edge.core import preprocess as preprocess_mod
from wbc_edge.core.contract import ModelContract, embed_contract
from wbc_edge.data import ManifestRow, SplitManifest, scan_dataset, split_dataset
from wbc_edge.core.errors import BadImageError, DatasetError, ModelFileError
from wbc_edge.core.labels import WBC5, WBC5_LABELS
from wbc_edge.core.preprocess import load_image, preprocess

S = 32  # input size of the tiny .tflite model below
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


# ------------------------------------------------------------------------------------------------------
# helpers and fixtures
# ------------------------------------------------------------------------------------------------------

def noise(seed: int, size=(40, 36)) -> Image.Image:
    """A smooth random RGB picture (distinct seeds are distinct, non-flat images)."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8), "RGB").resize(
        size, Image.Resampling.BICUBIC)


def jpeg_bytes(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=95, **kw)
    return buf.getvalue()


def png_bytes(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG", **kw)
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height (1-bit grey) with an empty IDAT: ~60 bytes on disk."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b""))
            + chunk(b"IEND", b""))


def one_line_naming(exc: BaseException, path) -> str:
    msg = str(exc)
    assert "\n" not in msg, msg
    assert str(path) in msg, msg
    return msg


def good_tree(root: Path, per_class: dict[str, int], seed0: int = 0) -> Path:
    seed = seed0
    for cls, n in per_class.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            noise(seed).save(root / cls / f"good_{i}.png")
            seed += 1
    return root


def cli(*args, env=None):
    from wbc_edge.cli import main

    return CliRunner().invoke(main, [str(a) for a in args], env=env)


def sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def litter(folder: Path) -> list[str]:
    """Temporary files atomic writes would leave behind if they did not clean up."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if ".tmp-" in p.name)


@pytest.fixture(scope="module")
def tiny_tflite(tmp_path_factory) -> dict:
    """Tiny float32 .tflite classifiers (32 px) whose output depends on the image: softmax over
    (mean R, mean G, mean B, 0, 0) * 8 / 255, so a red picture is class 0.  Saved with WBC5 as the
    embedded labels, with the labels reversed, and with a foreign label set."""
    from wbc_edge.core.tfcompat import import_tf

    tf, _ = import_tf()

    @tf.function(input_signature=[tf.TensorSpec([1, S, S, 3], tf.float32)])
    def colour(x):
        m = tf.reduce_mean(x, axis=[1, 2]) * (8.0 / 255.0)
        return tf.nn.softmax(tf.concat([m, tf.zeros([1, 2])], axis=1))

    blob = tf.lite.TFLiteConverter.from_concrete_functions([colour.get_concrete_function()], colour).convert()
    out = tmp_path_factory.mktemp("tiny_tflite")
    paths = {}
    for name, labels in (("classes", list(WBC5)), ("reversed", list(reversed(WBC5))),
                         ("foreign", ["basophil", "eosinophil", "lymphocyte", "monocyte", "platelet"])):
        c = ModelContract(labels=labels, input_size=S, variant="float32", input_dtype="float32",
                          output_dtype="float32")
        paths[name] = out / f"colour_{name}.tflite"
        paths[name].write_bytes(embed_contract(blob, c))
    paths["bare"] = out / "colour_bare.tflite"
    paths["bare"].write_bytes(blob)
    return paths


@pytest.fixture(scope="module")
def clf(tiny_tflite):
    from wbc_edge.runtime import Classifier

    return Classifier(tiny_tflite["classes"])


# ------------------------------------------------------------------------------------------------------
# Images: refused with one line naming the file - the same message from preprocess, scan and runtime
# ------------------------------------------------------------------------------------------------------

def _make_bad_files(folder: Path) -> dict[str, str]:
    """{file name: expected reason fragment} of undecodable files, written into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    jpg = jpeg_bytes(noise(1, (80, 80)))
    png = png_bytes(noise(2, (80, 80)))
    (folder / "truncated.jpg").write_bytes(jpg[: len(jpg) // 2])
    (folder / "truncated.png").write_bytes(png[: len(png) // 2])
    (folder / "corrupt.jpg").write_bytes(jpg[:300] + b"\x00garbage" * 200)
    (folder / "zero.jpg").write_bytes(b"")
    (folder / "text.jpg").write_text("<html>404 Not Found</html>\n")
    noise(4).save(folder / "anim.jpg", "GIF")  # a GIF named .jpg: judged by content, not by name
    noise(3).save(folder / "real.gif")
    (folder / "folder.jpg").mkdir()
    (folder / "folder.jpg" / "inner.txt").write_text("x")
    expected = {"truncated.jpg": "truncated", "truncated.png": "truncated", "corrupt.jpg": "corrupt",
                "zero.jpg": "empty file (0 bytes)", "text.jpg": "not an image",
                "real.gif": "unsupported image format GIF",
                "anim.jpg": "GIF"}
    if sys.platform != "win32":
        os.symlink("loop_b.jpg", folder / "loop_a.jpg")
        os.symlink("loop_a.jpg", folder / "loop_b.jpg")
        expected["loop_a.jpg"] = expected["loop_b.jpg"] = "symlink loop"
    return expected


def test_bad_image_files_same_one_line_error_everywhere(tmp_path, clf):
    root = tmp_path / "ds"
    good_tree(root, {"basophil": 2})
    expected = _make_bad_files(root / "basophil")
    (root / "basophil" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + b"\x00" * 64)
    (root / "basophil" / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 64)

    scan = scan_dataset(root, labels=WBC5_LABELS, progress=False)  # one class folder: a model's labels
    assert len(scan.records) == 2, "the scan went on past every bad file"
    reasons = {b.path.split("/", 1)[1]: b.reason for b in scan.bad}
    # folder.jpg is a folder: walked into (its .txt is a bad file), never opened as an image
    assert set(reasons) == set(expected) | {".DS_Store", "Thumbs.db", "folder.jpg/inner.txt"}
    assert reasons[".DS_Store"] == reasons["Thumbs.db"] == "system file, not an image"

    for name, fragment in expected.items():
        path = root / "basophil" / name
        with pytest.raises(BadImageError) as by_preprocess:
            preprocess(path, S)
        msg = one_line_naming(by_preprocess.value, path)
        assert fragment in msg, msg
        assert by_preprocess.value.reason == reasons[name], "scan and preprocess disagree"
        with pytest.raises(BadImageError) as by_runtime:
            clf.predict(path)
        assert str(by_runtime.value) == msg
    # The operating systems' junk files are refused by preprocess / predict too, not decoded as something.
    for junk in (".DS_Store", "Thumbs.db", "folder.jpg"):
        with pytest.raises(BadImageError) as ei:
            preprocess(root / "basophil" / junk, S)
        one_line_naming(ei.value, root / "basophil" / junk)

    good_tree(root, {"monocyte": 1}, seed0=50)  # `data check` takes the classes from the folders: two needed
    res = cli("data", "check", root, "--no-progress")
    assert res.exit_code == 0, res.output
    assert f"3 valid images, {len(scan.bad)} bad files" in res.stdout


def _accepted_cases():
    """name -> (writer(path) -> expected RGB uint8 array, file suffix, original PIL mode, tolerance)."""
    base = noise(7)  # 40 x 36
    grey = base.convert("L")
    g = np.asarray(grey)

    def rgb_of(arr_l):
        return np.repeat(np.asarray(arr_l)[..., None], 3, axis=2)

    def over_white(rgb, alpha):
        a = alpha.astype(np.float64)[..., None] / 255.0
        return np.round(rgb.astype(np.float64) * a + 255.0 * (1.0 - a)).astype(np.uint8)

    alpha = np.tile(np.linspace(0, 255, 40).astype(np.uint8), (36, 1))

    def w_grey(p):
        grey.save(p)
        return rgb_of(g)

    def w_grey16(p):
        Image.fromarray(g.astype(np.uint16) * 257).save(p)  # full 16-bit range; >> 8 gives g back
        return rgb_of(g)

    def w_palette(p):
        pal = base.convert("P", palette=Image.Palette.ADAPTIVE, colors=32)
        pal.save(p)
        return np.asarray(pal.convert("RGB"))

    def w_palette_transparent(p):
        pal = base.convert("P", palette=Image.Palette.ADAPTIVE, colors=32)
        t = int(np.asarray(pal)[0, 0])
        pal.save(p, transparency=t)
        rgb = np.asarray(pal.convert("RGB")).copy()
        rgb[np.asarray(pal) == t] = 255  # transparent -> the white slide background, not black
        return rgb

    def w_rgba(p):
        im = base.convert("RGBA")
        im.putalpha(Image.fromarray(alpha))
        im.save(p)
        return over_white(np.asarray(base), alpha)

    def w_la(p):
        Image.merge("LA", (grey, Image.fromarray(alpha))).save(p)
        return over_white(rgb_of(g), alpha)

    def w_cmyk(p):
        base.convert("CMYK").save(p, "JPEG", quality=95)
        return np.asarray(base)

    def w_bilevel(p):
        bw = grey.point(lambda v: 255 if v > 127 else 0).convert("1")
        bw.save(p)
        return rgb_of(np.asarray(bw.convert("L")))

    def w_one_pixel(p):
        Image.new("RGB", (1, 1), (200, 10, 30)).save(p)
        return np.array([[[200, 10, 30]]], np.uint8)

    def w_rgb_jpeg(p):
        base.save(p, "JPEG", quality=95)
        return np.asarray(base)

    return {
        "grayscale": (w_grey, ".png", "L", 0),
        "16-bit-png": (w_grey16, ".png", "I;16", 0),
        "palette": (w_palette, ".png", "P", 0),
        "palette-transparent": (w_palette_transparent, ".png", "P", 0),
        "rgba": (w_rgba, ".png", "RGBA", 1),
        "grey+alpha": (w_la, ".png", "LA", 1),
        "cmyk-jpeg": (w_cmyk, ".jpg", "CMYK", "jpeg"),
        "bilevel": (w_bilevel, ".png", "1", 0),
        "1x1": (w_one_pixel, ".png", "RGB", 0),
        "rgb-jpeg": (w_rgb_jpeg, ".jpg", "RGB", "jpeg"),
    }


@pytest.mark.parametrize("kind", list(_accepted_cases()))
def test_accepted_image_kinds_become_rgb_the_same_way_everywhere(kind, tmp_path, clf):
    writer, suffix, mode, tol = _accepted_cases()[kind]
    path = tmp_path / "ds" / "monocyte" / f"cell{suffix}"
    path.parent.mkdir(parents=True)
    expected = writer(path)

    im = load_image(path)
    assert im.mode == "RGB"
    got = np.asarray(im)
    assert got.shape == expected.shape
    diff = np.abs(got.astype(int) - expected.astype(int))
    if tol == "jpeg":
        assert diff.mean() < 6, diff.mean()  # lossy, but the colours (CMYK included) are right
    else:
        assert diff.max() <= tol, diff.max()

    x = preprocess(path, S)
    assert x.shape == (S, S, 3) and x.dtype == np.uint8
    assert np.array_equal(x, preprocess(got, S)), "file and decoded-array paths differ"
    with Image.open(path) as opened:
        assert np.array_equal(x, preprocess(opened, S)), "file and PIL-image paths differ"

    scan = scan_dataset(tmp_path / "ds", labels=WBC5_LABELS, progress=False)
    assert scan.bad == [] and len(scan.records) == 1
    rec = scan.records[0]
    assert (rec.width, rec.height) == (got.shape[1], got.shape[0]) and rec.mode == mode

    assert np.array_equal(clf.preprocess(path), x)
    probs = clf.predict(path).probabilities
    assert probs.shape == (5,) and np.isfinite(probs).all() and abs(float(probs.sum()) - 1) < 1e-4


def test_exif_orientation_6_equals_the_manually_rotated_image(tmp_path, clf):
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = tmp_path / "ds" / "eosinophil" / "phone.jpg"
    path.parent.mkdir(parents=True)
    path.write_bytes(jpeg_bytes(noise(11, (48, 30)), exif=exif.tobytes()))
    with Image.open(path) as im:
        assert im.getexif().get(0x0112) == 6
        raw = np.asarray(im.convert("RGB"))  # the stored pixels, EXIF ignored: 30 rows x 48 columns
    upright = np.ascontiguousarray(np.rot90(raw, k=-1))  # rotated by hand, clockwise: 48 rows x 30 columns

    assert np.array_equal(np.asarray(load_image(path)), upright)
    x = preprocess(path, S)
    assert np.array_equal(x, preprocess(upright, S))
    assert not np.array_equal(x, preprocess(raw, S))
    with Image.open(path) as im:
        assert np.array_equal(preprocess(im, S), x)
    rec = scan_dataset(tmp_path / "ds", labels=WBC5_LABELS, progress=False).records[0]
    assert (rec.width, rec.height) == (30, 48)
    assert np.array_equal(clf.preprocess(path), x)


def test_decompression_bombs_refused_from_the_header(tmp_path, monkeypatch):
    root = tmp_path / "ds"
    good_tree(root, {"neutrophil": 2})
    bomb = root / "neutrophil" / "bomb.png"
    bomb.write_bytes(png_header_only(20000, 20000))  # claims 400 Mpx, 67 bytes on disk
    big = root / "neutrophil" / "big.png"
    big.write_bytes(png_header_only(9000, 9000))  # 81 Mpx: under Pillow's limit, over ours (50 Mpx)
    assert bomb.stat().st_size < 100
    for path, fragment in ((bomb, "decompression bomb"), (big, "image too large (9000x9000")):
        with pytest.raises(BadImageError) as ei:
            preprocess(path)
        assert fragment in one_line_naming(ei.value, path)
    scan = scan_dataset(root, labels=WBC5_LABELS, progress=False)
    assert len(scan.records) == 2
    assert {b.path for b in scan.bad} == {"neutrophil/bomb.png", "neutrophil/big.png"}

    # The limit is read at call time, so lowering wbc_edge.core.preprocess.MAX_PIXELS takes effect everywhere.
    monkeypatch.setattr(preprocess_mod, "MAX_PIXELS", 1000)
    small_ok = root / "neutrophil" / "small.png"
    noise(5, (30, 30)).save(small_ok)  # 900 px
    with pytest.raises(BadImageError, match=r"good_0.png: image too large \(40x36 = 1,440 pixels > 1,000"):
        preprocess(root / "neutrophil" / "good_0.png")
    assert preprocess(small_ok, S).shape == (S, S, 3)
    scan = scan_dataset(root, labels=WBC5_LABELS, progress=False)
    assert [r.path for r in scan.records] == ["neutrophil/small.png"]


def test_unreadable_file_and_folder_are_reported_not_fatal(tmp_path, monkeypatch):
    root = tmp_path / "ds"
    good_tree(root, {"lymphocyte": 2})
    locked = root / "lymphocyte" / "locked.png"
    noise(9).save(locked)
    locked_dir = root / "lymphocyte" / "locked_dir"
    locked_dir.mkdir()
    noise(10).save(locked_dir / "inside.png")

    if IS_ROOT:
        # root ignores chmod 000: simulate what the OS would say to an ordinary user.
        import PIL.Image

        real_open, real_scandir = PIL.Image.open, os.scandir

        def denying_open(fp, *a, **kw):
            if str(fp) == str(locked):
                raise PermissionError(errno.EACCES, "Permission denied", str(fp))
            return real_open(fp, *a, **kw)

        def denying_scandir(path="."):
            if str(path) == str(locked_dir):
                raise PermissionError(errno.EACCES, "Permission denied", str(path))
            return real_scandir(path)

        monkeypatch.setattr(PIL.Image, "open", denying_open)
        monkeypatch.setattr(os, "scandir", denying_scandir)
    else:
        locked.chmod(0)
        locked_dir.chmod(0)
    try:
        with pytest.raises(BadImageError) as ei:
            preprocess(locked)
        assert "permission denied" in one_line_naming(ei.value, locked)
        scan = scan_dataset(root, labels=WBC5_LABELS, progress=False)  # one class folder: a model's labels
    finally:
        if not IS_ROOT:
            locked.chmod(0o644)
            locked_dir.chmod(0o755)
    reasons = {b.path: b.reason for b in scan.bad}
    assert reasons == {"lymphocyte/locked.png": "permission denied",
                       "lymphocyte/locked_dir": "cannot list folder (Permission denied)"}
    assert len(scan.records) == 2


def test_scan_survives_unexpected_decoder_errors(tmp_path, monkeypatch):
    from wbc_edge.data import scan as data_mod  # the module that decodes

    root = good_tree(tmp_path / "ds", {"basophil": 4})
    real = data_mod.load_image

    def flaky(path, *a, **kw):
        name = os.path.basename(str(path))
        if name == "good_1.png":
            raise RuntimeError("decoder bug\nwith a second line")
        if name == "good_2.png":
            raise MemoryError()
        return real(path, *a, **kw)

    monkeypatch.setattr(data_mod, "load_image", flaky)
    scan = scan_dataset(root, labels=WBC5_LABELS, progress=False)
    assert [r.path for r in scan.records] == ["basophil/good_0.png", "basophil/good_3.png"]
    assert [(b.path, b.reason) for b in scan.bad] == [
        ("basophil/good_1.png", "unexpected error while decoding (RuntimeError: decoder bug)"),
        ("basophil/good_2.png", "unexpected error while decoding (MemoryError)"),
    ]


@pytest.mark.skipif(sys.platform != "linux", reason="needs a file system that takes arbitrary name bytes")
def test_file_names_the_manifest_cannot_hold_are_reported_not_fatal(tmp_path):
    root = good_tree(tmp_path / "ds", {"basophil": 4, "monocyte": 4})
    noise(20).save(os.path.join(os.fsencode(root / "basophil"), b"latin1-\xe9.png"), "PNG")  # not UTF-8
    noise(21).save(root / "monocyte" / "back\\slash.png", "PNG")
    noise(22).save(root / "monocyte" / "trailing .png ", "PNG")
    scan, manifest, _ = split_dataset(root, tmp_path / "split.csv", seed=0, test_fraction=0.25,
                                      val_fraction=0.25, progress=False)
    reasons = {b.path: b.reason for b in scan.bad}
    assert reasons == {"basophil/latin1-\\udce9.png": "file name is not valid UTF-8; rename the file",
                       "monocyte/back\\slash.png":
                           "file name contains a backslash (not portable); rename the file",
                       "monocyte/trailing .png ": "file name starts or ends with a space; rename the file"}
    assert len(manifest.rows) == 8
    assert SplitManifest.load(tmp_path / "split.csv").verify(root) == 8  # what was written reads back
    res = cli("data", "check", root, "--no-progress", "--json", tmp_path / "check.json")
    assert res.exit_code == 0, res.output
    assert len(json.loads((tmp_path / "check.json").read_text())["bad"]) == 3


# ------------------------------------------------------------------------------------------------------
# Datasets
# ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("case,fragment", [
    ("empty-root", "dataset folder is empty"),
    ("no-valid-images", "class 'monocyte'"),
    ("one-class", "only one class folder ('basophil')"),
    ("two-folders-one-class", "folders 'Neutrophils' and 'neutrophil' both mean class 'neutrophil'"),
    ("only-loose-files", "no class folders found"),
])
def test_cli_dataset_layout_errors_are_one_line(tmp_path, case, fragment):
    root = tmp_path / "ds"
    root.mkdir()
    if case == "no-valid-images":
        good_tree(root, {"basophil": 2})
        (root / "monocyte").mkdir()
        (root / "monocyte" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 nope")
    elif case == "one-class":
        good_tree(root, {"basophil": 2})
    elif case == "two-folders-one-class":
        good_tree(root, {"Neutrophils": 1, "neutrophil": 1})
    elif case == "only-loose-files":
        noise(1).save(root / "cell.png")
    for args in (("data", "check", root), ("data", "split", root, "--out", tmp_path / "split.csv")):
        res = cli(*args, "--no-progress")
        assert res.exit_code == 1, res.output
        assert res.stdout == "" or "Error" not in res.stdout
        err = res.stderr.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("Error: ") and fragment in err[0], res.stderr
        assert "Traceback" not in res.output
    assert not (tmp_path / "split.csv").exists()


def _manifest_without_test_class(sample_split_csv: Path, out: Path, cls: str) -> Path:
    m = SplitManifest.load(sample_split_csv)
    rows = [ManifestRow(r.path, r.label, r.sha256, r.group, "train" if (r.label == cls and r.split == "test")
                        else r.split) for r in m.rows]
    SplitManifest(rows).save(out)
    return out


def _tiny_cfg(sample_root, out, split_csv, **kw):
    return tiny_train_config(sample_root, out, split_csv, **{**dict(head_epochs=1, finetune_epochs=0, aug_views=0), **kw})


def test_split_missing_a_class_is_refused_by_train_and_evaluate(tmp_path, sample_root, sample_split_csv):
    from wbc_edge.model.scoring import collect_inputs
    from wbc_edge.train import train

    bad = _manifest_without_test_class(sample_split_csv, tmp_path / "no_mono_test.csv", "monocyte")
    pattern = r"no_mono_test.csv: split 'test' has no images of class\(es\) monocyte"
    with pytest.raises(DatasetError, match=pattern) as ei:
        collect_inputs(str(sample_root), "test", str(bad), progress=False)
    assert "\n" not in str(ei.value)
    assert len(collect_inputs(str(sample_root), "val", str(bad), progress=False).paths) == 5
    with pytest.raises(DatasetError, match=pattern):
        train(_tiny_cfg(sample_root, tmp_path / "run", bad), progress=False)
    assert not (tmp_path / "run" / "model.keras").exists()

    # A manifest paired with the wrong data folder fails up front, naming the first missing file.
    other = good_tree(tmp_path / "other", {c: 1 for c in WBC5})
    with pytest.raises(DatasetError, match=r"40 of 40 files in the split manifest are missing, first: b"):
        collect_inputs(str(other), "test", str(sample_split_csv), progress=False)
    with pytest.raises(DatasetError, match="missing"):
        train(_tiny_cfg(other, tmp_path / "run2", sample_split_csv), progress=False)

    # `--split all` on a cross-domain folder without some class still scores, and says what is absent.
    # (scored against the model's five classes: the folders hold two of them)
    xdomain = good_tree(tmp_path / "xdomain", {"basophil": 1, "neutrophil": 1})
    src = collect_inputs(str(xdomain), "all", None, labels=WBC5_LABELS, progress=False)
    assert "no images of: eosinophil, lymphocyte, monocyte" in src.source
    assert src.labels.tolist() == [0, 4] and src.label_set is WBC5_LABELS


def test_model_label_order_is_mapped_by_name_never_relabelled(tiny_tflite, tmp_path):
    from wbc_edge.runtime import Classifier

    red = np.zeros((S, S, 3), np.uint8)
    red[..., 0] = 255
    plain, rev = Classifier(tiny_tflite["classes"]), Classifier(tiny_tflite["reversed"])
    assert rev.labels == tuple(reversed(WBC5))
    # The runtime accepts any embedded order; each name stays attached to its own output.
    assert plain.predict(red).label == "basophil" and rev.predict(red).label == "neutrophil"
    assert np.array_equal(plain.output_order(WBC5), np.arange(5))
    assert np.array_equal(rev.output_order(), np.arange(5))  # default: the model's own order
    order = rev.output_order(WBC5)  # into WBC5 order, mapped by name
    assert order.tolist() == [4, 3, 2, 1, 0]
    p = rev.predict_pixels(red)[:, order][0]
    assert WBC5[int(np.argmax(p))] == rev.predict(red).label
    for name, prob in rev.predict(red).to_dict()["probabilities"].items():
        assert p[WBC5.index(name)] == pytest.approx(prob)
    with pytest.raises(ModelFileError, match=r"missing neutrophil, unexpected platelet") as ei:
        Classifier(tiny_tflite["foreign"]).output_order(WBC5)
    one_line_naming(ei.value, tiny_tflite["foreign"])

    # Explicit labels for a model with metadata must equal the embedded ones: no silent relabelling.
    assert Classifier(tiny_tflite["classes"], labels=list(WBC5)).labels == WBC5
    with pytest.raises(ModelFileError, match="in a different order than its embedded labels") as ei:
        Classifier(tiny_tflite["classes"], labels=list(reversed(WBC5)))
    one_line_naming(ei.value, tiny_tflite["classes"])
    with pytest.raises(ModelFileError, match="differ from its embedded labels"):
        Classifier(tiny_tflite["classes"], labels=["B", "E", "L", "M", "N"])
    img = tmp_path / "red.png"
    Image.fromarray(red).save(img)
    res = cli("predict", tiny_tflite["classes"], img, "--labels", ",".join(reversed(WBC5)))
    assert res.exit_code == 1 and res.stdout == ""
    assert len(res.stderr.strip().splitlines()) == 1 and "different order" in res.stderr
    # A model without metadata takes --labels as given (the caller states the order).
    res = cli("predict", tiny_tflite["bare"], img, "--json", "--labels", ",".join(reversed(WBC5)))
    assert res.exit_code == 0 and json.loads(res.stdout)["label"] == "neutrophil"


# ------------------------------------------------------------------------------------------------------
# Models: nothing in a model file is executed; wrong kinds and shapes are refused by name
# ------------------------------------------------------------------------------------------------------

def _small_keras(keras, tmp_path: Path, name: str, shape=(S, S, 3), classes=5) -> Path:
    inp = keras.Input(shape)
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 127.5, offset=-1)(inp))
    out = keras.layers.Dense(classes, activation="softmax")(x)
    path = tmp_path / f"{name}.keras"
    keras.Model(inp, out).save(path)
    return path


def _rewrite_config(src: Path, dst: Path, edit) -> Path:
    with zipfile.ZipFile(src) as zf:
        files = {n: zf.read(n) for n in zf.namelist()}
    cfg = json.loads(files["config.json"])
    edit(cfg)
    files["config.json"] = json.dumps(cfg).encode()
    with zipfile.ZipFile(dst, "w") as zf:
        for n, b in files.items():
            zf.writestr(n, b)
    return dst


def test_keras_lambda_layer_is_refused_and_never_runs(tmp_path):
    from wbc_edge.model.network import load_model
    from wbc_edge.core.tfcompat import import_tf

    tf, keras = import_tf()
    marker = tmp_path / "lambda_ran.txt"

    def side_effect(x, _marker=str(marker)):
        with open(_marker, "a") as fh:
            fh.write("the lambda ran\n")
        return x * 1.0

    inp = keras.Input((S, S, 3))
    y = keras.layers.Lambda(side_effect, name="innocent_looking")(inp)
    out = keras.layers.Dense(5, activation="softmax")(keras.layers.GlobalAveragePooling2D()(y))
    path = tmp_path / "lambda.keras"
    keras.Model(inp, out).save(path)
    assert marker.exists()  # building the model called it ...
    marker.unlink()

    with pytest.raises(ModelFileError, match="refusing to load a model with Lambda layer") as ei:
        load_model(path)
    one_line_naming(ei.value, path)

    # ... disguised: another class_name, Keras would fall back to registered_name 'Lambda'.
    def disguise(cfg):
        for layer in cfg["config"]["layers"]:
            if layer["class_name"] == "Lambda":
                layer["class_name"], layer["registered_name"] = "Identity", "Lambda"

    disguised = _rewrite_config(path, tmp_path / "disguised.keras", disguise)
    with pytest.raises(ModelFileError, match="Lambda"):
        load_model(disguised)
    res = cli("evaluate", path, tmp_path, "--split", "all")
    assert res.exit_code == 1 and len(res.stderr.strip().splitlines()) == 1 and "Lambda" in res.stderr
    assert not marker.exists(), "code from the model file was executed"


def test_keras_config_naming_another_module_is_refused_without_importing_it(tmp_path, monkeypatch):
    """tf_keras imports the `module` of every serialised object, even in safe mode: an edited config.json
    could run any importable module's code.  load_model refuses before Keras sees the file."""
    from wbc_edge.model.network import load_model
    from wbc_edge.core.tfcompat import import_tf

    tf, keras = import_tf()
    evil_dir = tmp_path / "site"
    evil_dir.mkdir()
    marker = tmp_path / "evil_ran.txt"
    (evil_dir / "wbc_robustness_evil.py").write_text(
        f"open({str(marker)!r}, 'w').write('imported')\n"
        f"def act(x):\n    open({str(marker)!r}, 'w').write('called')\n    return x\n"
        "class Evil:\n    pass\n")
    monkeypatch.syspath_prepend(str(evil_dir))
    good = _small_keras(keras, tmp_path, "good")
    assert load_model(good).output_shape == (None, 5)  # Keras' own modules pass the check

    def top_level(cfg):
        cfg["module"], cfg["class_name"] = "wbc_robustness_evil", "Evil"

    def os_system(cfg):
        layer = cfg["config"]["layers"][-1]
        layer["module"], layer["class_name"], layer["registered_name"] = "os", "system", None

    def activation(cfg):
        cfg["config"]["layers"][-1]["config"]["activation"] = {
            "module": "wbc_robustness_evil", "class_name": "function", "config": "act",
            "registered_name": "act"}

    def builtins_eval(cfg):
        cfg["config"]["layers"][-1]["config"]["activation"] = {
            "module": "builtins", "class_name": "function", "config": "eval", "registered_name": "eval"}

    evil = "wbc_robustness_evil"
    for edit, module in ((top_level, evil), (os_system, "os"), (activation, evil), (builtins_eval, "builtins")):
        bad = _rewrite_config(good, tmp_path / f"{edit.__name__}.keras", edit)
        with pytest.raises(ModelFileError, match=f"refers to module '{module}'") as ei:
            load_model(bad)
        one_line_naming(ei.value, bad)
    assert not marker.exists() and "wbc_robustness_evil" not in sys.modules


@pytest.mark.parametrize("kind", ["text", "truncated", "h5-suffix", "not-a-keras-zip"])
def test_keras_file_that_is_not_a_model(tmp_path, kind):
    from wbc_edge.model.network import load_model

    path = tmp_path / ("model.h5" if kind == "h5-suffix" else "model.keras")
    if kind == "text":
        path.write_text("not a model\n")
    elif kind == "truncated":
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr("config.json", json.dumps({"class_name": "Functional", "config": {}}) * 50)
        path.write_bytes(buf.getvalue()[:100])
    elif kind == "h5-suffix":
        path.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 100)
    else:
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("hello.txt", "hi")
    with pytest.raises(ModelFileError) as ei:
        load_model(path)
    one_line_naming(ei.value, path)


def test_evaluate_refuses_keras_model_of_the_wrong_shape(tmp_path, sample_root):
    from wbc_edge.model.scoring import evaluate_keras
    from wbc_edge.core.tfcompat import import_tf

    tf, keras = import_tf()
    three = _small_keras(keras, tmp_path, "three", classes=3)
    grey = _small_keras(keras, tmp_path, "grey", shape=(S, S, 1))
    with pytest.raises(ModelFileError, match=r"expected output shape \(None, 5\).*got \(None, 3\)") as ei:
        evaluate_keras(str(three), str(sample_root), split="all", out_dir=str(tmp_path / "ev"),
                       progress=False)
    one_line_naming(ei.value, three)
    with pytest.raises(ModelFileError, match=r"expected input shape \(None, S, S, 3\)"):
        evaluate_keras(str(grey), str(sample_root), split="all", out_dir=str(tmp_path / "ev"), progress=False)
    assert not (tmp_path / "ev").exists()


def test_cli_train_missing_weights_file_is_one_line_and_writes_nothing(tmp_path, sample_root):
    out = tmp_path / "run"
    for weights, fragment in ((tmp_path / "nonexistent.h5", "weights file not found (expected a MobileNetV2"),
                              (sample_root / "basophil", "weights file not found")):
        res = cli("train", sample_root, "--out", out, "--weights", weights, "--alpha", "0.35")
        assert res.exit_code == 1, res.output
        err = res.stderr.strip().splitlines()
        assert len(err) == 1 and str(weights) in err[0] and fragment in err[0], res.stderr
        assert "no-top" in err[0] and "Traceback" not in res.output
    text = tmp_path / "weights.h5"
    text.write_text("not hdf5")
    res = cli("train", sample_root, "--out", out, "--weights", text)
    assert res.exit_code == 1 and "not an HDF5" in res.stderr
    assert not out.exists(), "a bad --weights must fail before RUN_DIR is created"


def test_cli_train_zoom_overrides_only_the_presets_zoom_range(tmp_path, sample_root, monkeypatch):
    """`--zoom MIN MAX` reaches the training config with the rest of the preset unchanged; MIN > MAX is a
    one-line error before RUN_DIR exists."""
    import wbc_edge.train
    from wbc_edge.data.augment import preset

    seen = {}
    monkeypatch.setattr(wbc_edge.train, "train", lambda cfg, **kw: seen.setdefault("cfg", cfg))
    out = tmp_path / "run"
    res = cli("train", sample_root, "--out", out, "--zoom", "0.5", "2.8", "--quiet")
    assert res.exit_code == 0, res.output
    assert seen["cfg"].augment == preset("robust", zoom_min=0.5, zoom_max=2.8) != preset("robust")
    res = cli("train", sample_root, "--out", out, "--augment", "scale", "--quiet")
    assert res.exit_code == 0 and seen["cfg"].augment == preset("robust", zoom_min=0.5, zoom_max=2.8)  # first call kept
    seen.clear()
    res = cli("train", sample_root, "--out", out, "--augment", "scale", "--quiet")
    assert seen["cfg"].augment == preset("scale")        # no --zoom: the preset's own range
    res = cli("train", sample_root, "--out", out, "--zoom", "2", "1")
    assert res.exit_code == 1 and len(res.stderr.strip().splitlines()) == 1
    assert "zoom_min <= zoom_max" in res.stderr and not out.exists()


# ------------------------------------------------------------------------------------------------------
# Runs: interrupted and failed writes lose nothing
# ------------------------------------------------------------------------------------------------------

def test_interrupted_force_retrain_keeps_the_finished_run_and_resumes(tmp_path, sample_root, sample_split_csv,
                                                                       monkeypatch):
    from wbc_edge import train as train_mod

    out = tmp_path / "run"
    train_mod.train(_tiny_cfg(sample_root, out, sample_split_csv), progress=False)
    kept = ("model.keras", "split.csv", "run.json", "history.json", "curves.png", "test_metrics.json")
    before = {name: sha(out / name) for name in kept}

    other_split = tmp_path / "split_seed7.csv"
    split_dataset(sample_root, other_split, seed=7, progress=False)
    assert sha(other_split) != before["split.csv"]
    retrain = _tiny_cfg(sample_root, out, other_split)
    original_extract = train_mod.CachedTrainer.extract

    def ctrl_c(self, split, view):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_mod.CachedTrainer, "extract", ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        train_mod.train(retrain, force=True, progress=False)
    assert {name: sha(out / name) for name in kept} == before, "the finished run's artifacts changed"
    assert litter(out) == []

    # The same command again (no --force) resumes the retrain instead of calling the directory finished.
    monkeypatch.setattr(train_mod.CachedTrainer, "extract", original_extract)
    train_mod.train(retrain, progress=False)
    run = json.loads((out / "run.json").read_text())
    assert run["resumed"] is True
    assert sha(out / "split.csv") == sha(other_split) == run["split_manifest_sha256"]
    assert run["model_sha256"] == sha(out / "model.keras")
    assert not (out / "checkpoints" / "split.csv").exists() and litter(out) == []


class _DiskFullFile:
    """A file object that writes part of the data, then fails like a full disk."""

    def __init__(self, fh):
        self._fh = fh

    def write(self, data):
        self._fh.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self._fh, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._fh.close()


def _disk_full_open(*args, **kwargs):
    return _DiskFullFile(open(*args, **kwargs))


def test_atomic_writes_keep_the_old_file_and_leave_no_litter(tmp_path, monkeypatch):
    target = tmp_path / "artifact.json"
    atomic.write_json(target, {"version": 1})
    old = target.read_bytes()

    def check():
        assert target.read_bytes() == old
        assert sorted(p.name for p in tmp_path.iterdir()) == ["artifact.json"]

    # disk full in the middle of the write
    monkeypatch.setattr(atomic, "open", _disk_full_open, raising=False)
    with pytest.raises(OSError) as ei:
        atomic.write_json(target, {"version": 2, "payload": "x" * 100_000})
    assert ei.value.errno == errno.ENOSPC
    check()
    monkeypatch.undo()

    # disk full only noticed at fsync (delayed allocation)
    def fsync_full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", fsync_full)
    with pytest.raises(OSError):
        atomic.write_bytes(target, b"new")
    monkeypatch.undo()
    check()

    # Ctrl-C while a writer (Keras' model.save, savefig) fills the temp file or folder
    for make in (lambda p: p.write_bytes(b"PK\x03\x04 half a zip"), lambda p: (p.unlink(), p.mkdir(),
                                                                             (p / "part").write_text("x"))):
        with pytest.raises(KeyboardInterrupt):
            with atomic.atomic_path(target) as tmp:
                make(tmp)
                raise KeyboardInterrupt
        check()

    # success replaces the file and keeps the usual permissions (not mkstemp's 0600)
    atomic.write_json(target, {"version": 3})
    assert json.loads(target.read_text()) == {"version": 3}
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask


def test_disk_full_while_writing_a_manifest_leaves_no_valid_looking_file(tmp_path, monkeypatch, sample_root):
    monkeypatch.setattr(atomic, "open", _disk_full_open, raising=False)
    out = tmp_path / "split.csv"
    res = cli("data", "split", sample_root, "--out", out, "--no-progress")
    assert res.exit_code == 1
    err = res.stderr.strip().splitlines()
    assert len(err) == 1 and err[0] == f"Error: {out}: No space left on device", res.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_cli_train_refuses_an_existing_non_run_directory(tmp_path, sample_root):
    out = tmp_path / "precious"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    res = cli("train", sample_root, "--out", out, "--weights", "none")
    assert res.exit_code == 1 and len(res.stderr.strip().splitlines()) == 1
    assert "not a wbc-edge run; use --force" in res.stderr
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    assert (out / "notes.txt").read_text() == "keep me"


# ------------------------------------------------------------------------------------------------------
# CLI: usage errors exit 2, failures exit 1 with one line, --debug shows the traceback, Ctrl-C exits 130
# ------------------------------------------------------------------------------------------------------

@pytest.fixture()
def paths(tmp_path, sample_root):
    model = tmp_path / "model.keras"
    model.write_bytes(b"x")
    return {"data": sample_root, "model": model, "missing": tmp_path / "missing", "file": model,
            "out": tmp_path / "out"}


USAGE_ERRORS = [
    ("data", "check"),
    ("data", "check", "{missing}"),
    ("data", "check", "{file}"),
    ("data", "check", "{data}", "--bogus"),
    ("data", "split", "{data}"),
    ("data", "split", "{missing}", "--out", "{out}"),
    ("data", "split", "{data}", "--out", "{out}", "--test-fraction", "1.5"),
    ("data", "split", "{data}", "--out", "{out}", "--seed", "abc"),
    ("train", "{data}"),
    ("train", "{missing}", "--out", "{out}"),
    ("train", "{data}", "--out", "{out}", "--mode", "fast"),
    ("train", "{data}", "--out", "{out}", "--batch-size", "0"),
    ("train", "{data}", "--out", "{out}", "--limit-per-class", "-1"),
    ("train", "{data}", "--out", "{out}", "--split-manifest", "{missing}"),
    ("train", "{data}", "--out", "{out}", "--bogus"),
    ("train", "{data}", "--out", "{out}", "--zoom", "0", "2"),
    ("evaluate", "{model}"),
    ("evaluate", "{missing}", "{data}"),
    ("evaluate", "{model}", "{missing}"),
    ("evaluate", "{model}", "{data}", "--split", "holdout"),
    ("predict", "{missing}", "{file}"),
    ("predict", "{model}"),
    ("predict", "{model}", "{missing}"),
    ("predict", "{model}", "{file}", "--top-k", "0"),
    ("predict", "{model}", "{file}", "--bogus"),
    ("no-such-command",),
]


@pytest.mark.parametrize("args", USAGE_ERRORS, ids=lambda a: " ".join(a))
def test_cli_usage_errors_exit_2(paths, args):
    res = cli(*(a.format(**paths) for a in args))
    assert res.exit_code == 2, res.output
    assert "Usage:" in res.stderr and "Error:" in res.stderr and "Traceback" not in res.output
    assert not paths["out"].exists()


def test_cli_failure_is_one_line_and_debug_shows_the_traceback(tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    res = cli("data", "check", empty)
    assert res.exit_code == 1 and res.stdout == ""
    assert res.stderr == f"Error: {empty}: dataset folder is empty (expected one folder per class)\n"
    res = cli("--debug", "data", "check", empty)
    assert res.exit_code == 1
    assert "Traceback (most recent call last)" in res.stderr and "DatasetError" in res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith("Error: ")

    # A bug (not a user error) is still one line, with a pointer to --debug.
    from wbc_edge import data as data_mod

    def buggy(*a, **kw):
        raise RuntimeError("internal invariant broken\nsecond line")

    monkeypatch.setattr(data_mod, "scan_dataset", buggy)
    res = cli("data", "check", empty)
    assert res.exit_code == 1
    assert res.stderr == ("Error: unexpected RuntimeError: internal invariant broken "
                          "(run with --debug for the traceback)\n")
    res = cli("--debug", "data", "check", empty)
    assert "Traceback" in res.stderr and "second line" in res.stderr


def test_cli_keyboard_interrupt_exits_130(tmp_path, monkeypatch, sample_root):
    from wbc_edge import data as data_mod

    def interrupted(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(data_mod, "scan_dataset", interrupted)
    monkeypatch.setattr(data_mod.split, "scan_dataset", interrupted)  # what split_dataset calls
    out = tmp_path / "split.csv"
    for args in (("data", "check", sample_root), ("data", "split", sample_root, "--out", out)):
        res = cli(*args)
        assert res.exit_code == 130, res.output
        assert "Interrupted" in res.stderr and "Traceback" not in res.output
    assert not out.exists()


def test_read_json_names_the_file_and_the_problem_in_one_line(tmp_path):
    """The one JSON reader (manifests, bench results, run.json): missing, corrupt and non-UTF-8 files."""
    from wbc_edge.core.errors import ModelFileError

    kw = dict(missing="thing not found", unreadable="not a readable thing")
    good = tmp_path / "good.json"
    good.write_text('{"a": 1}')
    assert atomic.read_json(good, ModelFileError, **kw) == {"a": 1}
    for name, data, expected in [("missing.json", None, "thing not found"),
                                 ("cut.json", b'{"a": ', "not a readable thing ("),
                                 ("latin1.json", b'{"a": "\xe9"}', "not a readable thing (")]:
        p = tmp_path / name
        if data is not None:
            p.write_bytes(data)
        with pytest.raises(ModelFileError) as exc:
            atomic.read_json(p, ModelFileError, **kw)
        msg = str(exc.value)
        assert msg.startswith(f"{p}: {expected}") and "\n" not in msg, msg


_NO_TF_ON_BAD_MODEL = r"""
import sys
from click.testing import CliRunner
from wbc_edge.cli import main
res = CliRunner().invoke(main, sys.argv[1:])
print("RESULT", res.exit_code, "tensorflow" in sys.modules, res.output.strip().splitlines()[-1])
"""


@pytest.mark.parametrize("cmd", [
    ["evaluate", "{model}", "{data}"],
    ["crossdomain", "{model}", "--data", "{data}"],
    ["export", "{run}", "--data", "{data}", "--out", "{out}"],
    ["calibrate", "{run}", "--data", "{data}"],
])
def test_a_damaged_model_fails_before_tensorflow_starts(cmd, tmp_path, sample_root, sample_split_csv):
    """Issue 30: a wrong model file failed only after 6-7 s of TensorFlow start-up; the file checks that need
    no TensorFlow (exists, .keras, a readable archive, no code-carrying layers) now come first."""
    import subprocess

    run = tmp_path / "run"
    run.mkdir()
    (run / "model.keras").write_bytes(b"PK\x03\x04 not a zip")
    shutil.copyfile(sample_split_csv, run / "split.csv")
    (run / "run.json").write_text(json.dumps({"config": {"data_root": str(sample_root)}}), encoding="utf-8")
    args = [a.format(model=run / "model.keras", data=sample_root, run=run, out=tmp_path / "o") for a in cmd]
    proc = subprocess.run([sys.executable, "-c", _NO_TF_ON_BAD_MODEL, *args], capture_output=True, text=True,
                          timeout=120)
    line = proc.stdout.strip().splitlines()[-1]
    code, tf_loaded, message = line.split(" ", 3)[1:]
    assert code != "0" and tf_loaded == "False", line
    assert "model.keras" in message and "not a valid .keras model archive" in message, line


def test_a_large_image_gets_our_one_line_error_and_no_pillow_warning(tmp_path):
    """Issue 30: a 100 Mpx file printed Pillow's DecompressionBombWarning before our own refusal."""
    import subprocess

    big = tmp_path / "huge.png"
    big.write_bytes(png_header_only(10000, 10000))  # 100 Mpx: over Pillow's warning limit (~89 Mpx)
    code = ("import sys; from wbc_edge.core.preprocess import preprocess\n"
            "try:\n    preprocess(sys.argv[1])\nexcept Exception as e:\n    print('ERR', e)")
    proc = subprocess.run([sys.executable, "-W", "default", "-c", code, str(big)], capture_output=True, text=True,
                          timeout=60)
    assert "image too large (10000x10000" in proc.stdout and "huge.png" in proc.stdout, proc.stdout
    assert "DecompressionBombWarning" not in proc.stderr, proc.stderr
