"""The runtime cascade (issue 32): a quantised file whose margin is low hands the image to the float file of
the same model; which images are re-run, what is returned, what is refused, and `predict`'s default."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from wbc_edge.core.contract import embed_contract, read_contract, strip_contract
from wbc_edge.core.errors import ModelFileError
from wbc_edge.runtime import Classifier
from wbc_edge.runtime.cascade import float_companion, is_quantised
from wbc_edge.runtime.classifier import margins


@pytest.fixture(scope="module")
def pixels(tiny_tflite, sample_files):
    clf = Classifier(tiny_tflite["float32"])
    return np.stack([clf.preprocess(p) for p in sample_files[0]])


def test_margins():
    p = np.array([[0.7, 0.2, 0.1], [0.4, 0.4, 0.2]], dtype=np.float32)
    assert margins(p) == pytest.approx([0.5, 0.0])


@pytest.mark.parametrize("m", [0.0, "between", 1.0])
def test_images_below_the_margin_get_the_float_answer_the_rest_the_quantised_one(tiny_tflite, pixels, m):
    i8, f32 = Classifier(tiny_tflite["int8"]), Classifier(tiny_tflite["float32"])
    p8, p32 = i8.predict_pixels(pixels), f32.predict_pixels(pixels)
    if m == "between":  # a margin between this host's own int8 margins: some images re-run, some not, on any CPU
        mm = margins(i8.calibrated(p8))
        assert mm.min() < mm.max()
        m = float(mm.min() + mm.max()) / 2
    casc = Classifier(tiny_tflite["int8"], fallback=tiny_tflite["float32"], fallback_margin=m)
    out = casc.predict_pixels(pixels)
    rerun = margins(i8.calibrated(p8)) < m
    assert np.array_equal(casc.last_fallback, rerun)
    assert np.array_equal(out[rerun], p32[rerun]) and np.array_equal(out[~rerun], p8[~rerun])
    if m == 1.0:  # every image re-run: the cascade is the float file
        assert rerun.all() and np.array_equal(out.argmax(1), p32.argmax(1))
    if m == 0.0:
        assert not rerun.any()
    if 0.0 < m < 1.0:
        assert 0 < rerun.sum() < len(rerun)
    pred = casc.predict(pixels[int(np.argmax(rerun))] if rerun.any() else pixels[0])
    assert pred.fallback == bool(rerun.any()) and "fallback" in pred.to_dict()


def test_the_fallback_must_be_the_same_model_in_float(tiny_tflite, tmp_path):
    with pytest.raises(ModelFileError, match="must be a float file"):
        Classifier(tiny_tflite["int8"], fallback=tiny_tflite["int8"])
    c = read_contract(tiny_tflite["float32"])
    c.labels = list(c.labels[1:]) + [c.labels[0]]
    other = tmp_path / "relabelled.tflite"
    other.write_bytes(embed_contract(strip_contract(tiny_tflite["float32"].read_bytes()), c))
    with pytest.raises(ModelFileError, match="labels differ"):
        Classifier(tiny_tflite["int8"], fallback=other)
    c = read_contract(tiny_tflite["float32"])
    c.temperature = 1.7
    other.write_bytes(embed_contract(strip_contract(tiny_tflite["float32"].read_bytes()), c))
    with pytest.raises(ModelFileError, match="another model's file"):
        Classifier(tiny_tflite["int8"], fallback=other)
    with pytest.raises(Exception, match="fallback_margin"):
        Classifier(tiny_tflite["int8"], fallback=tiny_tflite["float32"], fallback_margin=1.5)


def test_predict_uses_the_float_file_beside_a_quantised_one_by_default(tiny_tflite, sample_root, tmp_path):
    from wbc_edge.cli import main

    folder = tmp_path / "export"
    folder.mkdir()
    for v in ("int8", "float32"):
        shutil.copyfile(tiny_tflite[v], folder / f"wbc_{v}.tflite")
    assert is_quantised(folder / "wbc_int8.tflite") and not is_quantised(folder / "wbc_float32.tflite")
    assert float_companion(folder / "wbc_int8.tflite") == folder / "wbc_float32.tflite"
    assert float_companion(folder / "wbc_float32.tflite") is None
    args = ["predict", str(folder / "wbc_int8.tflite"), str(sample_root), "--json", "--fallback-margin", "1"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    rows = [json.loads(x) for x in res.output.splitlines() if x.startswith("{")]
    assert len(rows) == 40 and all(r["fallback"] for r in rows)  # margin 1: every answer is float32's
    f32 = Classifier(folder / "wbc_float32.tflite")
    assert [r["label"] for r in rows] == [f32.predict(r["file"]).label for r in rows]
    res = CliRunner().invoke(main, args + ["--fallback", "none"])
    assert res.exit_code == 0 and not any(json.loads(x)["fallback"] for x in res.output.splitlines()
                                          if x.startswith("{"))
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copyfile(tiny_tflite["int8"], alone / "wbc_int8.tflite")
    res = CliRunner().invoke(main, ["predict", str(alone / "wbc_int8.tflite"), str(sample_root)])
    assert res.exit_code == 0 and "no float file of this model beside it" in res.output
    res = CliRunner().invoke(main, ["predict", str(alone / "wbc_int8.tflite"), str(sample_root), "--fallback",
                                    str(tmp_path / "nope.tflite")])
    assert res.exit_code == 2 and "nope.tflite" in res.output
