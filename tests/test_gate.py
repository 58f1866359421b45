"""The unfamiliar-lab gate as a file (issue 32 item 4): the in-graph distance equals the feature distance's,
the exported float16 file and its thresholds, the runtime's per-image and per-batch verdicts, `predict --gate`."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from wbc_edge.core.errors import ModelFileError


@pytest.fixture(scope="module")
def gate_run(tiny_run_dir, tmp_path_factory):
    """The tiny run with its feature distance fitted and its gate exported (wbc_gate.tflite + .json)."""
    from wbc_edge.cli import main

    run = tmp_path_factory.mktemp("gate") / "run"
    shutil.copytree(tiny_run_dir, run)
    res = CliRunner().invoke(main, ["calibrate", str(run), "--feature-distance-only", "--quiet"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(main, ["export-gate", str(run), "--out", str(run / "export"), "--quiet"],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return run


def test_the_graph_computes_the_feature_distance(gate_run, sample_files):
    """Keras gate model vs FeatureDistance.distances on the same features (float32: exact up to rounding)."""
    from wbc_edge.calibrate.confidence import feature_model, load_feature_distance
    from wbc_edge.export.gate import gate_model
    from wbc_edge.model.network import load_model, model_input_size
    from wbc_edge.core.preprocess import preprocess_batch

    model = load_model(gate_run / "model.keras")
    fd = load_feature_distance(gate_run)
    x = preprocess_batch(sample_files[0], model_input_size(model)).astype(np.float32)
    want = fd.distances(feature_model(model)(x, training=False).numpy())
    got = gate_model(model, fd)(x, training=False).numpy().min(1)
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3 * float(np.median(want)))


def test_the_file_its_thresholds_and_the_verdicts(gate_run, sample_files):
    from wbc_edge.calibrate.confidence import load_feature_distance
    from wbc_edge.core.preprocess import preprocess
    from wbc_edge.runtime.gate import LabGate

    meta = json.loads((gate_run / "export" / "wbc_gate.json").read_text())
    fd = load_feature_distance(gate_run)
    assert meta["cut"] == pytest.approx(fd.cut) and meta["val_median"] == pytest.approx(fd.val_median)
    assert meta["batch_ratio"] > 1.0 and meta["batch_min"] == 20
    gate = LabGate(gate_run / "export" / "wbc_gate.tflite")
    px = np.stack([preprocess(p, meta["input_size"]) for p in sample_files[0]])
    d = gate.distances(px)
    assert d.shape == (40,) and np.all(d >= -1e-3 * np.median(np.abs(d)))  # squared distances (up to rounding)
    # float16 weights: the file's val median is within 5 % of the fit's
    assert meta["val_median_from_file"] == pytest.approx(fd.val_median, rel=0.05)
    assert np.array_equal(gate.far(d), d > gate.cut)
    near = gate.batch(np.full(25, 0.5 * gate.val_median))
    far = gate.batch(np.full(25, 2.0 * gate.batch_ratio * gate.val_median))
    small = gate.batch(np.full(5, 2.0 * gate.batch_ratio * gate.val_median))
    assert not near.unfamiliar and far.unfamiliar and not small.unfamiliar and far.far_share == 1.0
    with pytest.raises(ModelFileError, match="pixels"):
        gate.distances(np.zeros((1, 8, 8, 3), np.uint8))


def test_a_gate_without_its_description_or_with_anothers_is_refused(gate_run, tmp_path):
    from wbc_edge.runtime.gate import LabGate

    shutil.copyfile(gate_run / "export" / "wbc_gate.tflite", tmp_path / "wbc_gate.tflite")
    with pytest.raises(ModelFileError, match="not a readable gate description"):
        LabGate(tmp_path / "wbc_gate.tflite")
    meta = json.loads((gate_run / "export" / "wbc_gate.json").read_text())
    (tmp_path / "wbc_gate.json").write_text(json.dumps(dict(meta, sha256="0" * 64)))
    with pytest.raises(ModelFileError, match="sha256 differs"):
        LabGate(tmp_path / "wbc_gate.tflite")


def test_predict_flags_far_images_and_the_batch(gate_run, tiny_tflite, sample_root, tmp_path):
    from wbc_edge.cli import main

    res = CliRunner().invoke(main, ["predict", str(tiny_tflite["float32"]), str(sample_root), "--json", "--gate",
                                    str(gate_run / "export" / "wbc_gate.tflite")])
    assert res.exit_code == 0, res.output
    rows = [json.loads(x) for x in res.stdout.splitlines() if x.startswith("{")]
    assert len(rows) == 40 and all(isinstance(r["far_from_training"], bool) and r["distance"] >= 0 for r in rows)
    assert "# gate: " in res.stderr and ("batch of 40" in res.stderr or "UNFAMILIAR LAB" in res.stderr)
    # issue 32 item 5: one accept/refuse decision per image; a batch of >= 20 is judged as a whole
    confident = [r for r in rows if not r["uncertain"]]
    assert all(r["decision"] == "uncertain" for r in rows if r["uncertain"])
    lab = "unfamiliar-lab" if "UNFAMILIAR LAB" in res.stderr else "accept"
    assert confident and all(r["decision"] == lab for r in confident)
    # three cells are too few to judge the lab: each is refused as "far" exactly when it is far
    few = CliRunner().invoke(main, ["predict", str(tiny_tflite["float32"]), *map(str, sorted(sample_root.rglob("*.jpg"))[:3]),
                                    "--json", "--gate", str(gate_run / "export" / "wbc_gate.tflite")])
    assert few.exit_code == 0, few.output
    for r in (json.loads(x) for x in few.stdout.splitlines() if x.startswith("{")):
        assert r["decision"] == ("uncertain" if r["uncertain"] else "far" if r["far_from_training"] else "accept")
