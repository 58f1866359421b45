"""Probe (not a feature): can a feature-space distance flag other labs' images that the softmax is sure of?

    .venv/bin/python benchmarks/robust/feature_distance_probe.py runs/robust/robust_s3 --shared ../shared \
        --out benchmarks/robust/probes/feature_distance

Why: on Tecom the shipped model is confidently wrong (47 % of the images it accepts at the stored confidence
threshold are right), so a confidence threshold cannot say "unsure" there.  A classic alternative (Lee et al.
2018) scores how far an image's pooled features lie from the training classes: the Mahalanobis distance to the
nearest class mean, with one covariance shared by the classes.  Here it is fitted on the clean PBC *train*
features (a PCA to `--dims` dimensions first: 7,199 images do not pin down a 1280 x 1280 covariance), and its
threshold is a quantile of the PBC *val* distances - no Tecom or CellaVision image is used for either.  Printed:
per domain, the share of images flagged, and the accuracy of the images accepted by confidence alone, by distance
alone and by both.

Bottom activations come from wise_probe.py's cache (the same ImageNet bottom; run it first) and the run's shared
activation cache; no scale guard.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from wbc_edge.core import atomic  # noqa: E402
from wbc_edge.data.manifest import SplitManifest  # noqa: E402
from wbc_edge.data.scan import scan_dataset  # noqa: E402
from wbc_edge.core.labels import WBC5  # noqa: E402
from wbc_edge.model.network import load_model  # noqa: E402
from wbc_edge.core.tfcompat import import_tf  # noqa: E402

TECOM_BIG4 = [1, 2, 3, 4]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--shared", default="../shared")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/wbc_wise_cache"))
    ap.add_argument("--dims", type=int, default=64)
    ap.add_argument("--quantiles", type=float, nargs="+", default=[0.95, 0.99])
    args = ap.parse_args()
    _, keras = import_tf()
    data = Path(args.shared) / "data"
    run = args.run
    model = load_model(run / "model.keras")
    cut = model.get_layer("block_13_expand").input
    feats = keras.Model(cut, [model.get_layer("pool").output, model.output])
    cfg = json.loads((run / "config.json").read_text())
    shared = Path(cfg["shared_cache"])
    man = SplitManifest.load(run / "split.csv", root=data / "pbc")
    calib = json.loads((run / "calibration.json").read_text())
    thr, temp = float(calib["abstain_threshold"]), float(calib["temperature"])

    def run_top(a: np.ndarray):
        f, p = [], []
        for lo in range(0, len(a), 256):
            ff, pp = feats.predict(np.asarray(a[lo:lo + 256], dtype=np.float32), verbose=0)
            f.append(ff)
            p.append(pp)
        p = np.concatenate(p)
        logp = np.log(np.clip(p, 1e-12, 1)) / temp  # the runtime's temperature
        p = np.exp(logp - logp.max(1, keepdims=True))
        return np.concatenate(f), p / p.sum(1, keepdims=True)

    f_train, _ = run_top(np.load(sorted(shared.glob("act_train_clean_*.npy"))[0], mmap_mode="r"))
    y_train = man.labels("train", WBC5)
    f_val, p_val = run_top(np.load(sorted(shared.glob("act_val_clean_*.npy"))[0], mmap_mode="r"))
    y_val = man.labels("val", WBC5)
    # PCA on the train features, then class means and one shared covariance in that space.
    mu = f_train.mean(0)
    _, _, vt = np.linalg.svd(f_train - mu, full_matrices=False)
    proj = vt[:args.dims].T

    def z(f):
        return (f - mu) @ proj

    zt = z(f_train)
    means = np.stack([zt[y_train == c].mean(0) for c in range(5)])
    resid = zt - means[y_train]
    prec = np.linalg.inv(np.cov(resid.T) + 1e-6 * np.eye(args.dims))

    def dist(f):
        d = z(f)[:, None, :] - means[None]
        return np.einsum("ncd,de,nce->nc", d, prec, d).min(1)

    d_val = dist(f_val)
    cuts = {q: float(np.quantile(d_val, q)) for q in args.quantiles}
    domains = {"PBC val (fits the cut)": (f_val, p_val, y_val, range(5))}
    test_paths, y_test = man.files("test", data / "pbc", labels=WBC5)
    f, p = run_top(np.load(args.cache / "pbc_test.npy"))
    domains["PBC test"] = (f, p, y_test, range(5))
    for key, folder, classes in (("tecom", "zheng2018_tecom", TECOM_BIG4),
                                 ("cellavision", "zheng2018_cellavision", range(5))):
        scan = scan_dataset(data / folder, progress=False)
        y = np.array([WBC5.index(r.label) for r in scan.records])
        f, p = run_top(np.load(args.cache / f"{key}.npy"))
        domains[folder] = (f, p, y, classes)

    rows = []
    for name, (f, p, y, classes) in domains.items():
        d = dist(f)
        conf = p.max(1) >= thr
        right = p.argmax(1) == y
        keep = np.isin(y, list(classes))
        row = {"domain": name, "n": int(keep.sum()), "accuracy": float(right[keep].mean()),
               "distance_median": float(np.median(d[keep])),
               "confidence": {"coverage": float(conf[keep].mean()),
                              "accepted_accuracy": _acc(right, conf & keep)}}
        for q, c in cuts.items():
            near = d <= c
            row[f"distance_q{q}"] = {"cut": c, "coverage": float(near[keep].mean()),
                                     "accepted_accuracy": _acc(right, near & keep),
                                     "both_coverage": float((near & conf)[keep].mean()),
                                     "both_accepted_accuracy": _acc(right, near & conf & keep)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"run": str(run), "dims": args.dims, "temperature": temp, "confidence_threshold": thr, "cuts": cuts,
            "fit": "PCA + class means + shared covariance on the clean PBC train features; cuts = quantiles of "
                   "PBC val distances", "tecom_classes": "EO/LY/MO/NE"}
    atomic.write_json(args.out / "feature_distance.json", {"meta": meta, "rows": rows})
    atomic.write_text(args.out / "feature_distance.md", table(rows, meta))
    print(table(rows, meta))


def _acc(right: np.ndarray, mask: np.ndarray):
    return float(right[mask].mean()) if mask.any() else None


def table(rows: list[dict], meta: dict) -> str:
    qs = [k for k in rows[0] if k.startswith("distance_q")]
    head = ("| domain | n | accuracy % | median distance | confidence >= "
            f"{meta['confidence_threshold']:.3f}: coverage / accepted acc % | "
            + " | ".join(f"distance <= PBC val q{k[10:]} ({meta['cuts'][float(k[10:])]:.0f}): coverage / accepted acc %"
                         f" | both: coverage / accepted acc %" for k in qs) + " |")
    lines = [head, "|---|---:|---:|---:|---:|" + "---:|---:|" * len(qs)]

    def cell(cov, acc):
        return f"{100 * cov:.1f} / {'-' if acc is None else f'{100 * acc:.1f}'}"

    for r in rows:
        parts = [r["domain"], str(r["n"]), f"{100 * r['accuracy']:.1f}", f"{r['distance_median']:.0f}",
                 cell(r["confidence"]["coverage"], r["confidence"]["accepted_accuracy"])]
        for k in qs:
            parts += [cell(r[k]["coverage"], r[k]["accepted_accuracy"]),
                      cell(r[k]["both_coverage"], r[k]["both_accepted_accuracy"])]
        lines.append("| " + " | ".join(parts) + " |")
    return "\n".join(lines) + (f"\n\nTecom over {meta['tecom_classes']}; {meta['dims']} PCA dimensions; "
                               f"temperature {meta['temperature']:.3f} applied as the runtime does.\n")


if __name__ == "__main__":
    main()
