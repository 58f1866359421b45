"""`wbc-edge crossdomain`: per-domain metrics and agreement, the gate, bad input."""

from __future__ import annotations

import json

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from wbc_edge.cli import main
from wbc_edge.bench.crossdomain import CrossDomainConfig, Domain, domain_metrics, run_report, to_markdown
from wbc_edge.core.errors import WbcEdgeError


def test_domain_metrics_balanced_accuracy_over_big_classes():
    labels = ["a", "b", "c"]
    y = np.array([0] * 10 + [1] * 10 + [2])          # class c has one image
    probs = np.zeros((21, 3), dtype=np.float32)
    probs[np.arange(21), [0] * 10 + [1] * 5 + [0] * 5 + [0]] = 1.0
    m = domain_metrics(y, probs, labels, min_class_images=10)
    assert m["balanced_accuracy"] == pytest.approx((1.0 + 0.5 + 0.0) / 3)
    assert m["balanced_accuracy_big_classes"] == pytest.approx(0.75)
    assert m["big_classes"] == ["a", "b"]
    assert m["support"] == {"a": 10, "b": 10, "c": 1}
    lo, hi = m["balanced_accuracy_interval95"]   # the 1-image class makes it wide
    assert lo < m["balanced_accuracy"] < hi and hi - lo > 0.3
    md = to_markdown({"reference": None, "min_class_images": 10, "domains": [
        {"name": "lab", "n": 21, "results": {"m.tflite": m}}]})
    assert f"| 50.0 ({100 * lo:.0f}-{100 * hi:.0f}) | 75.0 |" in md


def test_report_on_two_domains_with_agreement(tiny_tflite, sample_root, tmp_path):
    cfg = CrossDomainConfig(models=[str(tiny_tflite["float32"]), str(tiny_tflite["int8"])],
                            domains=[Domain(str(sample_root), name="lab A"), Domain(str(sample_root), name="lab B")],
                            min_agreement=0.0, progress=False)
    result = run_report(cfg)
    assert result["reference"] == str(tiny_tflite["float32"])
    assert [d["name"] for d in result["domains"]] == ["lab A", "lab B"]
    for d in result["domains"]:
        assert d["n"] == 40
        int8 = d["results"][str(tiny_tflite["int8"])]
        ref = d["results"][str(tiny_tflite["float32"])]
        assert "agreement_pct" not in ref and 0 <= int8["agreement_pct"] <= 100
        assert int8["flips"] == round((100 - int8["agreement_pct"]) * 40 / 100)
        # agreement on the images int8 accepts at its own (calibrated) threshold, recomputed from the runtime
        from wbc_edge.runtime import Classifier

        i8, f32 = Classifier(tiny_tflite["int8"]), Classifier(tiny_tflite["float32"])
        files = sorted(p for p in Path(sample_root).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        px = np.stack([i8.preprocess(f) for f in files])
        p8, pf = i8.calibrated(i8.predict_pixels(px)), f32.predict_pixels(px)
        acc = p8.max(1) >= i8.abstain_threshold
        assert int8["accepted_n"] == int(acc.sum()) and ref.get("accepted_n") is None
        want = 100 * np.mean(p8[acc].argmax(1) == pf[acc].argmax(1)) if acc.any() else None
        assert int8["accepted_agreement_pct"] == (pytest.approx(want) if want is not None else None)
    assert result["gate"]["passed"]
    md = to_markdown(result)
    assert "lab A" in md and "| 40 |" in md and "agree on accepted % (n)" in md


def test_agreement_on_accepted_images_uses_the_models_own_threshold(tiny_tflite, sample_root, tmp_path):
    """The int8 file re-embedded with a temperature and an abstain threshold at the median of its calibrated
    confidence: the report's accepted count and agreement are those of the images at or above it."""
    import dataclasses

    from wbc_edge.core.contract import embed_contract, read_contract
    from wbc_edge.runtime import Classifier

    raw = Classifier(tiny_tflite["int8"])
    files = sorted(p for p in Path(sample_root).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    px = np.stack([raw.preprocess(f) for f in files])
    blob = Path(tiny_tflite["int8"]).read_bytes()
    base = read_contract(tiny_tflite["int8"])
    probe = tmp_path / "t.tflite"
    probe.write_bytes(embed_contract(blob, dataclasses.replace(base, temperature=2.0, abstain_threshold=0.0)))
    conf = Classifier(probe).calibrated(raw.predict_pixels(px)).max(1)
    thr = float(np.median(conf))
    path = tmp_path / "int8_thr.tflite"
    path.write_bytes(embed_contract(blob, dataclasses.replace(base, temperature=2.0, abstain_threshold=thr)))
    result = run_report(CrossDomainConfig(models=[str(tiny_tflite["float32"]), str(path)],
                                          domains=[Domain(str(sample_root), name="lab")], progress=False))
    row = result["domains"][0]["results"][str(path)]
    acc = conf >= thr
    assert 0 < acc.sum() < len(acc) and row["accepted_n"] == int(acc.sum())
    ref_top = Classifier(tiny_tflite["float32"]).predict_pixels(px).argmax(1)
    p8 = raw.predict_pixels(px).argmax(1)
    assert row["accepted_agreement_pct"] == pytest.approx(100 * np.mean(p8[acc] == ref_top[acc]))
    assert f"({int(acc.sum())}) |" in to_markdown(result)


def test_gate_fails_when_agreement_is_impossible(tiny_tflite, sample_root, tmp_path):
    out = tmp_path / "rep"
    res = CliRunner().invoke(main, ["crossdomain", str(tiny_tflite["float32"]), str(tiny_tflite["int8"]),
                                    "--data", f"S={sample_root}", "--limit", "10", "--min-agreement", "100.5",
                                    "--out", str(out)], catch_exceptions=False)
    assert res.exit_code == 2  # click refuses > 100 before anything runs
    res = CliRunner().invoke(main, ["crossdomain", str(tiny_tflite["float32"]), str(tiny_tflite["int8"]),
                                    "--data", f"S={sample_root}", "--limit", "10", "--out", str(out)])
    assert res.exit_code == 0, res.output
    data = json.loads((out / "crossdomain.json").read_text())
    assert data["domains"][0]["n"] == 10
    assert (out / "crossdomain.png").stat().st_size > 0 and (out / "crossdomain.md").exists()


def test_bad_inputs_get_one_line_errors(tiny_tflite, sample_root, tmp_path):
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"x")
    with pytest.raises(WbcEdgeError, match="model.onnx: not a model file"):
        run_report(CrossDomainConfig(models=[str(bad)], domains=[Domain(str(sample_root))], progress=False))
    with pytest.raises(WbcEdgeError, match="share a name"):
        run_report(CrossDomainConfig(models=[str(tiny_tflite["float32"])],
                                     domains=[Domain(str(sample_root)), Domain(str(sample_root))], progress=False))
    res = CliRunner().invoke(main, ["crossdomain", str(tiny_tflite["float32"]), "--data", str(tmp_path / "nope")])
    assert res.exit_code == 2 and "not a directory" in res.output


def test_unreadable_files_progress_and_no_matplotlib(tiny_tflite, sample_root, tmp_path, monkeypatch):
    """Issue 30: a corrupt file is named (stderr, JSON, Markdown), not silently left out of n; a domain shows
    progress while it is scored; without matplotlib no PNG is claimed as written."""
    import shutil

    import wbc_edge.metrics as metrics
    from wbc_edge.cli import main
    from wbc_edge.core.errors import WbcEdgeError

    data = tmp_path / "lab"
    shutil.copytree(sample_root, data, ignore=shutil.ignore_patterns("README*"))
    (data / "monocyte" / "broken.jpg").write_bytes(b"GIF89a garbage")

    def no_matplotlib():
        raise WbcEdgeError("plots need matplotlib (not installed)")

    monkeypatch.setattr(metrics, "pyplot", no_matplotlib)
    out = tmp_path / "rep"
    res = CliRunner().invoke(main, ["crossdomain", str(tiny_tflite["float32"]), str(tiny_tflite["int8"]),
                                    "--data", f"lab={data}", "--out", str(out)])
    assert res.exit_code == 0, res.output
    d = json.loads((out / "crossdomain.json").read_text())["domains"][0]
    assert d["n"] == 40 and [s["path"] for s in d["skipped"]] == ["monocyte/broken.jpg"]
    assert "monocyte/broken.jpg" in (out / "crossdomain.md").read_text()
    assert "lab: 1 file(s)" in res.output and "monocyte/broken.jpg (" in res.output
    assert "lab: 2 model(s)" in res.output                         # the progress line inside the domain
    assert "Plots skipped: plots need matplotlib" in res.output
    wrote = next(x for x in res.output.splitlines() if x.startswith("Wrote"))
    assert ".png" not in wrote and "crossdomain.json" in wrote
    assert not list(out.glob("*.png"))
