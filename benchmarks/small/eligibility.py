"""A student's eligibility figures by benchmarks/small/RULE.md, for any run: PBC val accuracy and the shifted
val's balanced accuracy of the saved model (full mode does not select on the shifted val, so its run.json lacks
the second; cached runs record both and this recomputes them from model.keras the same way), and the same two
after "precise BN" (BatchNorm statistics re-estimated on 1,000 augmented train views) where BatchNorm trained.

    .venv/bin/python benchmarks/small/eligibility.py runs/small/NAME [...] --pbc ../shared/data/pbc \
        [--out benchmarks/small/results/eligibility]     # JSON + a Markdown table
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from wbc_edge.core import atomic
from wbc_edge.core.preprocess import preprocess
from wbc_edge.core.tfcompat import import_tf
from wbc_edge.data import SplitManifest
from wbc_edge.data.augment import AugmentConfig, shifted_val_pixels
from wbc_edge.train.inputs import load_pixels
from wbc_edge.model.batchnorm import precise_batchnorm
from wbc_edge.model.network import load_model, model_input_size

#: The teacher's figures the rule compares with (RULE.md) and the margins it allows, in percent.
TEACHER_VAL, TEACHER_SHIFTED, VAL_MARGIN, SHIFTED_MARGIN = 99.32, 96.27, 0.5, 3.0
PRECISE_BN_IMAGES = 1000


def balanced(y: np.ndarray, pred: np.ndarray) -> float:
    return float(np.mean([(pred[y == c] == c).mean() for c in np.unique(y)]))


def _scores(model, clean, shifted, y) -> tuple[float, float]:
    p_clean = model.predict(clean, batch_size=64, verbose=0).argmax(1)
    p_shift = model.predict(shifted, batch_size=64, verbose=0).argmax(1)
    return 100 * float((p_clean == y).mean()), 100 * balanced(y, p_shift)


def figures(run: Path, pbc: str) -> dict:
    model = load_model(run / "model.keras")
    size = model_input_size(model)
    manifest = SplitManifest.load(run / "split.csv")
    paths, y = manifest.files("val", pbc)
    y = np.asarray(y)
    clean = np.stack([preprocess(p, size) for p in paths]).astype(np.float32)
    shifted = shifted_val_pixels(paths, size).astype(np.float32)
    val, shift = _scores(model, clean, shifted, y)
    info = json.loads((run / "run.json").read_text())
    cfg = info["config"]
    val_bn = shift_bn = None
    if _batchnorm(cfg, info).startswith("trained"):
        # A check of the saved statistics, not a selection: where BatchNorm trained, Keras' moving averages
        # (momentum 0.999) can lag the weights; re-estimated as full mode's --precise-bn does (model.batchnorm,
        # on PRECISE_BN_IMAGES seeded augmented train views), the same weights score what they are worth.
        train_paths, _ = manifest.files("train", pbc)
        rng = np.random.default_rng(0)
        pick = np.sort(rng.choice(len(train_paths), PRECISE_BN_IMAGES, replace=False))
        aug = AugmentConfig(**cfg["augment"])
        views = np.stack([load_pixels(train_paths[i], size, np.random.default_rng([0, int(i)]), aug)
                          for i in pick]).astype(np.float32)
        _, keras = import_tf()
        precise_batchnorm(model, views, keras)
        val_bn, shift_bn = _scores(model, clean, shifted, y)
    start = (f"narrowed from {cfg['model']['narrow_from']}" if cfg["model"].get("narrow_from")
             else "ImageNet 1.0 file" if cfg["model"]["weights"] not in (None, "none") else "random")
    return {"run": run.name, "mode": cfg["mode"], "alpha": cfg["model"]["alpha"],
            "last_block": cfg["model"].get("last_block", 16), "precise_bn": cfg.get("precise_bn", 0),
            "input_size": cfg["model"]["input_size"], "start": start,
            "recalibrated": bool(cfg.get("narrow_recalibrate")) or bool(
                info["timings"].get("narrowed", {}).get("batchnorm_recalibrated_on")),
            "batchnorm": _batchnorm(cfg, info),
            "teacher": cfg.get("teacher"), "finetune_from": cfg.get("finetune_from") if cfg["mode"] == "cached" else None,
            "val_accuracy": round(val, 2), "shifted_val_balanced_accuracy": round(shift, 2),
            "eligible": val >= TEACHER_VAL - VAL_MARGIN and shift >= TEACHER_SHIFTED - SHIFTED_MARGIN,
            "precise_bn_val_accuracy": None if val_bn is None else round(val_bn, 2),
            "precise_bn_shifted_val_balanced_accuracy": None if shift_bn is None else round(shift_bn, 2),
            "test_accuracy": round(100 * info["test"]["accuracy"], 2),
            "minutes": round(info["timings"]["total_s"] / 60, 1)}


def cut(row: dict) -> str:
    return f" (cut {row['finetune_from']})" if row["finetune_from"] else ""


def _batchnorm(cfg: dict, info: dict) -> str:
    """How the run's BatchNorm statistics were set (old run.json files lack `precise_bn`: moving averages)."""
    once = bool(cfg.get("narrow_recalibrate")) or bool(info["timings"].get("narrowed", {}).get("batchnorm_recalibrated_on"))
    if cfg["mode"] == "cached" or (cfg["model"]["weights"] not in (None, "none") and not cfg["model"].get("narrow_from")):
        return "re-estimated once, then frozen" if once else "frozen"
    return "trained; precise BN before each val" if cfg.get("precise_bn", 0) else "trained; moving averages"


def _precise(row: dict) -> str:
    if row.get("precise_bn_val_accuracy") is None:
        return "-"
    return f"{row['precise_bn_val_accuracy']:.2f} / {row['precise_bn_shifted_val_balanced_accuracy']:.2f}"


def _bn_cell(row: dict) -> str:
    if "batchnorm" in row:
        return row["batchnorm"]
    return "re-estimated once" if row["recalibrated"] else "not re-estimated"  # rows recorded before the column


def _cut_at(row: dict) -> str:
    return f" to block {row['last_block']}" if row.get("last_block", 16) < 16 else ""


def markdown(rows: list[dict]) -> str:
    head = ["| run | mode | alpha / px | start | BatchNorm | teacher | PBC val % | shifted val bal. % | "
            "eligible | PBC test % | min | precise BN: val / shifted % |",
            "|---|---|---|---|---|---|---:|---:|---|---:|---:|---|"]
    body = [f"| {r['run']} | {r['mode']}{cut(r)} | "
            f"{r['alpha']:g}{_cut_at(r)} / {r['input_size']} | {r['start']} | {_bn_cell(r)} | "
            f"{'yes' if r['teacher'] else 'no'} | {r['val_accuracy']:.2f} | {r['shifted_val_balanced_accuracy']:.2f} | "
            f"{'yes' if r['eligible'] else 'no'} | {r['test_accuracy']:.2f} | {r['minutes']:.1f} | "
            f"{_precise(r)} |" for r in rows]
    note = ("Last column: the saved weights with their BatchNorm statistics re-estimated on 1,000 seeded augmented "
            "train views (`model.batchnorm`, what full mode's --precise-bn does), a check and not a selection; only "
            "for runs whose BatchNorm trained (frozen statistics are the ones the rest of the network learned on).")
    return "\n".join([f"Eligible (RULE.md): PBC val >= {TEACHER_VAL - VAL_MARGIN:.2f} % and shifted val >= "
                      f"{TEACHER_SHIFTED - SHIFTED_MARGIN:.2f} %.", "", *head, *body, "", note]) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="*", type=Path)
    ap.add_argument("--pbc", help="the PBC data root the runs' split manifests name")
    ap.add_argument("--out", help="output prefix: .json and .md are written")
    ap.add_argument("--markdown-from", type=Path, help="rewrite the .md beside this .json without scoring again")
    a = ap.parse_args()
    if a.markdown_from:
        rows = json.loads(a.markdown_from.read_text())["rows"]
        atomic.write_text(a.markdown_from.with_suffix(".md"), markdown(rows))
        return
    if not a.runs or not a.pbc:
        ap.error("give RUN_DIRs and --pbc (or --markdown-from JSON)")
    rows = []
    for run in a.runs:
        rows.append(figures(run, a.pbc))
        print(json.dumps(rows[-1]), flush=True)
    if a.out:
        atomic.write_json(Path(a.out + ".json"), {"rows": rows})
        atomic.write_text(Path(a.out + ".md"), markdown(rows))
        print(markdown(rows))


if __name__ == "__main__":
    main()
