"""MediaPipe Tasks ImageClassifier (mediapipe 1.2.2) as a real client of our .tflite files.

mediapipe cannot be installed next to the [train] extra (mediapipe 1.2.2 needs absl-py~=2.3, tensorflow-model-
optimization 0.8.1 pins absl-py~=1.2), so these tests run in their own venv and are skipped elsewhere:

    python3 -m venv .venv-mp && .venv-mp/bin/pip install -e '.[mediapipe,dev]'
    .venv-mp/bin/python -m pytest tests/test_mediapipe.py tests/test_tflite_metadata.py

Every shipped variant (export/ x 5 + android_assets/wbc_int8.tflite) is copied, given the standard metadata
(`wbc-edge metadata add`, the same code `wbc-edge export` runs) and classified by MediaPipe on the 40 shipped
PBC samples.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest

from wbc_edge.core.labels import WBC5 as CLASSES

REPO = Path(__file__).resolve().parents[1]
EXPORT = REPO / "export"
ANDROID = REPO / "android_assets"
VARIANTS = ("float32", "float16", "dynamic", "int8", "qat_int8", "android_int8")
HAVE_MEDIAPIPE = importlib.util.find_spec("mediapipe") is not None
SKIP_REASON = ("mediapipe not installed in this venv: it cannot share one with [train] (mediapipe 1.2.2 needs "
               "absl-py~=2.3, tensorflow-model-optimization 0.8.1 pins absl-py~=1.2); run python3 -m venv "
               ".venv-mp && .venv-mp/bin/pip install -e '.[mediapipe,dev]' && .venv-mp/bin/python -m pytest "
               "tests/test_mediapipe.py")
needs_mediapipe = pytest.mark.skipif(not HAVE_MEDIAPIPE, reason=SKIP_REASON)


def _source(variant: str) -> Path:
    return ANDROID / "wbc_int8.tflite" if variant == "android_int8" else EXPORT / f"wbc_{variant}.tflite"


@pytest.fixture(scope="module")
def with_metadata(tmp_path_factory) -> dict[str, Path]:
    from wbc_edge.export.metadata_files import embed_metadata

    out = tmp_path_factory.mktemp("mp_models")
    paths = {}
    for v in VARIANTS:
        paths[v] = out / f"{v}.tflite"
        shutil.copyfile(_source(v), paths[v])
        embed_metadata(paths[v], update_records=False)
    return paths


def _classifier(path: Path):
    from mediapipe.tasks.python import BaseOptions, vision

    opts = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=str(path)), max_results=-1)
    return vision.ImageClassifier.create_from_options(opts)


def _classify(clf, rgb: np.ndarray):
    import mediapipe as mp

    cats = clf.classify(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb))) \
        .classifications[0].categories
    probs = np.zeros(len(CLASSES), dtype=np.float32)
    for c in cats:
        if c.category_name in CLASSES:
            probs[CLASSES.index(c.category_name)] = c.score
    return cats[0].category_name, probs


@needs_mediapipe
@pytest.mark.parametrize("variant", VARIANTS)
def test_mediapipe_names_the_class_and_agrees_with_runtime(with_metadata, variant, sample_files):
    from wbc_edge.core.preprocess import load_image, preprocess
    from wbc_edge.runtime import Classifier

    paths, labels = sample_files
    # MediaPipe cannot run the scale guard (wbc_edge.core.scale_guard): compare with the runtime without it
    rt = Classifier(with_metadata[variant], num_threads=1, scale_guard=False)
    clf = _classifier(with_metadata[variant])
    try:
        named = correct = agree = agree_pre = 0
        max_dp_pre = 0.0
        for p, y in zip(paths, labels, strict=True):
            pred = rt.predict(p)
            name, _ = _classify(clf, np.asarray(load_image(p)))      # MediaPipe resizes itself
            named += name is not None
            correct += name == CLASSES[int(y)]
            agree += name == pred.label
            # our preprocessed pixels: MediaPipe's resize is an identity, nothing else may differ (compared
            # with the raw outputs: a calibration temperature is the runtime's, MediaPipe cannot apply it)
            px = preprocess(p, rt.input_size)
            name_pre, probs_pre = _classify(clf, px)
            agree_pre += name_pre == pred.label
            raw = rt.predict_pixels(px)[0][rt.output_order()]
            max_dp_pre = max(max_dp_pre, float(np.abs(probs_pre - raw).max()))
    finally:
        clf.close()
    n = len(paths)
    assert named == n, f"{variant}: MediaPipe returned no class name for {n - named} of {n} images"
    assert correct >= 0.95 * n, f"{variant}: MediaPipe named {correct}/{n} correctly"
    assert agree >= 0.95 * n, f"{variant}: MediaPipe agrees with the runtime on {agree}/{n}"
    assert agree_pre == n and max_dp_pre <= 1e-6, (variant, agree_pre, max_dp_pre)


@needs_mediapipe
def test_without_metadata_mediapipe_refuses_float_and_names_nothing(sample_files, tmp_path):
    """The problem the metadata fixes, as MediaPipe 1.2.2 shows it on files exported before it (the shipped
    files with the metadata entry removed again)."""
    from helpers import without_metadata

    from wbc_edge.core.preprocess import load_image

    bare = {}
    for v in ("float32", "int8"):
        bare[v] = tmp_path / f"wbc_{v}.tflite"
        bare[v].write_bytes(without_metadata((EXPORT / f"wbc_{v}.tflite").read_bytes()))
    with pytest.raises(Exception, match="NormalizationOptions"):
        _classifier(bare["float32"])
    clf = _classifier(bare["int8"])
    try:
        name, _ = _classify(clf, np.asarray(load_image(sample_files[0][0])))
    finally:
        clf.close()
    assert name is None


@needs_mediapipe
def test_bench_client_mediapipe(with_metadata, sample_root, tmp_path):
    from click.testing import CliRunner

    from wbc_edge.bench import BenchConfig, run_bench, to_markdown
    from wbc_edge.cli import main

    models = [with_metadata["float32"], with_metadata["int8"]]
    bare = tmp_path / "no_metadata_float32.tflite"
    from helpers import without_metadata

    bare.write_bytes(without_metadata((EXPORT / "wbc_float32.tflite").read_bytes()))  # as exported before it
    res = run_bench(BenchConfig(models + [bare], data=sample_root, limit=10, runs=1, warmup=0,
                                batch_throughput_images=0, clients=("mediapipe",)))
    client = res["clients"]["mediapipe"]
    by_name = {Path(v["path"]).name: v for v in client["variants"]}
    for m in models:
        v = by_name[m.name]
        assert v["loaded"] and v["named"] and v["n"] == 10
        assert v["agreement_pct"] >= 90 and v["accuracy"] >= 0.9
        assert v["pre_resized"]["agreement_pct"] == 100.0 and v["pre_resized"]["max_abs_dprob"] <= 1e-6
        assert v["emulation_max_abs_dprob"] is not None
    refused = by_name[bare.name]
    assert not refused["loaded"] and "NormalizationOptions" in refused["error"]
    px = client["resize_pixel_difference"]["224"]
    assert 0 < px["mean_abs"] < 5 and px["n_images"] == 10
    md = to_markdown(res)
    assert "## Client: MediaPipe Tasks ImageClassifier" in md and "**refused**" in md
    # the CLI flag
    out = CliRunner().invoke(main, ["bench", str(models[1]), "--data", str(sample_root), "--limit", "5",
                                    "--runs", "1", "--warmup", "0", "--batch-throughput-images", "0",
                                    "--client", "mediapipe"])
    assert out.exit_code == 0, out.output
    assert "Client: MediaPipe Tasks ImageClassifier" in out.output


@pytest.mark.skipif(HAVE_MEDIAPIPE, reason="checks the message shown where mediapipe is not installed")
def test_bench_client_mediapipe_without_mediapipe_is_a_one_line_error(sample_root):
    from click.testing import CliRunner

    from wbc_edge.cli import main

    out = CliRunner().invoke(main, ["bench", str(EXPORT / "wbc_int8.tflite"), "--data", str(sample_root),
                                    "--client", "mediapipe"])
    assert out.exit_code == 1
    lines = [x for x in out.output.strip().splitlines() if x.strip()]
    assert len(lines) == 1 and "--client mediapipe needs MediaPipe" in lines[0] and ".venv-mp" in lines[0]
