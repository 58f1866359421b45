"""The shipped default: export/ (five variants + manifest) and android_assets/ must be complete,
consistent with each other and usable by the TF-free runtime on a fresh clone."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from wbc_edge.core.labels import WBC5
from wbc_edge.core.contract import read_contract
from wbc_edge.export.android import check_android_bundle
from wbc_edge.runtime import Classifier

REPO = Path(__file__).resolve().parents[1]
EXPORT = REPO / "export"
ANDROID = REPO / "android_assets"


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def manifest() -> dict:
    return json.loads((EXPORT / "manifest.json").read_text())


def test_manifest_lists_every_variant_with_matching_files(manifest):
    variants = {v["variant"]: v for v in manifest["variants"]}
    assert set(variants) == {"float32", "float16", "dynamic", "int8", "qat_int8", "int8_mixed", "int8_plain"}
    for name, v in variants.items():
        f = EXPORT / v["file"]
        assert f.is_file(), f
        assert v["status"] == "ok", (name, v.get("reason"))
        assert v["bytes"] == f.stat().st_size and v["sha256"] == _sha(f), f"{f} changed since export"
        assert v["parity"]["n"] >= 2000, "parity must have been checked on the PBC test split"
    # The sizes the export issue asked for; issue 14: the selective int8 stays <= 4 MB.
    assert variants["int8"]["bytes"] <= 3.0e6 and variants["float32"]["bytes"] > 3 * variants["int8"]["bytes"]
    assert variants["int8_mixed"]["bytes"] <= 4.0e6 and variants["int8_mixed"]["options"]["float_layers"] > 0
    # Off-domain parity is recorded per domain for every variant (issue 10), gated or not.
    for v in variants.values():
        assert set(v["parity_domains"]) == {"Tecom", "CellaVision"}, v["variant"]


@pytest.mark.parametrize("variant", ["float32", "float16", "dynamic", "int8", "qat_int8", "int8_mixed", "int8_plain"])
def test_each_shipped_file_is_self_describing_and_loads(variant, manifest):
    path = EXPORT / f"wbc_{variant}.tflite"
    c = read_contract(path)
    assert c is not None and c.labels == list(WBC5) and c.input_size == 224 and c.variant == variant
    assert c.split_manifest_sha256 == manifest["split_manifest"]["sha256"]
    clf = Classifier(path)
    assert clf.input_size == 224 and tuple(clf.labels) == WBC5
    if variant in ("int8", "qat_int8", "int8_mixed", "int8_plain"):
        scale, zp = clf.input_details[0]["quantization"]
        assert clf.input_dtype == np.uint8 and scale == 1.0 and zp == 0  # raw pixels


def test_shipped_int8_agrees_with_shipped_float32_on_samples(sample_files):
    paths, labels = sample_files
    f32 = np.stack([p.probabilities for p in Classifier(EXPORT / "wbc_float32.tflite").predict_batch(paths)])
    i8 = np.stack([p.probabilities for p in Classifier(EXPORT / "wbc_int8.tflite").predict_batch(paths)])
    assert np.mean(f32.argmax(1) == i8.argmax(1)) >= 0.95
    assert np.mean(f32.argmax(1) == labels) >= 0.9  # the real model recognises real cells


def test_android_bundle_is_complete_and_matches_the_shipped_int8(manifest):
    assert check_android_bundle(ANDROID) == []
    assert _sha(ANDROID / "wbc_int8.tflite") == _sha(EXPORT / "wbc_int8.tflite")
    assert (ANDROID / "labels.txt").read_text().split() == list(WBC5)
    # The manifest's record of the bundle is the bundle as shipped: every file in it, none changed since - except
    # what `export-gate --android` adds afterwards: the gate's three files, and the gate record + README section
    # in wbc_model.json / README.md (check_android_bundle above checks those against the gate files).
    listed = manifest["android"]["files"]
    meta = json.loads((ANDROID / "wbc_model.json").read_text())
    extra = {p.name for p in ANDROID.iterdir() if p.is_file()} - set(listed)
    assert extra == ({"wbc_gate.tflite", "wbc_gate.json", "LabGate.kt"} if meta.get("gate") else set())
    rewritten = {"wbc_model.json", "README.md"} if meta.get("gate") else set()
    assert all(listed[name] == _sha(ANDROID / name) for name in set(listed) - rewritten)
    from wbc_edge.runtime.classifier import DEFAULT_FALLBACK_MARGIN

    assert meta["cascade"]["margin"] == DEFAULT_FALLBACK_MARGIN  # the bundle's cascade decides as predict does


def test_manifest_reader_lists_the_shipped_variants_generically(manifest):
    """wbc_edge.export.manifest (TF-free; bench resolves models through it) reads the shipped manifest."""
    from wbc_edge.export import entry_for_file, manifest_variants, read_manifest, spec_for_file

    entries = manifest_variants(read_manifest(EXPORT))
    assert [e.variant for e in entries] == [v["variant"] for v in manifest["variants"]]
    for e in entries:
        assert e.ok and e.sha256 == _sha(EXPORT / e.file) and spec_for_file(e.file).name == e.variant
    entry, ref = entry_for_file(EXPORT / "wbc_int8.tflite")
    assert entry.variant == "int8" and entry.parity["n"] == ref["n"] >= 2000
    assert entry_for_file(ANDROID / "wbc_int8.tflite") == (None, None)  # no manifest beside the bundle


def test_readme_bench_tables_are_the_recorded_bench_of_the_shipped_files(manifest):
    """The README tables are written from the recorded bench JSON (benchmarks/readme_bench_tables.py): they must be
    what that file gives now, and the file must have timed the shipped bytes."""
    import subprocess
    import sys

    record = REPO / "benchmarks" / "results" / "x86_64_amd-epyc_2cpu" / "shipped_2026-12-07" / "pbc_test.json"
    r = subprocess.run([sys.executable, str(REPO / "benchmarks" / "readme_bench_tables.py"), str(record), "--check"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    shipped = {e["file"]: e["sha256"] for e in manifest["variants"]}
    timed = {Path(v["path"]).name: v["sha256"] for v in json.loads(record.read_text())["variants"] if v["kind"] == "tflite"}
    assert timed == shipped


def test_every_tflite_the_main_job_globs_is_a_classifier_and_the_gate_lives_apart():
    """The README's main job is `bench export/*.tflite`: every file that glob matches must be a classifier with
    its contract (the unfamiliar-lab gate, a different model, lives in export/gate/ with its own description)."""
    from wbc_edge.core.contract import read_contract
    from wbc_edge.runtime.gate import LabGate

    assert all(read_contract(p) is not None for p in EXPORT.glob("*.tflite"))
    gate = LabGate(EXPORT / "gate" / "wbc_gate.tflite")
    assert gate.input_size == 224 and gate.batch_ratio > 1.0 and gate.cut > gate.val_median


def test_the_small_model_ships_beside_the_default(manifest, sample_files):
    """Issue 33: export/small/ is the distilled 128 px student of the shipped model (benchmarks/small/RULE.md): its
    files are the ones its manifest lists, it was trained from the shipped reference on the same split (so PBC
    test is unseen by both), its int8 file has a float16 companion for the cascade, and it reads real cells."""
    from wbc_edge.runtime.cascade import float_companion

    small = EXPORT / "small"
    own = json.loads((small / "manifest.json").read_text())
    run = json.loads((small / "run" / "run.json").read_text())
    assert sorted(e["file"] for e in own["variants"]) == sorted(p.name for p in small.glob("*.tflite"))
    assert all(e["status"] == "ok" and e["sha256"] == _sha(small / e["file"]) for e in own["variants"])
    assert own["source_model"]["sha256"] == run["model_sha256"] and own["source_model"]["input_size"] == 128
    assert run["timings"]["distillation"]["sha256"] == manifest["source_model"]["sha256"]  # the shipped teacher
    assert run["split_manifest_sha256"] == manifest["split_manifest"]["sha256"]
    clf = Classifier(small / "wbc_int8.tflite")
    assert clf.input_size == 128 and tuple(clf.labels) == tuple(WBC5)
    assert float_companion(small / "wbc_int8.tflite") == small / "wbc_float16.tflite"
    paths, labels = sample_files
    pred = np.array([p.index for p in clf.predict_batch(paths)])
    f16 = np.array([p.index for p in Classifier(small / "wbc_float16.tflite").predict_batch(paths)])
    assert np.mean(pred == f16) >= 0.95 and np.mean(pred == labels) >= 0.9
    from wbc_edge.export.android import check_android_bundle

    bundle = small / "android"  # its Android bundle: the same two files, checked as an app would read them
    assert check_android_bundle(bundle) == []
    assert all(_sha(bundle / e["file"]) == e["sha256"] for e in own["variants"])
    assert own["android"]["status"] == "ok" and Path(own["android"]["dir"]).resolve() == bundle.resolve()
    from wbc_edge.runtime.gate import LabGate

    gate = LabGate(small / "gate" / "wbc_gate.tflite")  # its own unfamiliar-lab gate (the default's is 224 px)
    assert gate.input_size == 128 and gate.meta["source_model_sha256"] == own["source_model"]["sha256"]
    assert _sha(bundle / "wbc_gate.tflite") == _sha(small / "gate" / "wbc_gate.tflite")
