"""wbc_edge.metrics: metrics against hand-computed values, CI, parity helpers, validation, plots, imports."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from helpers import import_blocker

from wbc_edge.core.labels import WBC5, Labels
from wbc_edge.metrics import (
    Metrics,
    agreement,
    balanced_accuracy_interval,
    bootstrap_ci,
    compute_metrics,
    confusion_matrix,
    per_class_recall_delta,
    plot_confusion,
    plot_curves,
    prob_error,
    save_metrics,
)

REPO = Path(__file__).resolve().parents[1]

# ------------------------------------------------------------------------------------------------------
# The hand-worked example: 10 samples, labels a..e.
#   a, b: ordinary classes; c: occurs in y_true but is never predicted; d: predicted but never true;
#   e: neither (must not enter either macro average).
#
#   idx     0 1 2 3 4 5 6 7 8 9
#   y_true  a a a a b b b c c b
#   y_pred  a a a b b b a a d d
#
#   confusion (rows true, cols pred)      a  b  c  d  e    support
#                                    a  [ 3, 1, 0, 0, 0]   4
#                                    b  [ 1, 2, 0, 1, 0]   4
#                                    c  [ 1, 0, 0, 1, 0]   2
#                                    d  [ 0, 0, 0, 0, 0]   0
#                                    e  [ 0, 0, 0, 0, 0]   0
#   predicted (column sums)             5  3  0  2  0
#
#   accuracy  = (3 + 2) / 10 = 0.5
#   precision a = 3/5 = 0.6   b = 2/3   c = 0/0 -> 0   d = 0/2 = 0   e = 0/0 -> 0
#   recall    a = 3/4 = 0.75  b = 2/4 = 0.5   c = 0/2 = 0   d = 0/0 -> 0   e -> 0
#   f1        a = 2*0.6*0.75/1.35 = 2/3   b = 2*(2/3)*(1/2)/(7/6) = 4/7   c = d = e = 0
#   balanced accuracy = mean recall over {a, b, c} (in y_true)       = (0.75 + 0.5 + 0) / 3 = 5/12
#   macro-F1          = mean F1 over {a, b, c, d} (in y_true or pred) = (2/3 + 4/7 + 0 + 0) / 4 = 13/42
#   (both are what scikit-learn's balanced_accuracy_score / f1_score(average="macro") give.)
# ------------------------------------------------------------------------------------------------------
LABELS = ["a", "b", "c", "d", "e"]
Y_TRUE = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 1])
Y_PRED = np.array([0, 0, 0, 1, 1, 1, 0, 0, 3, 3])
CM = [[3, 1, 0, 0, 0],
      [1, 2, 0, 1, 0],
      [1, 0, 0, 1, 0],
      [0, 0, 0, 0, 0],
      [0, 0, 0, 0, 0]]


@pytest.fixture(scope="module")
def hand() -> Metrics:
    return compute_metrics(Y_TRUE, Y_PRED, LABELS, bootstrap=200, seed=0)


def test_confusion_matrix_hand_example():
    cm = confusion_matrix(Y_TRUE, Y_PRED, 5)
    assert cm.dtype == np.int64 and cm.shape == (5, 5)
    assert cm.tolist() == CM


def test_confusion_orientation_rows_are_true():
    cm = confusion_matrix([0, 0], [2, 2], 3)
    assert cm[0, 2] == 2 and cm[2, 0] == 0


def test_hand_metrics(hand):
    assert hand.n == 10
    assert hand.labels == LABELS
    assert hand.confusion == CM
    assert hand.accuracy == pytest.approx(0.5)
    assert hand.balanced_accuracy == pytest.approx(5 / 12)
    assert hand.macro_f1 == pytest.approx(13 / 42)
    pc = {d["label"]: d for d in hand.per_class}
    assert [d["label"] for d in hand.per_class] == LABELS
    expect = {  # label: (precision, recall, f1, support)
        "a": (0.6, 0.75, 2 / 3, 4),
        "b": (2 / 3, 0.5, 4 / 7, 4),
        "c": (0.0, 0.0, 0.0, 2),  # never predicted: precision 0, not NaN
        "d": (0.0, 0.0, 0.0, 0),  # never true: recall 0, not NaN
        "e": (0.0, 0.0, 0.0, 0),
    }
    for label, (p, r, f, s) in expect.items():
        assert pc[label]["precision"] == pytest.approx(p), label
        assert pc[label]["recall"] == pytest.approx(r), label
        assert pc[label]["f1"] == pytest.approx(f), label
        assert pc[label]["support"] == s, label


def test_perfect_and_labels_are_required():
    y = np.arange(len(WBC5)).repeat(3)
    m = compute_metrics(y, y, Labels(WBC5), bootstrap=50)  # a Labels value or a list of names
    assert m.labels == list(WBC5)
    with pytest.raises(TypeError):
        compute_metrics(y, y, bootstrap=50)  # no frozen default class list
    with pytest.raises(TypeError):
        Metrics(1.0, 1.0, 1.0, [], [], 1, None)  # noqa - a Metrics names its classes too
    assert m.accuracy == m.balanced_accuracy == m.macro_f1 == 1.0
    assert m.accuracy_ci95 == (1.0, 1.0)


def test_to_dict_is_plain_json(hand):
    d = hand.to_dict()
    text = json.dumps(d, allow_nan=False)  # no NaN, no numpy types
    back = json.loads(text)
    assert back["accuracy"] == 0.5 and back["n"] == 10
    assert back["confusion"] == CM
    assert back["labels"] == LABELS
    assert len(back["accuracy_ci95"]) == 2
    assert back["per_class"][0] == {"label": "a", "precision": 0.6, "recall": 0.75,
                                    "f1": pytest.approx(2 / 3), "support": 4}
    for v in (d["accuracy"], d["per_class"][1]["f1"], d["accuracy_ci95"][0]):
        assert type(v) is float
    assert type(d["per_class"][1]["support"]) is int and type(d["confusion"][0][0]) is int


def test_format_table(hand):
    text = hand.format_table()
    assert "50.00%" in text and "95% CI" in text and "n=10" in text
    assert "41.67%" in text  # balanced accuracy 5/12
    assert "0.3095" in text  # macro-F1 13/42
    assert "rows = true" in text
    lines = text.splitlines()
    row_b = [ln for ln in lines if ln.split() == ["b", "1", "2", "0", "1", "0"]]
    assert row_b, text  # the confusion row of true class b
    assert any(ln.split()[:1] == ["a"] and "60.00%" in ln and "75.00%" in ln for ln in lines)
    no_ci = compute_metrics(Y_TRUE, Y_PRED, LABELS, bootstrap=0)
    assert no_ci.accuracy_ci95 is None and "CI" not in no_ci.format_table()
    assert no_ci.to_dict()["accuracy_ci95"] is None


# ------------------------------------------------------------------------------------------ bootstrap


def test_bootstrap_ci_contains_estimate_and_is_deterministic():
    rng = np.random.default_rng(1)
    correct = rng.random(300) < 0.8
    lo, hi = bootstrap_ci(correct, n_boot=500, seed=3)
    assert lo <= correct.mean() <= hi and lo < hi
    assert bootstrap_ci(correct, n_boot=500, seed=3) == (lo, hi)
    # percentiles of a discrete distribution may coincide for two seeds, but not for all of them
    assert len({bootstrap_ci(correct, n_boot=50, seed=s) for s in range(6)}) > 1
    lo90, hi90 = bootstrap_ci(correct, n_boot=500, seed=3, level=0.90)
    assert lo <= lo90 and hi90 <= hi


def test_bootstrap_ci_narrows_with_n():
    small = np.array([True] * 40 + [False] * 10)        # 80% of 50
    large = np.array([True] * 4000 + [False] * 1000)    # 80% of 5000
    lo_s, hi_s = bootstrap_ci(small, n_boot=1000, seed=0)
    lo_l, hi_l = bootstrap_ci(large, n_boot=1000, seed=0)
    assert lo_l <= 0.8 <= hi_l
    assert (hi_l - lo_l) < (hi_s - lo_s) / 5  # width ~ 1/sqrt(n): about 10x narrower
    # Roughly the normal-approximation width 2*1.96*sqrt(p(1-p)/n) = 0.0222 for n=5000.
    assert 0.015 < hi_l - lo_l < 0.03


def test_compute_metrics_ci_contains_accuracy(hand):
    lo, hi = hand.accuracy_ci95
    assert 0.0 <= lo <= hand.accuracy <= hi <= 1.0
    again = compute_metrics(Y_TRUE, Y_PRED, LABELS, bootstrap=200, seed=0)
    assert again.accuracy_ci95 == hand.accuracy_ci95


@pytest.mark.parametrize("kwargs, match", [
    ({"correct": []}, "non-empty"),
    ({"correct": [[True]]}, "1-D"),
    ({"correct": [0, 2]}, "boolean"),
    ({"correct": [True], "n_boot": 0}, "n_boot"),
    ({"correct": [True], "level": 1.0}, "level"),
])
def test_bootstrap_ci_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        bootstrap_ci(**kwargs)


def test_balanced_accuracy_interval_is_the_beta_posterior():
    """One class, 9 of 9 right: the posterior is Beta(10, 1), whose quantile q is q ** (1 / 10); its density
    rises to 1, so the highest-density 95 % interval is (0.05 ** 0.1, 1) and holds the observed 100 %."""
    lo, hi = balanced_accuracy_interval([0] * 9, [0] * 9, draws=200_000, seed=1)
    assert lo == pytest.approx(0.05 ** 0.1, abs=0.003) and hi == 1.0
    assert balanced_accuracy_interval([0] * 9, [0] * 9, draws=200_000, seed=1) == (lo, hi)  # seeded
    # Two classes: the mean of two independent Betas (a sampled convolution), checked by its own moments.
    y = np.repeat([0, 1], [20, 10])
    p = y.copy()
    p[:4], p[-3:] = 1, 0                                        # recalls 16/20 and 7/10
    lo, hi = balanced_accuracy_interval(y, p, draws=200_000)
    m = (17 / 22 + 8 / 12) / 2
    v = (17 * 5 / (22 ** 2 * 23) + 8 * 4 / (12 ** 2 * 13)) / 4
    assert (lo + hi) / 2 == pytest.approx(m, abs=0.02)  # both Betas lean left: the midpoint sits a little low
    assert hi - lo == pytest.approx(2 * 1.96 * v ** 0.5, rel=0.05)
    assert lo < (16 / 20 + 7 / 10) / 2 < hi


def test_balanced_accuracy_interval_widens_with_a_tiny_class_even_when_it_is_right():
    """1 of 1 right says little: unlike a bootstrap, the interval must show it."""
    big = np.repeat([0, 1], [50, 50])
    with_tiny = np.repeat([0, 1, 2], [50, 50, 1])
    w_big = np.subtract(*balanced_accuracy_interval(big, big)[::-1])
    w_tiny = np.subtract(*balanced_accuracy_interval(with_tiny, with_tiny)[::-1])
    assert balanced_accuracy_interval(big, big)[0] < 1.0 == balanced_accuracy_interval(big, big)[1]
    assert w_tiny > 2 * w_big
    # More images per class: narrower.
    many = np.repeat([0, 1], [500, 500])
    assert np.subtract(*balanced_accuracy_interval(many, many)[::-1]) < w_big / 5
    with pytest.raises(ValueError, match="one length"):
        balanced_accuracy_interval([0, 1], [0])
    with pytest.raises(ValueError, match="level"):
        balanced_accuracy_interval([0, 1], [0, 1], level=0)


# ------------------------------------------------------------------------------------------ parity helpers


def test_agreement():
    assert agreement([0, 1, 2, 3], [0, 1, 0, 3]) == pytest.approx(0.75)
    assert agreement(np.array([4]), np.array([4])) == 1.0
    with pytest.raises(ValueError, match="differ in length"):
        agreement([0, 1], [0])


def test_prob_error():
    a = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    b = np.array([[0.6, 0.3, 0.1], [0.1, 0.1, 0.8]])
    err = prob_error(a, b)
    assert err["max_abs"] == pytest.approx(0.1)
    assert err["mean_abs"] == pytest.approx(0.2 / 6)
    assert set(err) == {"mean_abs", "max_abs"}
    # uint8 outputs must not wrap around (3 - 250 in uint8 would be 9).
    err8 = prob_error(np.array([3], np.uint8), np.array([250], np.uint8))
    assert err8["max_abs"] == 247.0
    # NaN must make a parity gate fail, not slip through comparisons.
    nan = prob_error(np.array([np.nan, 0.5]), np.array([0.5, 0.5]))
    assert nan["max_abs"] == float("inf") and not nan["max_abs"] <= 1e-3
    with pytest.raises(ValueError, match="shape"):
        prob_error(a, b[:1])


def test_per_class_recall_delta(hand):
    y_true = Y_TRUE
    better = Y_PRED.copy()
    better[7] = 2  # class c: one of its two samples now right -> recall 0.5 (was 0)
    better[3] = 0  # class a: all four right -> recall 1.0 (was 0.75)
    variant = compute_metrics(y_true, better, LABELS, bootstrap=0)
    delta = per_class_recall_delta(variant, hand)
    assert list(delta) == LABELS
    assert delta["a"] == pytest.approx(0.25)
    assert delta["c"] == pytest.approx(0.5)
    assert delta["d"] == delta["e"] == 0.0
    other = compute_metrics([0], [0], ["x", "y"], bootstrap=0)
    with pytest.raises(ValueError, match="different labels"):
        per_class_recall_delta(other, hand)


# ------------------------------------------------------------------------------------------ validation


@pytest.mark.parametrize("y_true, y_pred, match", [
    ([0, 1, 2], [0, 1], "differ in length: 3 vs 2"),
    ([], [], "empty"),
    ([0, 5], [0, 1], r"y_true has 1 class index\(es\) outside 0..4, first 5 at position 1"),
    ([0, 1], [0, -1], "y_pred .* outside 0..4"),
    ([0.0, 1.0], [0, 1], "integer class indices"),
    ([0, 1], np.zeros((2, 5)), "1-D .*argmax"),
])
def test_input_validation(y_true, y_pred, match):
    with pytest.raises(ValueError, match=match):
        compute_metrics(y_true, y_pred, LABELS, bootstrap=0)


def test_confusion_matrix_validation():
    with pytest.raises(ValueError, match="outside 0..2"):
        confusion_matrix([0, 3], [0, 0], 3)
    with pytest.raises(ValueError, match="num_classes"):
        confusion_matrix([0], [0], 0)


def test_compute_metrics_validates_inputs_once(monkeypatch):
    import wbc_edge.metrics.classification as ev

    calls = []
    real = ev._check_pair
    monkeypatch.setattr(ev, "_check_pair", lambda *a: calls.append(1) or real(*a))
    m = compute_metrics([0, 1, 1], [0, 1, 0], ["a", "b"], bootstrap=0)
    assert len(calls) == 1 and m.confusion == [[1, 0], [1, 1]]


def test_evaluate_cli_help_names_the_default_out_dir():
    from click.testing import CliRunner

    from wbc_edge.cli import main

    res = CliRunner().invoke(main, ["evaluate", "--help"], terminal_width=200)
    assert res.exit_code == 0 and "eval_<DATA folder name>_<split>/ in MODEL's folder" in res.output


def test_labels_validation():
    with pytest.raises(ValueError, match="duplicates"):
        compute_metrics([0], [0], ["a", "a"])
    with pytest.raises(ValueError, match="labels is empty"):
        compute_metrics([0], [0], [])


# ------------------------------------------------------------------------------------------ plots & files


def _png_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    assert path.is_file() and path.stat().st_size > 5000
    with Image.open(path) as im:
        assert im.format == "PNG"
        im.load()
        return im.size


def test_plot_confusion_png(tmp_path):
    pytest.importorskip("matplotlib")
    cm = np.array(CM)
    out = plot_confusion(cm, LABELS, tmp_path / "sub" / "cm.png", title="hand example")
    assert out == tmp_path / "sub" / "cm.png"
    w, h = _png_size(out)
    assert 600 <= w <= 3000 and 600 <= h <= 3000
    # counts colouring and the five WBC class names; no stray temp files left behind
    plot_confusion(cm, list(WBC5), tmp_path / "sub" / "counts.png", normalize=False)
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["cm.png", "counts.png"]
    with pytest.raises(ValueError, match="square"):
        plot_confusion(cm[:2], LABELS, tmp_path / "bad.png")


def test_plot_curves_png(tmp_path):
    pytest.importorskip("matplotlib")
    hist = {"accuracy": [0.5, 0.6, 0.7, 0.8, 0.85], "val_accuracy": [0.45, 0.55, 0.6, 0.7, 0.72],
            "loss": [1.2, 0.9, 0.7, 0.5, 0.4], "val_loss": [1.3, 1.0, 0.9, 0.8, 0.78]}
    w, h = _png_size(plot_curves(hist, tmp_path / "curves.png", title="t", phase_boundaries=[3]))
    assert 1000 <= w <= 3000 and 400 <= h <= 1500 and w > h
    # missing val keys, a missing panel, None gaps and all-None columns (train.py's history.json) are fine
    _png_size(plot_curves({"loss": [1.0, 0.5]}, tmp_path / "partial.png"))
    _png_size(plot_curves({"loss": [1.0, None, 0.4], "val_loss": [None, None, None],
                           "accuracy": [0.5, 0.6, None]}, tmp_path / "gaps.png", phase_boundaries=[1]))


def test_save_metrics(tmp_path, hand):
    pytest.importorskip("matplotlib")
    paths = save_metrics(hand, tmp_path / "eval", prefix="fp32_", extra={"variant": "fp32",
                                                                         "model": tmp_path / "m.tflite"})
    assert {k: p.name for k, p in paths.items()} == {
        "metrics": "fp32_metrics.json", "confusion_json": "fp32_confusion.json",
        "confusion_png": "fp32_confusion.png"}
    data = json.loads(paths["metrics"].read_text())
    assert data["variant"] == "fp32" and data["model"].endswith("m.tflite")
    assert data["accuracy"] == 0.5 and data["confusion"] == CM
    cj = json.loads(paths["confusion_json"].read_text())
    assert cj == {"labels": LABELS, "rows": "true", "columns": "predicted", "matrix": CM}
    _png_size(paths["confusion_png"])
    assert "confusion_png" not in save_metrics(hand, tmp_path / "noplot", plot=False)
    assert not (tmp_path / "noplot" / "confusion.png").exists()
    # restating a metric with the same value is fine (train passes n), a different value is not
    save_metrics(hand, tmp_path / "same", plot=False, extra={"n": 10})
    with pytest.raises(ValueError, match=r"overwrite metrics .*\['accuracy'\]"):
        save_metrics(hand, tmp_path / "clash", extra={"accuracy": 1.0, "n": 10})
    assert not (tmp_path / "clash").exists()


# ------------------------------------------------------------------------------------------ import hygiene

_BLOCKED_IMPORT = import_blocker() + textwrap.dedent("""
    import json, tempfile, pathlib

    import wbc_edge.metrics as ev
    from wbc_edge.core.errors import WbcEdgeError

    m = ev.compute_metrics([0, 1, 2, 1], [0, 1, 1, 1], ["a", "b", "c"], bootstrap=100)
    assert m.accuracy == 0.75, m
    m.format_table()
    out = pathlib.Path(tempfile.mkdtemp())
    paths = ev.save_metrics(m, out)                      # auto: no matplotlib -> JSON only
    assert sorted(paths) == ["confusion_json", "metrics"], paths
    msgs = []
    for call in (lambda: ev.plot_confusion([[1]], ["a"], out / "x.png"),
                 lambda: ev.plot_curves({"loss": [1.0]}, out / "y.png"),
                 lambda: ev.save_metrics(m, out, plot=True)):
        try:
            call()
        except WbcEdgeError as e:
            msgs.append(str(e))
    leaked = sorted(k for k in sys.modules if k.split(".")[0] in BLOCK)
    print(json.dumps({"msgs": msgs, "leaked": leaked, "files": sorted(p.name for p in out.iterdir())}))
""")


def test_import_without_tensorflow_and_matplotlib():
    proc = subprocess.run([sys.executable, "-c", _BLOCKED_IMPORT], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["leaked"] == []
    assert res["msgs"] == ["plots need matplotlib: pip install 'wbc-edge[train]'"] * 3
    assert res["files"] == ["confusion.json", "metrics.json"]


def test_parity_and_gate_reasons_against_hand_computed_values():
    from wbc_edge.metrics import gate_reasons, parity

    y = np.array([0, 1, 2, 3])
    ref = np.eye(5)[[0, 1, 2, 3]].astype(np.float32)       # reference: 4/4 right
    var = np.eye(5)[[0, 1, 2, 4]].astype(np.float32)       # variant: last one wrong
    p, m, r = parity(var, ref, y, WBC5)
    assert p["n"] == 4 and p["accuracy"] == 0.75 and p["reference_accuracy"] == 1.0
    assert p["delta_accuracy_pp"] == pytest.approx(-25.0) and p["agreement_pct"] == pytest.approx(75.0)
    assert p["max_abs_dprob"] == 1.0 and p["mean_abs_dprob"] == pytest.approx(2 / 20)
    assert m.accuracy == 0.75 and r.accuracy == 1.0
    assert gate_reasons(-25.0, 75.0, max_drop_pp=30, min_agreement_pct=70) == []
    assert gate_reasons(-25.0, 75.0, max_drop_pp=20, min_agreement_pct=80) == [
        "accuracy drop 25.00 pp > 20 pp", "top-1 agreement 75.00% < 80%"]
    assert gate_reasons(-25.0, 75.0) == []  # no limits, no failure


@pytest.mark.parametrize("right", [(3, 2, 1), (5, 0, 1), (1, 1, 1), (0, 0, 0), (20, 1, 0)])
def test_balanced_accuracy_interval_always_holds_the_score_it_is_printed_beside(right):
    """Issue 30: '100.0 (52-97)' - an interval that excluded its own point estimate.  Small classes, all
    right, all wrong or mixed: the observed balanced accuracy lies inside (ends included)."""
    sizes = (3, 5, 1) if right != (20, 1, 0) else (20, 1, 1)
    y = np.repeat(np.arange(3), sizes)
    p = y.copy()
    for c, r in enumerate(right):
        idx = np.flatnonzero(y == c)[r:]
        p[idx] = (c + 1) % 3
    point = np.mean([np.mean(p[y == c] == c) for c in range(3)])
    lo, hi = balanced_accuracy_interval(y, p)
    assert lo <= point <= hi and hi - lo > 0.1
