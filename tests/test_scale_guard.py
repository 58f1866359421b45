"""The scale guard: measure the nucleus, magnify only cells far smaller than the training cells, and carry the
guard from the run through the contract to the runtime, predict and the cross-domain report."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from wbc_edge.core.scale_guard import (ScaleGuard, fit_scale_guard, guard_batch, guard_pixels, nucleus,
                                  nucleus_fraction)

GUARD = ScaleGuard(threshold=0.21, target=0.30, max_zoom=2.5)


def _cell(size=224, diameter=0.3, centre=(0.5, 0.5)) -> np.ndarray:
    """Pale pink background with a dark purple disc (the nucleus) of `diameter` x side."""
    px = np.empty((size, size, 3), dtype=np.uint8)
    px[:] = (235, 215, 220)
    yy, xx = np.mgrid[0:size, 0:size]
    disc = np.hypot(xx + 0.5 - centre[0] * size, yy + 0.5 - centre[1] * size) < diameter * size / 2
    px[disc] = (90, 40, 140)
    return px


def _zoom_out(px: np.ndarray, z: float) -> np.ndarray:
    from wbc_edge.data.augment import _zoom

    return np.clip(_zoom(px.astype(np.float32), z, np.zeros(2)), 0, 255).astype(np.uint8)


def test_nucleus_fraction_measures_the_disc():
    for d in (0.12, 0.2, 0.3, 0.45):
        assert nucleus_fraction(_cell(diameter=d)) == pytest.approx(d, rel=0.05)
    x, y, _ = nucleus(_cell(diameter=0.15, centre=(0.4, 0.6)))
    assert (x, y) == (pytest.approx(0.4 * 224, abs=1), pytest.approx(0.6 * 224, abs=1))
    assert nucleus(np.full((224, 224, 3), 200, dtype=np.uint8)) is None  # a blank frame: nothing to measure


def test_guard_leaves_training_sized_cells_alone_and_magnifies_small_ones():
    big = _cell(diameter=0.25)
    out, zoom = guard_pixels(big, GUARD)
    assert zoom == 1.0 and out is big, "at or above the threshold the pixels pass untouched"
    small = _cell(diameter=0.15, centre=(0.45, 0.55))
    out, zoom = guard_pixels(small, GUARD)
    assert zoom == pytest.approx(0.30 / 0.15, rel=0.06)
    assert out.dtype == np.uint8 and out.shape == small.shape
    assert nucleus_fraction(out) == pytest.approx(0.30, rel=0.06)  # magnified to the training median
    x, y, _ = nucleus(out)
    assert (x, y) == (pytest.approx(112, abs=2), pytest.approx(112, abs=2))  # ... and centred
    tiny = _cell(diameter=0.06)
    assert guard_pixels(tiny, GUARD)[1] == 2.5  # never beyond max_zoom (inside the trained 2.8x)
    assert guard_pixels(small, None) == (small, 1.0)


def test_guard_batch_copies_only_when_something_changed():
    batch = np.stack([_cell(diameter=0.3), _cell(diameter=0.1)])
    out, zooms = guard_batch(batch, GUARD)
    assert out is not batch and zooms[0] == 1.0 and zooms[1] > 1.0
    assert np.array_equal(out[0], batch[0]) and not np.array_equal(out[1], batch[1])
    one = batch[:1]
    same, zooms = guard_batch(one, GUARD)
    assert same is one and list(zooms) == [1.0]


def test_fit_takes_a_low_quantile_and_the_median():
    rng = np.random.default_rng(0)
    diameters = rng.uniform(0.24, 0.36, 60)
    g = fit_scale_guard([_cell(diameter=d) for d in diameters], quantile=0.05)
    fr = [nucleus_fraction(_cell(diameter=d)) for d in diameters]
    assert g.threshold == pytest.approx(np.quantile(fr, 0.05), abs=1e-3)
    assert g.target == pytest.approx(np.median(fr), abs=1e-3)
    with pytest.raises(ValueError, match=">= 20 images"):
        fit_scale_guard([_cell()] * 5)


def test_invalid_guards_are_refused():
    for bad in (dict(threshold=0.4, target=0.3), dict(threshold=0.2, target=0.3, max_zoom=9),
                dict(threshold=float("nan"), target=0.3), dict(threshold=0.2, target=0.3, method="other")):
        with pytest.raises(ValueError):
            ScaleGuard(**bad)
    with pytest.raises(ValueError, match="unknown fields"):
        ScaleGuard.from_dict({**GUARD.to_dict(), "zoom": 3})
    assert ScaleGuard.from_dict(GUARD.to_dict()) == GUARD


def test_real_pbc_cell_zoomed_out_is_magnified_back(sample_files):
    """A shipped PBC sample at half magnification (the small-cell stand-in of small_cell_probe.py)."""
    from wbc_edge.core.preprocess import preprocess

    checked = 0
    for path in sample_files[0][::8]:
        px = preprocess(path, 224)
        f = nucleus_fraction(px)
        if f is None or not GUARD.threshold * 1.15 < f < GUARD.threshold * 1.8:
            continue
        assert guard_pixels(px, GUARD)[1] == 1.0
        out, zoom = guard_pixels(_zoom_out(px, 0.5), GUARD)
        assert zoom == pytest.approx(min(2.5, GUARD.target / (0.5 * f)), rel=0.2), (path, f, zoom)
        # zoomed out the nucleus is ~f/2; magnified by min(2.5, target / (f/2)) it is back to ~min(target, 1.25 f)
        assert nucleus_fraction(out) == pytest.approx(min(GUARD.target, 1.25 * f), rel=0.25)
        checked += 1
    assert checked >= 3


def test_contract_carries_the_guard_and_old_contracts_still_load():
    from wbc_edge.core.contract import ModelContract
    from wbc_edge.core.errors import ModelFileError

    c = ModelContract(scale_guard=GUARD.to_dict())
    assert ModelContract.from_json(c.to_json()).scale_guard == GUARD.to_dict()
    old = json.loads(ModelContract().to_json())
    del old["scale_guard"]
    assert ModelContract.from_json(json.dumps(old)).scale_guard is None
    with pytest.raises(ModelFileError, match="scale_guard") as err:
        ModelContract.from_json(json.dumps({**old, "scale_guard": {"threshold": 0.5, "target": 0.3}}))
    assert "\n" not in str(err.value)


@pytest.fixture(scope="module")
def guarded_tflite(tiny_tflite, tmp_path_factory):
    from wbc_edge.core.contract import embed_contract, read_contract, strip_contract

    src = tiny_tflite["float32"]
    contract = dataclasses.replace(read_contract(src), scale_guard=GUARD.to_dict())
    out = tmp_path_factory.mktemp("guard") / "guard_float32.tflite"
    out.write_bytes(embed_contract(strip_contract(src.read_bytes()), contract))
    return out


@pytest.fixture(scope="module")
def small_cell_file(sample_files, tmp_path_factory):
    """A shipped sample zoomed out to half magnification, saved as a PNG."""
    from wbc_edge.core.preprocess import preprocess

    for path in sample_files[0]:
        px = preprocess(path, 224)
        if (nucleus_fraction(px) or 0) > 0.25:
            out = tmp_path_factory.mktemp("small") / "small_cell.png"
            Image.fromarray(_zoom_out(px, 0.5)).save(out)
            return out
    pytest.fail("no sample with a clear nucleus")


def test_runtime_feeds_the_guarded_pixels(tiny_tflite, guarded_tflite, small_cell_file):
    """The runtime's pixels are `preprocess` then `guard_pixels` - the same two functions crossdomain and
    export use for the Keras reference - and the guard can be switched off."""
    from wbc_edge.core.preprocess import preprocess
    from wbc_edge.runtime import Classifier

    clf = Classifier(guarded_tflite)
    assert clf.scale_guard == GUARD
    size = clf.input_size
    expected, zoom = guard_pixels(preprocess(small_cell_file, size), GUARD)
    pixels, got_zoom = clf.prepare(small_cell_file)
    assert zoom > 1.5 and got_zoom == zoom and np.array_equal(pixels, expected)
    pred = clf.predict(small_cell_file)
    assert pred.zoom == zoom and pred.to_dict()["zoom"] == round(zoom, 3)
    assert np.allclose(pred.probabilities, clf.predict_pixels(expected)[0])
    off = Classifier(guarded_tflite, scale_guard=False)
    assert off.scale_guard is None and off.prepare(small_cell_file)[1] == 1.0
    assert np.array_equal(off.preprocess(small_cell_file), preprocess(small_cell_file, size))
    assert Classifier(tiny_tflite["float32"]).scale_guard is None  # a model without a guard: as before


def test_predict_cli_shows_the_zoom_and_can_turn_the_guard_off(guarded_tflite, small_cell_file):
    from wbc_edge.cli import main

    res = CliRunner().invoke(main, ["predict", str(guarded_tflite), str(small_cell_file), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output.strip().splitlines()[-1])["zoom"] > 1.5
    res = CliRunner().invoke(main, ["predict", str(guarded_tflite), str(small_cell_file)])
    assert "scale guard" in res.output and "x " in res.output.splitlines()[-1]
    res = CliRunner().invoke(main, ["predict", str(guarded_tflite), str(small_cell_file), "--json",
                                    "--no-scale-guard"])
    assert json.loads(res.output.strip().splitlines()[-1])["zoom"] == 1.0


def test_calibrate_fits_the_guard_of_a_run_and_crossdomain_applies_it(tiny_run_dir, tiny_tflite, guarded_tflite,
                                                                      small_cell_file, sample_files, tmp_path):
    """`wbc-edge calibrate --scale-guard-only` writes scale_guard.json from the run's train split; the
    cross-domain report then feeds every model (Keras reference and .tflite) the guarded pixels."""
    from wbc_edge.cli import main
    from wbc_edge.data.run_files import load_scale_guard
    from wbc_edge.bench.crossdomain import CrossDomainConfig, Domain, run_report

    run = tmp_path / "run"
    shutil.copytree(tiny_run_dir, run)
    res = CliRunner().invoke(main, ["calibrate", str(run), "--scale-guard-only"])
    assert res.exit_code == 0, res.output
    fitted = load_scale_guard(run)
    assert fitted is not None and 0.1 < fitted.threshold <= fitted.target < 0.5
    (run / "scale_guard.json").write_text(json.dumps(GUARD.to_dict()))  # the guarded .tflite's, for agreement

    lab = tmp_path / "lab"
    for name in ("basophil", "neutrophil"):
        (lab / name).mkdir(parents=True)
    shutil.copy(small_cell_file, lab / "neutrophil" / "small.png")
    shutil.copy(sample_files[0][0], lab / "basophil" / sample_files[0][0].name)
    cfg = CrossDomainConfig(models=[str(run / "model.keras"), str(tiny_tflite["float32"])],
                            domains=[Domain(str(lab))], progress=False)
    result = run_report(cfg)
    assert result["scale_guard"] == GUARD.to_dict()
    dom = result["domains"][0]
    from wbc_edge.core.preprocess import preprocess

    size = tiny_tflite["size"]
    expected = sum(guard_pixels(preprocess(p, size), GUARD)[1] != 1.0 for p in sorted(lab.rglob("*.*")))
    assert dom["magnified"] == expected >= 1 and dom["n"] == 2
    assert dom["results"][str(tiny_tflite["float32"])]["agreement_pct"] == 100.0  # same pixels for both
    off = run_report(dataclasses.replace(cfg, scale_guard=False))
    assert off["scale_guard"] is None and off["domains"][0]["magnified"] == 0

    # The .tflite alone (reference = the float32 file): its own contract's guard, the runtime's pixels.
    alone = run_report(CrossDomainConfig(models=[str(guarded_tflite)], domains=[Domain(str(lab))], progress=False))
    from wbc_edge.runtime import Classifier

    clf = Classifier(guarded_tflite)
    row = alone["domains"][0]["results"][str(guarded_tflite)]
    preds = [clf.predict(p).label for p in (lab / "basophil" / sample_files[0][0].name, lab / "neutrophil" / "small.png")]
    assert row["accuracy"] == np.mean([preds[0] == "basophil", preds[1] == "neutrophil"])


def test_export_embeds_the_runs_guard_and_evaluate_applies_it(tiny_run_dir, sample_root, tmp_path):
    from wbc_edge.core.contract import read_contract
    from wbc_edge.export import ExportConfig, export_model
    from wbc_edge.model.scoring import evaluate_keras

    run = tmp_path / "run"
    shutil.copytree(tiny_run_dir, run)
    (run / "scale_guard.json").write_text(json.dumps(GUARD.to_dict()))
    res = export_model(ExportConfig(run, out_dir=tmp_path / "export", variants=("float32",), verbose=False))
    assert read_contract(res.files["float32"]).scale_guard == GUARD.to_dict()
    assert res.manifest["scale_guard"] == GUARD.to_dict()
    from wbc_edge.export.metadata_read import read_standard_metadata

    inp = read_standard_metadata(res.files["float32"])["subgraphMetadata"][0]["inputTensorMetadata"][0]
    assert f"less than {GUARD.threshold:g} of the side" in inp["description"]  # what MediaPipe users read
    _, saved = evaluate_keras(str(run / "model.keras"), str(sample_root), out_dir=str(tmp_path / "eval"),
                              progress=False)
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["scale_guard"] == GUARD.to_dict()


def test_bench_feeds_the_references_guarded_pixels_and_reports_the_cost(guarded_tflite, small_cell_file,
                                                                       sample_files, tmp_path):
    from wbc_edge.bench import run_bench
    from wbc_edge.bench.config import BenchConfig

    lab = tmp_path / "lab"
    for name in ("basophil", "neutrophil"):
        (lab / name).mkdir(parents=True)
    shutil.copy(small_cell_file, lab / "neutrophil" / "small.png")
    shutil.copy(sample_files[0][0], lab / "basophil" / sample_files[0][0].name)
    cfg = BenchConfig(models=[str(guarded_tflite)], data=str(lab), runs=2, warmup=1, ttfp=False,
                      batch_throughput_images=2)
    g = run_bench(cfg, progress=False)["data"]["scale_guard"]
    from wbc_edge.runtime import Classifier

    clf = Classifier(guarded_tflite)
    expected = sum(clf.prepare(p)[1] != 1.0 for p in sorted(lab.rglob("*.*")))
    assert g["magnified"] == expected >= 1 and g["n"] == 2 and g["ms_per_image"] > 0
    assert g["threshold"] == GUARD.threshold
    off = run_bench(dataclasses.replace(cfg, scale_guard=False), progress=False)
    assert off["data"]["scale_guard"] is None
