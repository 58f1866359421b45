"""Calibrated confidence and abstention: the numpy maths, the contract fields, the runtime and predict."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from click.testing import CliRunner

from wbc_edge.core.calibration import (apply_temperature, choose_threshold, coverage_at, expected_calibration_error,
                                  fit_calibration, fit_temperature, nll)


def _overconfident(n=2000, c=5, true_t=3.0, seed=0):
    """Probabilities whose honest temperature is `true_t`: labels drawn from softmax(z / true_t), model
    reports softmax(z)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 3, size=(n, c))
    honest = np.exp(z / true_t) / np.exp(z / true_t).sum(1, keepdims=True)
    y = np.array([rng.choice(c, p=p) for p in honest])
    reported = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    return reported.astype(np.float32), y


def test_fit_temperature_recovers_overconfidence_and_lowers_ece():
    p, y = _overconfident()
    t = fit_temperature(p, y)
    assert 2.4 < t < 3.6
    cal = apply_temperature(p, t)
    assert nll(cal, y) < nll(p, y)
    assert expected_calibration_error(cal, y) < 0.5 * expected_calibration_error(p, y)
    assert np.array_equal(cal.argmax(1), p.argmax(1)), "temperature never changes the top-1 class"
    assert np.allclose(cal.sum(1), 1.0, atol=1e-5)


def test_threshold_reaches_the_target_accuracy_on_accepted_images():
    p, y = _overconfident(true_t=2.0, seed=1)
    thr = choose_threshold(p, y, target_accuracy=0.9)
    at = coverage_at(p, y, thr)
    assert at["accepted_accuracy"] >= 0.9 and 0 < at["coverage"] < 1
    keep, wrong = p.max(1) >= thr, p.argmax(1) != y  # accepted-and-wrong: a share of all images (issue 32)
    assert at["accepted_and_wrong"] == pytest.approx(np.mean(keep & wrong)) and at["accepted_and_wrong"] > 0
    assert at["accepted_and_wrong"] == pytest.approx(at["coverage"] * (1 - at["accepted_accuracy"]))
    perfect = np.eye(5, dtype=np.float32)[y] * 0.9 + 0.02
    assert choose_threshold(perfect, y, 0.95) == 0.0, "everything accepted when everything is right"


def test_fit_calibration_uses_shifted_val_for_the_threshold():
    p, y = _overconfident(seed=2)
    ps, ys = _overconfident(true_t=6.0, seed=3)  # the "shifted" set is much harder
    a = fit_calibration(p, y)
    b = fit_calibration(p, y, ps, ys)
    assert a.temperature == b.temperature
    assert b.abstain_threshold >= a.abstain_threshold
    assert b.ece_after < b.ece_before and "shifted val" in b.fitted_on


def test_contract_carries_temperature_and_old_contracts_still_load():
    from wbc_edge.core.contract import ModelContract
    from wbc_edge.core.errors import ModelFileError

    c = ModelContract(temperature=1.7, abstain_threshold=0.8)
    back = ModelContract.from_json(c.to_json())
    assert back.temperature == 1.7 and back.abstain_threshold == 0.8
    old = json.loads(ModelContract().to_json())
    del old["temperature"], old["abstain_threshold"]
    assert ModelContract.from_json(json.dumps(old)).temperature is None
    with pytest.raises(ModelFileError, match="temperature"):
        ModelContract.from_json(json.dumps({**old, "temperature": -1}))
    with pytest.raises(ModelFileError, match="abstain_threshold"):
        ModelContract.from_json(json.dumps({**old, "abstain_threshold": 2}))


@pytest.fixture(scope="module")
def calibrated_tflite(tiny_tflite, tmp_path_factory):
    from wbc_edge.core.contract import embed_contract, read_contract, strip_contract

    src = tiny_tflite["float32"]
    data = src.read_bytes()
    contract = dataclasses.replace(read_contract(src), temperature=4.0, abstain_threshold=0.99)
    out = tmp_path_factory.mktemp("cal") / "cal_float32.tflite"
    out.write_bytes(embed_contract(strip_contract(data), contract))
    return out


def test_runtime_applies_temperature_and_flags_uncertain(tiny_tflite, calibrated_tflite, sample_files):
    from wbc_edge.runtime import Classifier

    plain = Classifier(tiny_tflite["float32"])
    cal = Classifier(calibrated_tflite)
    assert plain.temperature == 1.0 and plain.abstain_threshold == 0.0
    assert cal.temperature == 4.0 and cal.abstain_threshold == 0.99
    img = sample_files[0][0]
    raw = plain.predict_pixels(plain.preprocess(img))[0]
    assert np.allclose(cal.predict_pixels(cal.preprocess(img))[0], raw), "raw outputs are never changed"
    p_plain, p_cal = plain.predict(img), cal.predict(img)
    assert p_plain.index == p_cal.index
    assert p_cal.confidence <= p_plain.confidence + 1e-6  # T > 1 softens
    assert p_cal.uncertain and not p_plain.uncertain
    assert p_cal.to_dict()["uncertain"] is True
    relaxed = Classifier(calibrated_tflite, min_confidence=0.0)
    assert not relaxed.predict(img).uncertain


def test_predict_cli_shows_uncertain_and_min_confidence(calibrated_tflite, sample_files):
    from wbc_edge.cli import main

    img = str(sample_files[0][0])
    res = CliRunner().invoke(main, ["predict", str(calibrated_tflite), img])
    assert res.exit_code == 0, res.output
    assert "uncertain" in res.output and "temperature 4" in res.output
    res = CliRunner().invoke(main, ["predict", str(calibrated_tflite), img, "--json", "--min-confidence", "0"])
    assert json.loads(res.output.strip().splitlines()[-1])["uncertain"] is False
