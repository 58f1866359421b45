"""wbc_edge.export / `wbc-edge export`: every variant converts, runs and describes itself; the parity gate;
atomic writes; byte-identical re-runs; the Android bundle.  (The registry, failure stages and labels:
tests/test_export_registry.py.)

Expensive conversions are shared: `full_export` (all five variants + Android bundle, once per module).
The tiny model is trained from scratch on 40 images and quantises worse than a real model, so the shared
export relaxes the int8 gate; the gate itself is exercised by a deliberately broken calibration and by unit
tests of the gate function.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from wbc_edge.core.labels import WBC5, WBC5_LABELS
from wbc_edge.core.errors import WbcEdgeError

ALL = ("float32", "float16", "dynamic", "int8", "qat_int8")
RELAXED = dict(min_int8_agreement=0.0, max_int8_drop=100.0, min_float_agreement=80.0)


def _sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def full_export(tiny_run_dir, tmp_path_factory):
    from wbc_edge.export import ExportConfig, export_model

    base = tmp_path_factory.mktemp("export_all")
    cfg = ExportConfig(tiny_run_dir, out_dir=base / "out", variants=ALL, calibration_size=20, qat_images=16, qat_epochs=1,
                       qat_batch_size=8, save_qat_model=True, android_dir=base / "android",
                       parity_domains=(f"lab={sample_root_for_export(tiny_run_dir)}",), **RELAXED)
    return export_model(cfg)


def sample_root_for_export(run_dir: Path) -> str:
    return json.loads((run_dir / "run.json").read_text())["config"]["data_root"]


# --------------------------------------------------------------------------------------------- shared export

def test_every_variant_converts_and_runs(full_export, sample_files):
    from wbc_edge.runtime import Classifier

    res = full_export
    assert res.ok and res.manifest["status"] == "ok", res.manifest
    entries = {e["variant"]: e for e in res.manifest["variants"]}
    assert list(entries) == list(ALL)
    paths, labels = sample_files
    for variant, e in entries.items():
        f = res.out_dir / f"wbc_{variant}.tflite"
        assert f.is_file() and res.files[variant] == f
        assert e["status"] == "ok" and e["reason"] is None
        assert e["bytes"] == f.stat().st_size and e["sha256"] == _sha(f)
        assert e["conversion_seconds"] > 0
        p = e["parity"]
        assert p["n"] == 10 and 0 <= p["agreement_pct"] <= 100
        assert p["max_abs_dprob"] >= p["mean_abs_dprob"] >= 0
        clf = Classifier(f)
        pred = clf.predict(paths[0])
        assert pred.label in WBC5 and abs(float(np.sum(pred.probabilities)) - 1) < 0.05
    assert entries["float32"]["parity"]["agreement_pct"] == 100.0
    assert entries["float32"]["parity"]["max_abs_dprob"] < 1e-4
    assert entries["int8"]["calibration_size"] == entries["qat_int8"]["calibration_size"] == 20
    size = {v: e["bytes"] for v, e in entries.items()}
    assert size["float16"] < size["float32"] and size["dynamic"] < size["float32"]
    assert size["int8"] < size["float32"] and size["qat_int8"] < size["float32"]
    qat = entries["qat_int8"]["qat"]
    assert qat["images"] == 16 and qat["epochs"] == 1 and qat["ranges_calibrated"] > 10


def test_contract_round_trip_matches_interpreter(full_export, tiny_run_dir):
    from wbc_edge.core.contract import read_contract
    from wbc_edge.core.preprocess import PREPROCESS_VERSION
    from wbc_edge.runtime import load_backend

    model_sha = _sha(tiny_run_dir / "model.keras")
    split_sha = _sha(tiny_run_dir / "split.csv")
    from wbc_edge.export.metadata_read import check_standard_metadata, read_standard_metadata

    for variant, path in full_export.files.items():
        c = read_contract(path)
        assert c is not None and c.variant == variant
        # standard TFLite metadata (MediaPipe Tasks) next to our contract
        assert check_standard_metadata(path) == [], variant
        assert read_standard_metadata(path)["name"].endswith(f"({variant})")
        assert c.labels == list(WBC5) and c.input_size == 96
        assert c.preprocess == PREPROCESS_VERSION
        assert c.source_model_sha256 == model_sha and c.split_manifest_sha256 == split_sha
        assert c.versions.get("tensorflow")
        interp = load_backend().interpreter_cls(model_path=str(path))
        interp.allocate_tensors()
        inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
        assert list(inp["shape"]) == [1, 96, 96, 3] and list(out["shape"]) == [1, len(WBC5)]
        assert c.input_dtype == np.dtype(inp["dtype"]).name and c.output_dtype == np.dtype(out["dtype"]).name
        if variant in ("int8", "qat_int8"):
            assert c.input_dtype == "uint8" and c.output_dtype == "uint8"
            assert (c.input_scale, c.input_zero_point) == (1.0, 0) == tuple(inp["quantization"])
            assert (c.output_scale, c.output_zero_point) == tuple(out["quantization"])
            assert c.output_scale == pytest.approx(1 / 256)
        else:
            assert c.input_dtype == c.output_dtype == "float32"
            assert c.input_scale is None and c.output_scale is None


def test_manifest_records_sources_and_versions(full_export, tiny_run_dir, sample_root):
    m = json.loads(full_export.manifest_path.read_text())
    assert m == json.loads(json.dumps(full_export.manifest))
    assert m["source_model"]["sha256"] == _sha(tiny_run_dir / "model.keras")
    assert m["split_manifest"]["sha256"] == _sha(tiny_run_dir / "split.csv")
    assert Path(m["data_root"]) == sample_root  # from run.json's config.data_root
    assert m["calibration"]["split"] == "train" and m["calibration"]["size"] == 20
    per_class = m["calibration"]["per_class"]
    assert set(per_class) == set(WBC5) and min(per_class.values()) >= 1
    assert m["parity_reference"]["split"] == "test" and m["parity_reference"]["n"] == 10
    assert {"tensorflow", "tf_keras", "numpy"} <= set(m["versions"])
    assert m["android"]["status"] == "ok" and m["android"]["source_variant"] in ("int8", "qat_int8")
    assert all(e["flatbuffer_sha256"] for e in m["variants"])
    # run.json of this run stores no labels: a 5-output model made before labels were stored is WBC5
    assert m["labels"] == list(WBC5) and "five WBC classes" in m["labels_source"]
    assert all(e["stage"] is None and e["converter"]["qat"] == (e["variant"] == "qat_int8") for e in m["variants"])
    assert m["split_manifest"]["file_sha256"] == _sha(tiny_run_dir / "split.csv")
    # int8 calibration and QAT draw half their images from the augmented distribution (seeded) ...
    assert m["calibration"]["augmented"] == {"preset": "robust", "images": 10}
    qat = next(e for e in m["variants"] if e["variant"] == "qat_int8")
    assert qat["qat"]["augmented_images"] == 8
    # ... and every variant is also checked for agreement on each --parity-data domain (all its images).
    assert m["parity_domains"]["lab"]["n"] == 40
    for e in m["variants"]:
        d = e["parity_domains"]["lab"]
        assert d["n"] == 40 and 0 <= d["agreement_pct"] <= 100 and "max_accuracy_drop_pp" not in d["gate"]


def test_qat_model_saved_as_h5(full_export):
    from wbc_edge.export.qat import load_qat_model

    h5 = full_export.out_dir / "qat_model.h5"
    assert h5.is_file() and full_export.manifest["variants"][-1]["qat"]["saved"] == "qat_model.h5"
    qm = load_qat_model(h5)
    assert any(type(layer).__name__ == "QuantizeLayer" for layer in qm.layers)


def test_android_bundle_good_and_tampered(full_export, tmp_path):
    from wbc_edge.export import check_android_bundle

    d = full_export.android_dir
    assert d is not None and check_android_bundle(d) == []
    meta = json.loads((d / "wbc_model.json").read_text())
    assert meta["input"]["shape"] == [1, 96, 96, 3] and meta["input"]["dtype"] == "uint8"
    assert (meta["input"]["scale"], meta["input"]["zero_point"]) == (1.0, 0)
    assert meta["labels"] == list(WBC5)
    assert (d / "labels.txt").read_text().split() == list(WBC5)
    src = full_export.files[meta["variant"]]
    assert (d / "wbc_int8.tflite").read_bytes() == src.read_bytes()  # contract stays embedded
    readme = (d / "README.md").read_text()
    assert "Interpreter" in readme and "ARGB_8888" in readme and "createScaledBitmap" in readme

    bad = tmp_path / "labels"
    shutil.copytree(d, bad)
    (bad / "labels.txt").write_text("\n".join(WBC5[:-1]) + "\n")
    problems = check_android_bundle(bad)
    assert any("4 labels but the model outputs 5" in p for p in problems), problems

    bad = tmp_path / "model"
    shutil.copytree(d, bad)
    with open(bad / "wbc_int8.tflite", "ab") as fh:
        fh.write(b"x")
    assert any("sha256" in p for p in check_android_bundle(bad))

    bad = tmp_path / "missing"
    shutil.copytree(d, bad)
    (bad / "README.md").unlink()
    assert check_android_bundle(bad) == ["README.md: missing"]


def test_android_bundle_with_non_utf8_labels_is_a_problem_not_a_crash(tmp_path):
    """A labels.txt that is not UTF-8 is one reported problem (it raised UnicodeDecodeError)."""
    from wbc_edge.export import check_android_bundle

    bad = tmp_path / "bundle"
    shutil.copytree(Path(__file__).resolve().parents[1] / "android_assets", bad)
    (bad / "labels.txt").write_bytes("basophil\néosinophil\n".encode("latin-1"))
    problems = check_android_bundle(bad)
    assert [p for p in problems if p.startswith("labels.txt")] == \
        ["labels.txt: not UTF-8 text (byte 9: invalid continuation byte)"], problems
    assert all("\n" not in p for p in problems)


def test_android_bundle_with_corrupt_contract_is_a_problem_not_a_crash(full_export, tmp_path):
    """A contract field of the wrong type (input_size "abc") is reported by the checker (was ValueError)."""
    from wbc_edge.core.contract import ModelContract, embed_contract, read_contract
    from wbc_edge.export import check_android_bundle
    from wbc_edge.export.android import check_android_bundle as check_from_android

    assert check_android_bundle is check_from_android  # one function, both import paths
    bad = tmp_path / "contract"
    shutil.copytree(full_export.android_dir, bad)
    model = bad / "wbc_int8.tflite"
    c = read_contract(model)
    corrupt = ModelContract(**{**dataclasses.asdict(c), "input_size": "abc"})
    model.write_bytes(embed_contract(model.read_bytes(), corrupt))
    problems = check_android_bundle(bad)
    assert any("embedded contract field 'input_size' must be a positive integer" in p for p in problems), \
        problems


# --------------------------------------------------------------------------------------------- further runs

def test_rerun_is_byte_identical_and_model_file_source(full_export, tiny_run_dir, sample_root, tmp_path):
    """Same inputs -> the same float32 and int8 bytes; also the MODEL + --data + --split-manifest form."""
    from wbc_edge.export import ExportConfig, export_model

    shutil.copytree(tiny_run_dir, tmp_path / "bare")
    (tmp_path / "bare" / "run.json").unlink()  # no recorded data root: --data must be given
    res = export_model(ExportConfig(tmp_path / "bare" / "model.keras", out_dir=tmp_path / "out",
                                    variants=("int8", "float32"), data_root=sample_root,
                                    split_manifest=tiny_run_dir / "split.csv", calibration_size=20,
                                    verbose=False, **RELAXED))
    assert list(res.files) == ["float32", "int8"]
    for v in ("float32", "int8"):
        assert _sha(res.files[v]) == _sha(full_export.files[v]), f"{v} is not byte-identical on re-run"


def test_broken_calibration_fails_gate_and_cli_exits_nonzero(tiny_run_dir, tmp_path, monkeypatch):
    """Calibrating with pixels in [0, 1] instead of 0..255: int8 marked failed, file kept, exit status 1."""
    from click.testing import CliRunner

    import wbc_edge.export as export_mod
    from wbc_edge.cli import main

    real = export_mod.export_model

    def broken(cfg, *args, **kwargs):
        return real(dataclasses.replace(cfg, calibration_transform=lambda x: x / 255.0), *args, **kwargs)

    monkeypatch.setattr(export_mod, "export_model", broken)
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["export", str(tiny_run_dir), "--int8", "--out", str(out),
                                  "--calibration-size", "20", "--parity-limit", "5"])
    assert r.exit_code == 1, r.output
    assert "int8" in r.output and "failed" in r.output
    m = json.loads((out / "manifest.json").read_text())
    assert m["status"] == "failed" and m["parity_reference"]["n"] == 5
    (e,) = m["variants"]
    assert e["variant"] == "int8" and e["status"] == "failed" and e["stage"] == "parity gate"
    assert e["reason"].startswith("parity gate: ")
    assert "scale" in e["reason"] and "expected uint8 raw pixels" in e["reason"]
    assert (out / "wbc_int8.tflite").is_file() and e["sha256"] == _sha(out / "wbc_int8.tflite")
    assert e["input"]["scale"] == pytest.approx(1 / 255, rel=0.01)


def test_interrupted_write_keeps_old_file(tiny_run_dir, tmp_path, monkeypatch):
    """A write failing midway (after the bytes, before the rename) leaves the previous file intact."""
    import wbc_edge.core.atomic as atomic_mod
    from wbc_edge.export import ExportConfig, export_model

    out = tmp_path / "out"
    out.mkdir()
    (out / "wbc_float32.tflite").write_bytes(b"old model")
    (out / "manifest.json").write_text("{}")

    def fail(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(atomic_mod.os, "fsync", fail)
    with pytest.raises(KeyboardInterrupt):
        export_model(ExportConfig(tiny_run_dir, out_dir=out, variants=("float32",), force=True,
                                  verbose=False))
    monkeypatch.undo()
    assert (out / "wbc_float32.tflite").read_bytes() == b"old model"
    assert sorted(p.name for p in out.iterdir()) == ["wbc_float32.tflite"]  # no temp file, no stale manifest


def test_forced_rerun_removes_the_stale_file_of_a_variant_whose_conversion_fails(tiny_run_dir, tmp_path,
                                                                                 monkeypatch):
    """--force over a previous export: a variant that fails before its file is written must not leave the
    previous run's wbc_<v>.tflite next to a manifest that marks it failed."""
    import wbc_edge.export.convert as convert_mod
    from wbc_edge.export import ExportConfig, ExportFailed, export_model

    out = tmp_path / "out"
    out.mkdir()
    (out / "wbc_float32.tflite").write_bytes(b"previous export's model")

    def crash(*_a, **_k):
        raise RuntimeError("converter exploded\nsecond line of a long TF message")

    monkeypatch.setattr(convert_mod, "saved_model", lambda *_a, **_k: None)
    monkeypatch.setattr(convert_mod, "to_tflite", crash)
    with pytest.raises(ExportFailed) as ei:
        export_model(ExportConfig(tiny_run_dir, out_dir=out, variants=("float32",), parity_limit=5, force=True,
                                  verbose=False))
    (e,) = ei.value.result.manifest["variants"]
    assert e["status"] == "failed" and e["reason"] == "conversion error: RuntimeError: converter exploded"
    assert e["stage"] == "conversion"
    assert ei.value.result.files == {}
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json"]


# --------------------------------------------------------------------------------------------- cheap checks

def test_refuses_non_empty_out_without_force(tiny_run_dir, tmp_path):
    from click.testing import CliRunner

    from wbc_edge.cli import main
    from wbc_edge.export import ExportConfig, export_model

    out = tmp_path / "out"
    out.mkdir()
    (out / "something").write_text("x")
    with pytest.raises(WbcEdgeError, match="not empty.*--force"):
        export_model(ExportConfig(tiny_run_dir, out_dir=out))
    r = CliRunner().invoke(main, ["export", str(tiny_run_dir), "--out", str(out)])
    assert r.exit_code == 1 and "--force" in r.output
    android = tmp_path / "android"
    android.mkdir()
    (android / "labels.txt").write_text("x")
    with pytest.raises(WbcEdgeError, match="labels.txt.*--force"):
        export_model(ExportConfig(tiny_run_dir, out_dir=tmp_path / "o2", android_dir=android))


def test_config_errors(tiny_run_dir, tmp_path):
    from wbc_edge.core.errors import DatasetError
    from wbc_edge.export import ExportConfig, export_model

    with pytest.raises(WbcEdgeError, match="unknown variant"):
        export_model(ExportConfig(tiny_run_dir, variants=("int4",)))
    with pytest.raises(WbcEdgeError, match="--android needs an int8"):
        export_model(ExportConfig(tiny_run_dir, variants=("float32",), android_dir=tmp_path / "a"))
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copyfile(tiny_run_dir / "model.keras", bare / "model.keras")
    with pytest.raises(DatasetError, match="split manifest not found"):
        export_model(ExportConfig(bare))
    shutil.copyfile(tiny_run_dir / "split.csv", bare / "split.csv")
    with pytest.raises(DatasetError, match="--data"):
        export_model(ExportConfig(bare))
    with pytest.raises(WbcEdgeError, match="not found"):
        export_model(ExportConfig(tmp_path / "nope"))


def test_cli_help_names_default_set():
    from click.testing import CliRunner

    from wbc_edge.cli import main

    r = CliRunner().invoke(main, ["export", "--help"])
    assert r.exit_code == 0
    text = " ".join(r.output.split())
    assert "default set is written: float32, float16 and int8" in text
    for flag in ("--int8", "--qat", "--all", "--android", "--calibration-size", "--parity-limit",
                 "--max-int8-drop", "--min-int8-agreement", "--qat-epochs", "--qat-images", "--force"):
        assert flag in text


def test_stratified_indices_deterministic_and_balanced():
    from wbc_edge.export import stratified_indices

    labels = np.array([0] * 50 + [1] * 30 + [2] * 15 + [3] * 4 + [4] * 1)
    a = stratified_indices(labels, 20, seed=1)
    assert np.array_equal(a, stratified_indices(labels, 20, seed=1))
    assert not np.array_equal(a, stratified_indices(labels, 20, seed=2))
    assert len(a) == 20 and len(set(a.tolist())) == 20 and np.all(np.diff(a) > 0)
    counts = np.bincount(labels[a], minlength=5)
    assert counts.tolist() == [9, 6, 3, 1, 1]  # proportional, every class represented
    assert np.array_equal(stratified_indices(labels, None, 0), np.arange(100))
    assert np.array_equal(stratified_indices(labels, 500, 0), np.arange(100))


def test_input_quantisation_check():
    from wbc_edge.export import check_input_quantisation

    assert check_input_quantisation({"dtype": np.uint8, "quantization": (1.0, 0)}) is None
    assert "scale" in check_input_quantisation({"dtype": np.uint8, "quantization": (1 / 255, 0)})
    assert check_input_quantisation({"dtype": np.uint8, "quantization": (1.0, 3)}) is not None
    assert check_input_quantisation({"dtype": np.int8, "quantization": (1.0, -128)}) is not None


def test_parity_gate_rules():
    from wbc_edge.export import ExportConfig, get
    from wbc_edge.export.parity import Reference, gate_for, parity_record

    cfg = ExportConfig("unused")
    labels = np.repeat(np.arange(5), 20)
    ref = Reference(np.zeros((100, 1, 1, 3), np.uint8), labels, np.eye(5, dtype=np.float32)[labels])  # 100 %

    def gated(probs, variant):
        return parity_record(probs, ref, WBC5_LABELS, gate_for(get(variant), cfg))

    same = gated(ref.probs.copy(), "int8")
    assert same["passed"] and same["agreement_pct"] == 100.0 and same["max_abs_dprob"] == 0.0
    assert same["gate"] == {"max_accuracy_drop_pp": 1.0, "min_agreement_pct": 98.0}

    two_wrong = ref.probs.copy()
    two_wrong[[0, 1]] = np.eye(5, dtype=np.float32)[[1, 2]]   # 98 % agreement, -2 pp accuracy
    p = gated(two_wrong, "int8")
    assert not p["passed"] and p["delta_accuracy_pp"] == pytest.approx(-2.0)
    assert any("accuracy drop 2.00 pp > 1 pp" in r for r in p["reasons"])
    assert not any("agreement" in r for r in p["reasons"])   # exactly 98 % is allowed
    assert gated(two_wrong, "float16")["reasons"] == ["top-1 agreement 98.00% < 99%"]
    assert gated(two_wrong, "float16")["gate"] == {"min_agreement_pct": 99.0}
    one_wrong = ref.probs.copy()
    one_wrong[0] = np.eye(5, dtype=np.float32)[1]
    assert gated(one_wrong, "int8")["passed"]      # -1 pp is allowed
    assert gated(one_wrong, "float32")["passed"]   # 99 % is allowed
    # off-domain only agreement is gated, at --min-domain-agreement when given
    assert gate_for(get("int8"), cfg, off_domain=True) == {"min_agreement_pct": 98.0}
    assert gate_for(get("int8"), dataclasses.replace(cfg, min_domain_agreement=0.0), off_domain=True) == \
        {"min_agreement_pct": 0.0}
    # with the contract's abstain threshold: agreement on the images the variant accepts (recorded, not gated).
    # Two flips, one on a confident image and one on an unsure one (probabilities 0.9 / 0.4 at T = 1).
    unsure = np.full((100, 5), 0.025, np.float32)
    unsure[np.arange(100), labels] = 0.9
    unsure[[0, 1]] = 0.025
    unsure[0, 1], unsure[1, 2], unsure[1, 3] = 0.9, 0.4, 0.35
    rec = parity_record(unsure, ref, WBC5_LABELS, gate_for(get("int8"), cfg), temperature=1.0, abstain_threshold=0.8)
    assert rec["agreement_pct"] == 98.0 and rec["accepted_n"] == 99
    assert rec["accepted_agreement_pct"] == pytest.approx(100.0 * 98 / 99, abs=1e-4)
    assert rec["passed"] is False and not any("accepted" in r for r in rec["reasons"])
    # a higher temperature flattens the probabilities: fewer accepted; no threshold: no such fields
    assert parity_record(unsure, ref, WBC5_LABELS, gate_for(get("int8"), cfg), temperature=3.0,
                         abstain_threshold=0.8)["accepted_n"] == 0
    assert "accepted_n" not in gated(unsure, "int8")
