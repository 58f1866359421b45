"""The export variant registry, failure stages, labels and split identity (wbc_edge.export).

- A variant added through the registry alone (`register(VariantSpec(...))`, here int16x8 with a converter
  hook and options) is exported end to end by `wbc-edge export --variant` with no other edit.
- CLI flags and defaults come from the registry and ExportConfig; the registry and the manifest reader are
  TF-free; the library never prints or imports click.
- Each failure names its stage (QAT fine-tune / conversion / metadata / writing / parity gate), where every
  failure used to read "conversion error".
- Labels come from the run (run.json `labels`), the five WBC classes only for an old 5-output model; a split
  manifest with CRLF line ends and unsorted rows is the same split (canonical sha256), not a warning.
"""

from __future__ import annotations

import ast
import csv
import dataclasses
import hashlib
import io
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import import_blocker

from wbc_edge.core.errors import ModelFileError, WbcEdgeError

REPO = Path(__file__).resolve().parents[1]
RELAXED = dict(min_int8_agreement=0.0, max_int8_drop=100.0, min_float_agreement=0.0)


# --------------------------------------------------------------------------------------------- registry (cheap)

def test_builtin_registry_order_defaults_and_files():
    from wbc_edge.export import variants as reg

    assert reg.names() == ("float32", "float16", "dynamic", "int8", "qat_int8", "int8_mixed", "int8_plain")
    assert reg.default_names() == ("float32", "float16", "int8")
    assert reg.integer_names() == ("int8", "qat_int8", "int8_mixed", "int8_plain")
    # the default int8 is the faithful one chosen by benchmarks/int8_faithful/RULE.md (issue 32)
    assert dict(reg.get("int8").options) == {"float_layers": 4, "rank_images": 100, "rank_metric": "rmse_over_scale",
                                             "rank_on": "shifted", "max_float_weights": 16384}
    assert reg.get("int8_plain").converter_hook is None and reg.get("int8_plain").representative_data
    assert [s.file for s in reg.specs()] == [f"wbc_{n}.tflite" for n in reg.names()]
    assert [s.name for s in reg.specs() if s.android] == ["int8", "qat_int8"]
    assert [s.name for s in reg.specs() if s.recommended] == ["int8"]
    assert reg.get("qat_int8").qat and reg.get("qat_int8").cli_flag == "--qat"
    assert reg.spec_for_file("wbc_int8.tflite") is reg.get("int8") and reg.spec_for_file("x.tflite") is None
    assert reg.get("float16").converter_settings()["supported_types"] == ["float16"]


def test_register_refuses_clashes_and_unknown_names():
    from wbc_edge.export import variants as reg

    with pytest.raises(ValueError, match="already registered"):
        reg.register(reg.VariantSpec("int8", "x", "x"))
    with pytest.raises(ValueError, match="wbc_int8.tflite is already variant 'int8'"):
        reg.register(reg.VariantSpec("other", "x", "x", file="wbc_int8.tflite"))
    with pytest.raises(ValueError, match="flag --qat is already"):
        reg.register(reg.VariantSpec("other", "x", "x", cli_flag="--qat"))
    with pytest.raises(ValueError, match="unknown optimizations"):
        reg.VariantSpec("other", "x", "x", optimizations=("FAST",))
    with pytest.raises(ValueError, match="JSON-able"):
        reg.VariantSpec("other", "x", "x", options={"f": object()})
    with pytest.raises(WbcEdgeError, match="unknown variant 'int4'"):
        reg.get("int4")
    assert "other" not in reg.VARIANTS


def test_cli_flags_and_defaults_come_from_registry_and_config():
    from wbc_edge.cli.export_cmd import export
    from wbc_edge.export import specs
    from wbc_edge.export.config import config_default

    opts = {p.name: p for p in export.params}
    for s in specs():
        assert f"v_{s.name}" in opts and s.cli_flag in opts[f"v_{s.name}"].opts and opts[f"v_{s.name}"].help == s.help
    for name in ("calibration_size", "calibration_augmented_fraction", "parity_split", "max_int8_drop",
                 "min_int8_agreement", "min_float_agreement", "qat_epochs", "qat_images", "seed",
                 "parity_limit", "num_threads", "min_domain_agreement"):
        assert opts[name].default == config_default(name), name
    assert opts["calibration_augment"].default == config_default("calibration_augment")
    text = " ".join(CliRunner().invoke(export, ["--help"]).output.split())
    assert "default set is written: float32, float16 and int8" in text and "--variant NAME" in text


def test_registry_and_manifest_reader_import_without_tensorflow():
    code = import_blocker() + textwrap.dedent("""
        import wbc_edge.export, wbc_edge.export.variants, wbc_edge.export.manifest
        from wbc_edge.export import VARIANTS, DEFAULT_VARIANTS, read_manifest, manifest_variants, entry_for_file
        entry, ref = entry_for_file("export/wbc_int8.tflite")
        assert entry.variant == "int8" and entry.ok and ref["n"] > 2000
        shipped = [e.variant for e in manifest_variants(read_manifest("export"))]
        assert shipped == list(VARIANTS)  # export/ ships every registered variant
        heavy = [m for m in sys.modules if m.split(".")[0] in BLOCK or m.startswith("wbc_edge.export.pipeline")]
        assert not heavy, heavy
        print("ok")
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_export_library_never_prints_or_imports_click():
    """Progress goes through wbc_edge.core.progress; click stays in cli/."""
    for path in sorted((REPO / "wbc_edge" / "export").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Name) and node.id == "print":  # print(...) or `say = print`
                pytest.fail(f"{path.name}:{node.lineno}: print")
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                assert not any(m.split(".")[0] == "click" for m in mods), f"{path.name}:{node.lineno}"
        assert len(path.read_text(encoding="utf-8").splitlines()) <= 400, path.name


# --------------------------------------------------------------------------------------------- a new variant

@pytest.fixture
def int16x8(monkeypatch):
    """A variant that exists only through `register`: 16-bit activations, 8-bit weights, float I/O, with a
    converter hook that sees the calibration and the spec's options."""
    from wbc_edge.export import variants as reg

    calls = []

    def hook(converter, ctx):
        calls.append({"variant": ctx.spec.name, "calibration": ctx.calibration.shape, "options": ctx.options,
                      "ops": list(converter.target_spec.supported_ops)})
        return None  # carry on with converter.convert()

    spec = reg.VariantSpec("int16x8", "int16 activations, int8 weights", "16x8 quantisation (test).",
                           optimizations=("DEFAULT",), representative_data=True,
                           supported_ops=("EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8",),
                           gate_family="int8", min_agreement_pct=0.0, max_accuracy_drop_pp=100.0,
                           converter_hook=hook, options={"float_layers": ["none"], "note": "test"})
    reg.register(spec)
    yield spec, calls
    reg.unregister(spec.name)


def test_variant_added_through_the_registry_alone_exports_end_to_end(int16x8, tiny_run_dir, tmp_path):
    from wbc_edge.cli import main
    from wbc_edge.core.contract import read_contract
    from wbc_edge.export import entry_for_file
    from wbc_edge.export.metadata_read import check_standard_metadata
    from wbc_edge.runtime import Classifier

    spec, calls = int16x8
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["export", str(tiny_run_dir), "--variant", "int16x8", "--out", str(out),
                                  "--calibration-size", "10", "--parity-limit", "5"])
    assert r.exit_code == 0, r.output
    assert calls == [{"variant": "int16x8", "calibration": (10, 96, 96, 3),
                      "options": {"float_layers": ["none"], "note": "test"}, "ops": calls[0]["ops"]}]
    assert len(calls[0]["ops"]) == 1
    path = out / "wbc_int16x8.tflite"
    m = json.loads((out / "manifest.json").read_text())
    (e,) = m["variants"]
    assert (e["variant"], e["file"], e["status"], e["stage"]) == ("int16x8", path.name, "ok", None)
    assert e["options"] == {"float_layers": ["none"], "note": "test"}
    assert e["converter"]["supported_ops"] == list(spec.supported_ops) and e["converter"]["converter_hook"]
    assert e["calibration_size"] == 10 and m["calibration"]["size"] == 10
    assert e["parity"]["gate"] == {"max_accuracy_drop_pp": 100.0, "min_agreement_pct": 0.0}
    assert e["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    c = read_contract(path)
    assert c.variant == "int16x8" and c.input_dtype == c.output_dtype == "float32"
    assert check_standard_metadata(path) == []
    assert Classifier(path).predict_pixels(np.zeros((1, 96, 96, 3), np.uint8)).shape == (1, 5)
    entry, ref = entry_for_file(path)
    assert entry.variant == "int16x8" and entry.options["note"] == "test" and ref["n"] == 5


# --------------------------------------------------------------------------------------------- failure stages

def test_each_failure_names_its_stage(tiny_run_dir, tmp_path, monkeypatch):
    """QAT, metadata and write failures used to be reported as "conversion error"; now each names its stage
    in the manifest entry (stage + reason) and in ExportFailed's message."""
    import wbc_edge.core.atomic as atomic_mod
    import wbc_edge.export.qat as qat_mod
    import wbc_edge.export.variant_export as ve
    from wbc_edge.export import ExportConfig, ExportFailed, export_model

    def qat_boom(*_a, **_k):
        raise RuntimeError("tfmot exploded\nmore")

    real_meta, real_write = ve.add_standard_metadata, atomic_mod.write_bytes

    def meta(flat, contract, *, source, **k):
        if source == "wbc_float32.tflite":
            raise RuntimeError("schema exploded")
        return real_meta(flat, contract, source=source, **k)

    def write(path, data):
        if Path(path).name == "wbc_float16.tflite":
            raise OSError(28, "No space left on device")
        return real_write(path, data)

    monkeypatch.setattr(qat_mod, "train_qat", qat_boom)
    monkeypatch.setattr(ve, "add_standard_metadata", meta)
    monkeypatch.setattr(atomic_mod, "write_bytes", write)
    with pytest.raises(ExportFailed) as ei:
        export_model(ExportConfig(tiny_run_dir, out_dir=tmp_path / "out", variants=("float32", "float16", "qat_int8"),
                                  calibration_size=10, parity_limit=5, verbose=False))
    got = {e["variant"]: (e["stage"], e["reason"]) for e in ei.value.result.manifest["variants"]}
    assert got == {"float32": ("metadata", "metadata error: RuntimeError: schema exploded"),
                   "float16": ("writing", "writing error: OSError: [Errno 28] No space left on device"),
                   "qat_int8": ("QAT fine-tune", "QAT fine-tune error: RuntimeError: tfmot exploded")}
    msg = str(ei.value)
    assert "float32 failed at metadata" in msg and "qat_int8 failed at QAT fine-tune" in msg
    assert "conversion" not in msg and "\n" not in msg
    assert ei.value.result.files == {}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["manifest.json"]


# --------------------------------------------------------------------------------------------- labels + split

THREE = ("basophil", "eosinophil", "lymphocyte")


@pytest.fixture(scope="module")
def three_class_run(tmp_path_factory, sample_root) -> Path:
    """A RUN_DIR with a 3-output model, run.json `labels` (as `wbc-edge train` now writes them) and the
    canonical split sha256 - while split.csv itself has CRLF line ends and its rows in reverse order."""
    from wbc_edge.data import ManifestRow, SplitManifest
    from wbc_edge.model.network import ModelConfig, build_model
    from wbc_edge.core.tfcompat import import_tf

    _, keras = import_tf()
    keras.utils.set_random_seed(0)
    run = tmp_path_factory.mktemp("run3")
    build_model(ModelConfig(alpha=0.35, input_size=96, weights="none", num_classes=3)).save(run / "model.keras")
    rows = []
    for name in THREE:
        for i, p in enumerate(sorted(q for q in (sample_root / name).iterdir() if not q.name.startswith("."))):
            rel = f"{name}/{p.name}"
            rows.append(ManifestRow(rel, name, hashlib.sha256(p.read_bytes()).hexdigest(), rel,
                                    "test" if i < 2 else "val" if i < 3 else "train"))
    canonical = SplitManifest(rows).sha256()
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(["path", "label", "sha256", "group", "split"])
    w.writerows(reversed(SplitManifest(rows).rows))
    (run / "split.csv").write_bytes(buf.getvalue().encode())
    assert hashlib.sha256((run / "split.csv").read_bytes()).hexdigest() != canonical
    (run / "run.json").write_text(json.dumps({"config": {"data_root": str(sample_root)}, "labels": list(THREE),
                                              "split_manifest_sha256": canonical}))
    return run


class Recording:
    """A wbc_edge.core.progress.Progress that keeps the messages."""

    def __init__(self):
        from wbc_edge.core.progress import Progress

        self.lines: list[str] = []
        self.progress = Progress(enabled=True)
        self.progress.say = self.lines.append


def test_labels_come_from_the_run_and_a_crlf_split_is_the_same_split(three_class_run, tmp_path, capsys):
    from wbc_edge.core.contract import read_contract
    from wbc_edge.export import ExportConfig, export_model

    rec = Recording()
    res = export_model(ExportConfig(three_class_run, out_dir=tmp_path / "out", variants=("float32",),
                                    parity_limit=3, **RELAXED), rec.progress)
    # progress went through the Progress given, nothing to stdout / stderr by the library itself
    assert any(x.startswith("[float32] converting") for x in rec.lines) and rec.lines[-1].startswith("Wrote ")
    captured = capsys.readouterr()
    assert "[float32]" not in captured.out + captured.err
    canonical = json.loads((three_class_run / "run.json").read_text())["split_manifest_sha256"]
    assert res.manifest["warnings"] == []  # was: "split.csv sha256 differs from run.json's ..."
    assert res.manifest["split_manifest"]["sha256"] == canonical
    assert res.manifest["labels"] == list(THREE) and res.manifest["labels_source"].startswith("labels of ")
    c = read_contract(res.files["float32"])
    assert c.labels == list(THREE) and c.split_manifest_sha256 == canonical
    assert res.manifest["variants"][0]["parity"]["n"] == 3


def test_a_model_without_stored_labels_needs_them(three_class_run, tmp_path):
    from wbc_edge.export import ExportConfig, export_model

    bare = tmp_path / "old_run"
    shutil.copytree(three_class_run, bare)
    info = json.loads((bare / "run.json").read_text())
    del info["labels"]
    (bare / "run.json").write_text(json.dumps(info))
    cfg = ExportConfig(bare, out_dir=tmp_path / "out", variants=("float32",), verbose=False)
    with pytest.raises(ModelFileError, match=r"3 outputs and no stored labels .* pass --labels") as ei:
        export_model(cfg)
    assert "\n" not in str(ei.value)
    with pytest.raises(ModelFileError, match="has 3 outputs but --labels names 2 classes"):
        export_model(dataclasses.replace(cfg, labels=("a", "b")))


def test_hooks_are_registered_into_the_registry_and_options_tuned_through_it():
    """The registry names its float-fallback hook and never imports the module that owns it (TF-free by
    construction); the converter's import registers it; the CLI's --int8-float-layers finds its variant by the
    option it declares, not by name."""
    import subprocess
    import sys

    code = ("import sys, wbc_edge.export.variants as v; "
            "print('wbc_edge.export.selective' in sys.modules, v.get('int8').converter_hook)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "float_fallback"]
    import wbc_edge.export.convert  # noqa: F401 - registers the hook
    from wbc_edge.export import selective, variants

    assert variants.get("int8").hook() is selective.int8_mixed_hook
    assert variants.tuner("float_layers").cli_flag == "--int8-mixed"
    with pytest.raises(WbcEdgeError, match="no registered variant takes the option 'nope'"):
        variants.tuner("nope")
    spec = variants.VariantSpec("tmp_hooked", "t", "t", converter_hook="not_registered")
    with pytest.raises(WbcEdgeError, match="converter hook 'not_registered' is not registered"):
        spec.hook()
    with pytest.raises(ValueError, match="tunes"):
        variants.VariantSpec("tmp_tuned", "t", "t", tunes=("k",))
