"""`diagnose()`: where int8 loses parity with float32, and what keeping the worst layers float buys.

    from wbc_edge.diagnose import DiagnoseConfig, diagnose
    result = diagnose(DiagnoseConfig("runs/r1", data=("pbc=data/pbc", "tecom=data/tecom"), out_dir="diag"))
    result.report["tradeoff"]        # per K: agreement per domain, latency, size

The stages, in order (times recorded in the report):
1. inputs as export resolves them; each domain's clean pixels; the calibration arms, drawn as export draws.
2. one QuantizationDebugger calibration with export's calibration (the diagnosed int8 model is export's).
3. per-layer error (each op's own int8 error) on the calibration images and on every domain.
4. the layers ranked on the calibration images only - never on the evaluated domains - and one model per K
   with the K worst left float; agreement of each with float32 per domain, 1-thread latency, size; the
   recommended K is chosen on the calibration images too.
5. the calibration arms: clean / augmented (export's) / + a few foreign images (diagnostic only), each a
   full int8 model judged on the same images, so one sees whether the error comes from ranges or layers.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.progress import Progress, resolve
from . import measure
from .config import DiagnoseConfig
from .inputs import Calibration, Domain, calibration_arms, default_arm, export_config, load_domains
from .layers import LayerError, rank, range_suspects

REPORT_FORMAT = 1
CALIBRATION = "calibration"  # the pseudo-domain of the calibration images (ranking, recommended K)
TOOL = "tf.lite.experimental.QuantizationDebugger (TensorFlow {tf}): NumericVerify per op, denylisted_nodes"


@dataclass
class DiagnoseResult:
    out_dir: Path
    report: dict
    files: dict[str, Path]


class _Timer:
    def __init__(self):
        self.stages: dict[str, float] = {}
        self._t = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.stages[name] = round(self.stages.get(name, 0.0) + now - self._t, 1)
        self._t = now


def _row(name: str, probs: dict[str, np.ndarray], ref: dict[str, np.ndarray],
         labels: dict[str, np.ndarray]) -> dict:
    """Agreement / flips / accuracy / mean |dp| per domain of one model."""
    out = {}
    for dom, p in probs.items():
        a = measure.agreement(p.argmax(1), ref[dom].argmax(1))
        a["mean_abs_dprob"] = round(float(np.mean(np.abs(p - ref[dom]))), 6)
        if dom in labels:
            a["accuracy_pct"] = round(100.0 * float(np.mean(p.argmax(1) == labels[dom])), 3)
        out[dom] = a
    return {"model": name, "domains": out}


def recommend_k(tradeoff: list[dict], max_increase_pct: float) -> tuple[int, str]:
    """The K to export: within the latency budget, the best agreement on the calibration images (then the
    smaller mean |dp| there, then the smaller K).  Never looks at the evaluated domains."""
    ok = [r for r in tradeoff
          if r["latency_vs_int8_pct"] is None or r["latency_vs_int8_pct"] <= max_increase_pct]
    ok = ok or [r for r in tradeoff if r["k"] == 0]
    best = min(ok, key=lambda r: (-r["domains"][CALIBRATION]["agreement_pct"],
                                  r["domains"][CALIBRATION]["mean_abs_dprob"], r["k"]))
    rule = (f"among K with latency <= +{max_increase_pct:g} % over full int8: highest top-1 agreement with "
            f"float32 on the calibration images, then lowest mean |dp| there, then smallest K (the evaluated "
            "domains are never used)")
    return int(best["k"]), rule


def diagnose(cfg: DiagnoseConfig, progress: Progress | bool | None = True) -> DiagnoseResult:
    """Run the diagnosis and write report.md / report.json / layers.png / tradeoff.png into cfg.out_dir."""
    from ..core.tfcompat import versions
    from ..export.calibration_data import calibration_batch
    from ..export.convert import saved_model
    from ..export.selective import Quantiser
    from .report import write_report

    progress = resolve(progress)
    say = progress.say
    cfg.validate()
    timer = _Timer()
    inp, out_dir, split, model, size, labels = _load(cfg, say)
    timer.lap("load")
    domains = load_domains(cfg, inp.data_root, split, inp.split_path, labels, size, progress)
    arms = calibration_arms(cfg, split, inp.data_root, labels, size, domains, progress)
    timer.lap("pixels")
    threads = cfg.num_threads or min(2, os.cpu_count() or 1)
    tmp = Path(tempfile.mkdtemp(prefix="wbc_diagnose_"))
    try:
        sm = tmp / "saved_model"
        saved_model(model, sm)
        del model
        main = arms[default_arm(cfg)]
        say(f"Calibrating ({len(main.pixels)} images, arm '{main.arm}') with the QuantizationDebugger ...")
        q = Quantiser(sm, calibration_batch(main.pixels))
        timer.lap("calibrate")
        say("float32 / float16 references ...")
        f32, f16 = q.float_model(), q.float_model(float16=True)
        sets = {d.name: d.pixels for d in domains}
        sets[CALIBRATION] = main.pixels
        ys = {d.name: d.labels for d in domains}
        ref = {}
        with progress.task(sum(len(x) for x in sets.values()), "float32 reference") as advance:
            for dom, x in sets.items():
                ref[dom] = measure.probabilities(f32, x, threads, advance)
        timer.lap("reference")
        per_domain, ranked, rank_px, layer_sets = _layer_errors(q, cfg, main, domains, progress)
        timer.lap("layers")
        rows, baselines, models = _tradeoff(q, cfg, ranked, sets, ref, ys, (f32, f16), threads, progress, timer)
        k_rec, rule = recommend_k(rows, cfg.max_latency_increase_pct) if rows else (0, "")
        arm_rows = _arms(cfg, arms, main, sm, domains, ref, ys, threads, progress, models.get(0, (None,))[0])
        timer.lap("arms")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    tf_version = versions().get("tensorflow", "?")
    report = {
        "format": REPORT_FORMAT,
        "source_model": {"path": str(inp.model_path), "input_size": size},
        "labels": list(labels),
        "tool": TOOL.format(tf=tf_version),
        "versions": versions(),
        "domains": {d.name: {"root": str(d.root), "selection": d.selection, "n": len(d.labels),
                             "layer_images": int(len(layer_sets[d.name])), "home": d.home} for d in domains},
        "calibration": {"arm": main.arm, "description": main.description, "n": int(len(main.pixels)),
                        "split": cfg.calibration_split, "seed": cfg.seed},
        "ranking": {"metric": cfg.rank_metric, "on": f"{len(rank_px)} calibration images (evenly spaced)",
                    "order": [e.layer for e in ranked]},
        "layers": _layer_table(per_domain),
        "range_suspects": range_suspects(per_domain, CALIBRATION),
        "tradeoff": rows,
        "baselines": baselines,
        "recommended_k": k_rec,
        "recommendation_rule": rule,
        "calibration_arms": arm_rows,
        "config": cfg.to_dict(),
        "timing_seconds": timer.stages,
        "total_seconds": round(sum(timer.stages.values()), 1),
        "threads": {"agreement": threads, "latency": 1},
    }
    files = write_report(out_dir, report)
    say(f"Wrote {', '.join(str(p) for p in files.values())} ({report['total_seconds']:.0f} s); recommended "
        f"K = {k_rec} (export: --int8-float-layers {k_rec})")
    return DiagnoseResult(out_dir, report, files)


def _load(cfg: DiagnoseConfig, say):
    """The inputs export would resolve for the same source, checked before TensorFlow starts; then the model.
    (inputs, out_dir, split manifest, model, input size, labels)."""
    from ..core.tfcompat import import_tf
    from ..data import SplitManifest
    from ..export.inputs import resolve_inputs, resolve_labels
    from ..model.network import check_classifier, check_model_file, load_model, model_input_size

    ecfg = export_config(cfg)
    inp = resolve_inputs(ecfg)
    out_dir = Path(cfg.out_dir).expanduser() if cfg.out_dir else inp.run_dir / "diagnose"
    if out_dir.exists() and not out_dir.is_dir():
        from ..core.errors import WbcEdgeError

        raise WbcEdgeError(f"{out_dir}: exists and is not a directory")
    check_model_file(inp.model_path)  # before TensorFlow's start-up
    split = SplitManifest.load(inp.split_path)
    split.verify(inp.data_root)
    say(f"Loading {inp.model_path} ...")
    import_tf()
    model = load_model(inp.model_path)
    size = model_input_size(model)
    labels, _ = resolve_labels(ecfg, inp, int(model.output_shape[-1]))
    check_classifier(model, inp.model_path, labels)
    return inp, out_dir, split, model, size, labels


def _layer_errors(q, cfg: DiagnoseConfig, main, domains, progress):
    """Per-layer int8 error on the ranking images and on a stratified subset of each domain, and the layers
    ranked on the calibration images (what export's float fallback keeps float)."""
    from ..data import stratified_indices
    from ..export.selective import rank_subset

    rank_px = rank_subset(main.pixels, cfg.rank_images)
    per_domain: dict[str, list[LayerError]] = {}
    layer_sets = {CALIBRATION: rank_px}
    for d in domains:
        layer_sets[d.name] = d.pixels[stratified_indices(d.labels, cfg.layer_images, cfg.seed)]
    with progress.task(sum(len(x) for x in layer_sets.values()), "Per-layer error (debug model)") as advance:
        for dom, x in layer_sets.items():
            per_domain[dom] = q.layer_errors(x, advance)
    return per_domain, rank(per_domain[CALIBRATION], cfg.rank_metric), rank_px, layer_sets


def _tradeoff(q, cfg: DiagnoseConfig, ranked, sets, ref, ys, floats, threads: int, progress, timer):
    """One int8 model per K (the K worst layers float): agreement with float32 per domain, size and 1-thread
    latency, beside the float16 / float32 baselines.  (rows, baselines, {K: (blob, kept tensors)})."""
    f32, f16 = floats
    progress.say(f"Selective models for K = {', '.join(str(k) for k in sorted(set(cfg.ks)))} ...")
    models = q.selective(ranked, cfg.ks)
    by_tensor = {e.tensor: e for e in ranked}
    rows, blobs = [], {}
    total = sum(len(x) for x in sets.values()) * (len(models) + 1)
    with progress.task(total, "Agreement with float32") as advance:
        for k, (blob, kept) in sorted(models.items()):
            probs = {dom: measure.probabilities(blob, x, threads, advance) for dom, x in sets.items()}
            row = _row(f"int8, K={k}", probs, ref, ys)
            row.update(k=k, bytes=len(blob), float_layers=[by_tensor[t].layer for t in kept], float_tensors=kept)
            rows.append(row)
            blobs[f"K={k}"] = blob
        f16_probs = {dom: measure.probabilities(f16, x, threads, advance) for dom, x in sets.items()}
    baselines = [dict(_row("float16", f16_probs, ref, ys), bytes=len(f16)),
                 dict(_row("float32", ref, ref, ys), bytes=len(f32))]
    timer.lap("tradeoff")
    progress.say(f"Latency (1 thread, median of {cfg.latency_runs}, interleaved) ...")
    lat = measure.latency_ms({**blobs, "float16": f16, "float32": f32}, runs=cfg.latency_runs)
    base = lat.get("K=0")
    for row in [*rows, *baselines]:
        row["latency_ms"] = lat[f"K={row['k']}" if "k" in row else row["model"]]
        row["latency_vs_int8_pct"] = round(100.0 * (row["latency_ms"] / base - 1), 1) if base else None
    timer.lap("latency")
    return rows, baselines, models


def _layer_table(per_domain: dict[str, list[LayerError]]) -> list[dict]:
    """One row per layer (execution order): op, scale, and each domain's metrics."""
    first = next(iter(per_domain.values()))
    rows = []
    for e in first:
        row = {"index": e.index, "layer": e.layer, "op": e.op, "tensor": e.tensor, "scale": e.scale,
               "zero_point": e.zero_point, "domains": {}}
        rows.append(row)
    index = {r["tensor"]: r for r in rows}
    for dom, errs in per_domain.items():
        for e in errs:
            if e.tensor in index:
                index[e.tensor]["domains"][dom] = {
                    "rmse_over_scale": round(e.rmse_over_scale, 4),
                    "mean_abs_error_pct_of_range": round(e.mean_abs_error_pct_of_range, 4),
                    "max_abs_error_over_scale": round(e.max_abs_error_over_scale, 3),
                    "mean_error_over_scale": round(e.mean_error_over_scale, 4)}
    return rows


def _arms(cfg: DiagnoseConfig, arms: dict[str, Calibration], main: Calibration, sm: Path,
          domains: list[Domain], ref: dict, ys: dict, threads: int, progress: Progress,
          main_int8: bytes | None) -> list[dict]:
    """Full int8 per calibration arm, judged on the same images (a foreign arm's calibration images are
    left out of every arm's score)."""
    from ..export.calibration_data import calibration_batch
    from ..export.selective import Quantiser

    held = next((a.held_out for a in arms.values() if a.held_out), {}) or {}
    keep = {}
    for d in domains:
        mask = np.ones(len(d.labels), dtype=bool)
        if d.name in held:
            mask[held[d.name]] = False
        keep[d.name] = mask
    out = []
    for name, arm in arms.items():
        if name not in cfg.arms and arm is not main:
            continue
        if arm is main and main_int8 is not None:
            blob = main_int8
        else:
            progress.say(f"Calibration arm '{name}': calibrating {len(arm.pixels)} images ...")
            blob = Quantiser(sm, calibration_batch(arm.pixels)).model(())
        probs = {d.name: measure.probabilities(blob, d.pixels[keep[d.name]], threads) for d in domains}
        row = _row(name, probs, {d.name: ref[d.name][keep[d.name]] for d in domains},
                   {d.name: ys[d.name][keep[d.name]] for d in domains})
        row.update(arm=name, description=arm.description, diagnostic_only=arm.diagnostic_only,
                   calibration_images=int(len(arm.pixels)), default=arm is main)
        out.append(row)
    return out
