"""The Kotlin port of the scale guard that the Android bundle ships (wbc_edge/export/ScaleGuard.kt) gives the
same zoom and the same pixels as the Python reference (wbc_edge.core.scale_guard) on real cells, as they are and
zoomed out so that the guard fires.  Compiled with kotlinc on a JVM (the file uses no Android classes); skipped
where kotlinc is not installed (.ci/run installs it)."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from wbc_edge.data.augment import _zoom
from wbc_edge.core.preprocess import preprocess
from wbc_edge.core.scale_guard import ScaleGuard, guard_pixels

KT = Path(__file__).resolve().parents[1] / "wbc_edge" / "export" / "ScaleGuard.kt"
MAIN = Path(__file__).resolve().parent / "kotlin" / "GuardMain.kt"
GUARD = ScaleGuard(threshold=0.2111, target=0.287)  # the shipped model's

needs_kotlinc = pytest.mark.skipif(shutil.which("kotlinc") is None or shutil.which("java") is None,
                                   reason="kotlinc / java not installed (apt-get install kotlin)")


def _argb(px: np.ndarray) -> np.ndarray:
    p = px.astype(np.uint32)
    return (0xFF000000 | (p[..., 0] << 16) | (p[..., 1] << 8) | p[..., 2]).astype(">u4")


def _compile(folder: Path, *sources: Path) -> Path:
    """A runnable jar of the Kotlin sources (the shipped file + its test harness)."""
    jar = folder / "test.jar"
    done = subprocess.run(["kotlinc", *map(str, sources), "-include-runtime", "-d", str(jar)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return jar


def _run_jar(jar: Path, blob: bytes, tmp_path: Path) -> bytes:
    """Feed `blob` to a compiled harness (in.bin -> out.bin) and return what it wrote."""
    (tmp_path / "in.bin").write_bytes(blob)
    subprocess.run(["java", "-jar", str(jar), str(tmp_path / "in.bin"), str(tmp_path / "out.bin")],
                   check=True, timeout=300)
    return (tmp_path / "out.bin").read_bytes()


@pytest.fixture(scope="module")
def guard_jar(tmp_path_factory) -> Path:
    return _compile(tmp_path_factory.mktemp("kotlin"), KT, MAIN)


@needs_kotlinc
def test_kotlin_guard_matches_python(guard_jar, sample_files, tmp_path):
    paths = sample_files[0][::3]
    clean = [preprocess(p, 224) for p in paths]
    small = [np.asarray(np.clip(np.rint(_zoom(x.astype(np.float32), z, np.zeros(2))), 0, 255), np.uint8)
             for x in clean for z in (0.5,)]
    images = clean + small
    blob = struct.pack(">dddi", GUARD.threshold, GUARD.target, GUARD.max_zoom, len(images))
    for x in images:
        blob += struct.pack(">ii", x.shape[1], x.shape[0]) + _argb(x).tobytes()
    out = _run_jar(guard_jar, blob, tmp_path)
    step = 8 + 224 * 224 * 4
    assert len(out) == step * len(images)
    fired = 0
    for i, x in enumerate(images):
        zoom_kt = struct.unpack(">d", out[i * step:i * step + 8])[0]
        px_kt = np.frombuffer(out[i * step + 8:(i + 1) * step], ">u4").reshape(224, 224)
        px_py, zoom_py = guard_pixels(x, GUARD)
        assert zoom_kt == pytest.approx(zoom_py, abs=1e-9), (i, zoom_kt, zoom_py)
        np.testing.assert_array_equal(px_kt, _argb(px_py), err_msg=f"image {i}")
        fired += zoom_py > 1.0
    assert fired >= len(small) - 1, "the zoomed-out cells must make the guard fire (else nothing is compared)"


def test_bundle_ships_the_guard_and_its_readme_uses_it(tmp_path):
    """The shipped bundle has ScaleGuard.kt (the package's file) and its README's interpreter code calls it with
    the model's numbers; a bundle missing it is reported, and `metadata add`'s refresh writes it back."""
    from wbc_edge.export.android import bundle_metadata_refresh, check_android_bundle, guard_source

    shipped = Path(__file__).resolve().parents[1] / "android_assets"
    meta = json.loads((shipped / "wbc_model.json").read_text())
    g = meta["scale_guard"]
    assert (shipped / "ScaleGuard.kt").read_bytes() == guard_source() == KT.read_bytes()
    readme = (shipped / "README.md").read_text()
    assert f"ScaleGuard({g['threshold']!r}, {g['target']!r}, {float(g['max_zoom'])!r})" in readme
    assert "for (p in guard.apply(pixels, size, size).pixels)" in readme
    bundle = tmp_path / "bundle"
    shutil.copytree(shipped, bundle)
    (bundle / "ScaleGuard.kt").unlink()
    assert check_android_bundle(bundle) == [
        "ScaleGuard.kt: missing (wbc_model.json has a scale_guard; the README's Kotlin uses it)"]
    assert bundle_metadata_refresh(bundle, (bundle / "wbc_int8.tflite").read_bytes())
    assert check_android_bundle(bundle) == [] and (bundle / "ScaleGuard.kt").read_bytes() == guard_source()
    # without a guard: no file, no call
    from wbc_edge.export.android_readme import readme_text

    plain = readme_text(dict(meta, scale_guard=None))
    assert "ScaleGuard" not in plain and "for (p in pixels)" in plain


CASCADE_KT = KT.parent / "Cascade.kt"
CASCADE_MAIN = MAIN.parent / "CascadeMain.kt"


@pytest.fixture(scope="module")
def cascade_jar(tmp_path_factory) -> Path:
    return _compile(tmp_path_factory.mktemp("kotlin_cascade"), CASCADE_KT, CASCADE_MAIN)


@needs_kotlinc
@pytest.mark.parametrize("temperature, margin", [(1.0889, 0.5), (0.7, 0.2), (2.5, 0.3)])
def test_kotlin_cascade_decides_as_the_runtime(cascade_jar, tmp_path, temperature, margin):
    """Issue 32: the Android bundle's Cascade.kt re-runs exactly the images the Python runtime re-runs: the same
    calibrated margin (temperature, clipping at 1e-4) and the same decision, on probability vectors from
    confident to flat, uint8-quantised ones included."""
    from wbc_edge.core.calibration import apply_temperature
    from wbc_edge.runtime.classifier import margins

    rng = np.random.default_rng(0)
    logits = rng.normal(0, rng.uniform(0.3, 6, size=(400, 1)), size=(400, 5))
    p = np.exp(logits - logits.max(1, keepdims=True))
    p = (p / p.sum(1, keepdims=True)).astype(np.float32)
    p[:100] = np.round(p[:100] * 256) / 256  # int8 outputs: multiples of 1/256, zeros included
    blob = struct.pack(">ddii", temperature, margin, len(p), p.shape[1]) + p.astype(">f4").tobytes()
    out = _run_jar(cascade_jar, blob, tmp_path)
    rows = [struct.unpack(">di", out[i * 12:(i + 1) * 12]) for i in range(len(p))]
    m_py = margins(apply_temperature(p, temperature))
    m_kt = np.array([r[0] for r in rows])
    np.testing.assert_allclose(m_kt, m_py, atol=1e-6)
    clear = np.abs(m_py - margin) > 1e-6  # float32 vs double: only a tie at the margin itself could differ
    assert np.array_equal(np.array([r[1] == 1 for r in rows])[clear], (m_py < margin)[clear])
    assert 0.1 < np.mean(m_py < margin) < 0.9, "both decisions must occur for the check to mean anything"


def test_bundle_ships_the_cascade_and_its_readme_uses_it():
    """The shipped bundle has the float file and Cascade.kt (the package's file) that its metadata names, and the
    README's Kotlin constructs the cascade with those numbers."""
    from wbc_edge.export.android import cascade_source, check_android_bundle

    shipped = Path(__file__).resolve().parents[1] / "android_assets"
    meta = json.loads((shipped / "wbc_model.json").read_text())
    c = meta["cascade"]
    assert (shipped / "Cascade.kt").read_bytes() == cascade_source() == CASCADE_KT.read_bytes()
    assert f"Cascade({float(c['temperature'])!r}, {float(c['margin'])!r})" in (shipped / "README.md").read_text()
    assert check_android_bundle(shipped) == []


GATE_KT = KT.parent / "LabGate.kt"
GATE_MAIN = MAIN.parent / "GateMain.kt"


@pytest.fixture(scope="module")
def gate_jar(tmp_path_factory) -> Path:
    return _compile(tmp_path_factory.mktemp("kotlin_gate"), GATE_KT, GATE_MAIN)


@needs_kotlinc
def test_kotlin_gate_decides_as_the_runtime(gate_jar, tmp_path):
    """Issue 32: the bundle's LabGate.kt gives each cell the runtime's distance and far flag, each batch the
    runtime's verdict (numpy's median, even and odd sizes, below and above batch_min, both verdicts), and each
    cell the runtime's accept/refuse decision alone and within its batch (all four outcomes occur)."""
    from wbc_edge.runtime.gate import batch_verdict, decide

    decisions: set[str] = set()
    cut, val_median, ratio, batch_min = 95.76, 52.47, 1.4257, 20
    rng = np.random.default_rng(1)
    batches = [rng.gamma(4, scale, size=(n, 5)).astype(np.float32)
               for n, scale in ((25, 12.0), (40, 60.0), (19, 60.0), (20, 50.0), (1, 5.0), (64, 22.0))]
    blob = struct.pack(">dddi", cut, val_median, ratio, batch_min)
    for b in batches:
        blob += struct.pack(">ii", *b.shape) + b.astype(">f4").tobytes()
    out, pos, verdicts = _run_jar(gate_jar, blob + struct.pack(">i", -1), tmp_path), 0, []
    for b in batches:
        d_py = b.astype(np.float64).min(1)
        rows = [struct.unpack(">di", out[pos + 12 * i:pos + 12 * (i + 1)]) for i in range(len(b))]
        pos += 12 * len(b)
        n, r, unf, share = struct.unpack(">idid", out[pos:pos + 24])
        pos += 24
        v = batch_verdict(d_py, val_median=val_median, batch_ratio=ratio, batch_min=batch_min, cut=cut)
        for i, x in enumerate(d_py):
            for given in (None, v):
                (length,) = struct.unpack(">H", out[pos:pos + 2])
                kt = out[pos + 2:pos + 2 + length].decode()
                pos += 2 + length
                assert kt == decide(i % 2 == 0, float(x), given, cut=cut, batch_min=batch_min), (i, given)
                decisions.add(kt)
        np.testing.assert_array_equal([x[0] for x in rows], d_py)
        assert [x[1] == 1 for x in rows] == list(d_py > cut)
        assert (n, unf == 1) == (v.n, v.unfamiliar)
        assert r == pytest.approx(v.median_ratio, rel=1e-12) and share == pytest.approx(v.far_share, rel=1e-12)
        verdicts.append(v.unfamiliar)
    assert any(verdicts) and not all(verdicts), "both verdicts must occur for the check to mean anything"
    assert decisions == {"accept", "uncertain", "unfamiliar-lab", "far"}, decisions


def test_gate_joins_the_bundle_and_is_checked(tmp_path):
    """`export-gate --android`'s step: the shipped gate goes into a copy of the shipped bundle with LabGate.kt, the
    metadata's gate record and a README that constructs LabGate with its numbers; a missing LabGate.kt, a changed
    gate file and a gate of another model are each named."""
    from wbc_edge.core.errors import WbcEdgeError
    from wbc_edge.export.android import check_android_bundle
    from wbc_edge.export.android_gate import add_gate, gate_kotlin_source

    repo = Path(__file__).resolve().parents[1]
    gate = repo / "export" / "gate" / "wbc_gate.tflite"
    bundle = tmp_path / "bundle"
    shutil.copytree(repo / "android_assets", bundle)
    g = add_gate(bundle, gate)
    assert check_android_bundle(bundle) == []
    assert (bundle / "LabGate.kt").read_bytes() == gate_kotlin_source() == GATE_KT.read_bytes()
    readme = (bundle / "README.md").read_text()
    assert f"LabGate({float(g['cut'])!r}, {float(g['val_median'])!r}, {float(g['batch_ratio'])!r}, 20)" in readme
    from wbc_edge.core.contract import read_contract

    assert g["abstain_threshold"] == read_contract((bundle / "wbc_int8.tflite").read_bytes()).abstain_threshold > 0
    assert "gate.decide(confident, d, verdict)" in readme and f"{g['abstain_threshold']!r}" in readme
    (bundle / "LabGate.kt").unlink()
    assert check_android_bundle(bundle) == [
        "LabGate.kt: missing (wbc_model.json has a gate; the README's Kotlin uses it)"]
    (bundle / "LabGate.kt").write_bytes(gate_kotlin_source())
    (bundle / "wbc_gate.tflite").write_bytes(gate.read_bytes()[:-1] + b"x")
    assert check_android_bundle(bundle) == ["wbc_gate.tflite: sha256 differs from wbc_model.json gate.sha256"]
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(gate, other / "wbc_gate.tflite")
    rec = json.loads(gate.with_suffix(".json").read_text())
    (other / "wbc_gate.json").write_text(json.dumps(dict(rec, source_model_sha256="0" * 64)))
    with pytest.raises(WbcEdgeError, match="export both from one run"):
        add_gate(tmp_path / "bundle", other / "wbc_gate.tflite")
