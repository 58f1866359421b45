"""Fill the generated sections of benchmarks/adapt/README.md from the recorded result files (no TensorFlow).

    .venv/bin/python benchmarks/adapt/report.py          # rewrites the marked blocks in README.md

Why: every number in the README must come from a file in results/ (or the robust runs' cross-domain reports),
not be typed by hand.  Each block sits between `<!-- generated: NAME ... -->` and `<!-- end: NAME -->`
markers and is replaced on every run; the prose around it is hand-written.  Inputs:
- results_s3/runs.jsonl + results_s3/learning_curve.json (meta): the shipped model's learning curve and the
  accuracy targets; results/ the same for robust_s42, the first curve (block learning-curve-s42);
- results_s3_robust_views/: the shipped model's curve with the `robust` views of the earlier default;
- results_s3/timing_50_per_class.json (time_adapt.py; results/ before it existed): the 5-minute target;
- results_s3/cli_tecom_k10_seed*.json (cli_run.py): the CLI end to end and abstention after adapting;
- benchmarks/robust/runs/robust_*/crossdomain/crossdomain.json: calibration and abstention per domain
  (and runs/robust/robust_*/calibration.json, when present, to check which calibration each report used).
"""

from __future__ import annotations

import json
import re
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))

from curve_report import load_records, partial_note, summarize, table_markdown  # noqa: E402

RESULTS = HERE / "results"     # robust_s42: the first curve (and its 80-step records), the timing run
CURVE = HERE / "results_s3"    # robust_s3, the shipped model: the curve the targets are read from, the CLI runs
GUARD = HERE / "results_s3_guard"  # the same curve with the model's scale guard on every image (since 2026-12-03)
BEFORE = HERE / "results_s3_robust_views"  # robust_s3 adapted with `robust` views (the default until 2026-12-02)
ROBUST_RUNS = ("robust_s42", "robust_s1", "robust_s2", "robust_s3")  # robust_s3: the shipped model
TECOM, CV = "zheng2018_tecom", "zheng2018_cellavision"


def _mean(xs):
    return statistics.mean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def _per_seed(records: dict, name: str, k: int, arm: str, key: str) -> dict[int, float]:
    return {s: r["target"][key] for (n, kk, s, a), r in records.items() if n == name and kk == k and a == arm}


def _met(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def learning_curve_block(records: dict, meta: dict, level: str = "###") -> str:
    table = summarize(list(records.values()), meta)
    out = []
    for name in meta["sets"]:
        out += [f"{level} {name}", "", *table_markdown(table, meta, name), ""]
    out.append("Mean ± sd over seeds " + ", ".join(map(str, meta["seeds"])) + "; balanced accuracy over the held-out "
               "images of the set. k = labelled images per class adapted on (fewer where a class has fewer: one "
               "image per class is always held out). PBC test acc: the leak-free PBC test split (2,057 images) "
               "after adapting, not measured for the ImageNet start. fit s: seconds of training per run on this "
               "shared 2-core host, activations cached once.")
    note = partial_note(table, meta)
    if note:
        out += ["", note + " Its rows are what was measured; the missing runs were not made."]
    return "\n".join(out)


def crossdomain_rows() -> list[dict]:
    rows = []
    for run in ROBUST_RUNS:
        path = REPO / "benchmarks" / "robust" / "runs" / run / "crossdomain" / "crossdomain.json"
        if not path.is_file():
            continue
        rep = json.loads(path.read_text())
        stored = None
        cal_path = REPO / "runs" / "robust" / run / "calibration.json"
        if cal_path.is_file():
            stored = json.loads(cal_path.read_text())
        for dom in rep["domains"]:
            for res in dom["results"].values():
                c = res["confidence"]
                rows.append({"run": run, "domain": dom["name"], "n": res["n"], "accuracy": res["accuracy"],
                             "T": c["temperature"], "ece": c["ece"], "ece_cal": c["ece_calibrated"],
                             **c["at_threshold"], "stored": stored})
    return rows


def confidence_table(rows: list[dict]) -> list[str]:
    lines = ["| run | domain | n | T used | ECE % | ECE after T % | stored threshold | coverage % | accepted acc % |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['run']} | {r['domain']} | {r['n']} | {r['T']:.3g} | {100 * r['ece']:.1f} | "
                     f"{100 * r['ece_cal']:.1f} | {r['threshold']:.3f} | {100 * r['coverage']:.1f} | "
                     f"{100 * r['accepted_accuracy']:.1f} |")
    return lines


def stale_notes(rows: list[dict]) -> list[str]:
    """Reports made with another temperature / threshold than the run's calibration.json now holds."""
    notes = []
    for run in ROBUST_RUNS:
        r = next((x for x in rows if x["run"] == run), None)
        if r is None or r["stored"] is None:
            continue
        s = r["stored"]
        if abs(s["temperature"] - r["T"]) > 5e-4 or abs(s["abstain_threshold"] - r["threshold"]) > 5e-4:
            same_thr = abs(s["abstain_threshold"] - r["threshold"]) <= 5e-4
            notes.append(f"{run}'s report was made before its calibration.json (T {s['temperature']:g}, threshold "
                         f"{s['abstain_threshold']:g}): it shows T = {r['T']:g}, so its \"after T\" ECE is not the "
                         "stored temperature's" + ("; the threshold is the same, so coverage and accepted "
                                                   "accuracy are as stored." if same_thr else "."))
    return notes


def targets_block(records: dict, meta: dict, timing: dict, cli: dict | None) -> str:
    seeds = meta["seeds"]
    rows = ["| issue 11 target | measured | |", "|---|---|---|"]
    # 1. Tecom k = 10, EO/LY/MO/NE
    t10 = list(_per_seed(records, TECOM, 10, "pbc", "balanced_accuracy_big4").values())
    m, s = _mean(t10)
    rows.append(f"| Tecom as the new lab, k = 10: balanced accuracy EO/LY/MO/NE ≥ 90 % (mean of {len(seeds)} "
                f"seeds) | {100 * m:.1f} ± {100 * s:.1f} % (seeds: "
                + ", ".join(f"{100 * v:.1f}" for v in t10) + f") | {_met(m >= 0.90)} |")
    # 2. better than the ImageNet start at every k (Tecom, EO/LY/MO/NE; paired by seed = same split)
    parts, ok, every_seed = [], True, True
    for k in meta["ks"]:
        a = _per_seed(records, TECOM, k, "pbc", "balanced_accuracy_big4")
        b = _per_seed(records, TECOM, k, "imagenet", "balanced_accuracy_big4")
        common = sorted(set(a) & set(b))
        if not common:
            continue
        ma, mb = statistics.mean(a[x] for x in common), statistics.mean(b[x] for x in common)
        wins = sum(a[x] > b[x] for x in common)
        ok &= ma > mb
        every_seed &= wins == len(common)
        parts.append(f"k = {k}: {100 * ma:.1f} vs {100 * mb:.1f} % ({100 * (ma - mb):+.1f} pp; higher on "
                     f"{wins} of {len(common)} seeds)")
    rows.append("| … and better than the ImageNet-start control at every k (Tecom, EO/LY/MO/NE) | "
                + "; ".join(parts) + f" | {_met(ok)}" + ("" if every_seed or not ok else
                                                         " on the means, not on every seed") + " |")
    # 3. CellaVision k = 5
    c5 = list(_per_seed(records, CV, 5, "pbc", "balanced_accuracy").values())
    m, s = _mean(c5)
    rows.append(f"| CellaVision-blog as the new lab, k = 5: balanced accuracy ≥ 90 % | {100 * m:.1f} ± "
                f"{100 * s:.1f} % (seeds: " + ", ".join(f"{100 * v:.1f}" for v in c5) + f") | {_met(m >= 0.90)} |")
    # 4. PBC test after adapting with replay
    pbc_parts, lows = [], []
    before = None
    for name in meta["sets"]:
        for k in meta["ks"]:
            vals = [r["pbc_test"]["accuracy"] for (n, kk, _, a), r in records.items()
                    if n == name and kk == k and a == "pbc" and "pbc_test" in r]
            base = [r["pbc_test"]["accuracy"] for (n, kk, _, a), r in records.items()
                    if n == name and kk == k and a == "unadapted" and "pbc_test" in r]
            before = base[0] if base else before
            if vals:
                mv = statistics.mean(vals)
                lows.append(mv)
                pbc_parts.append(f"{'Tecom' if name == TECOM else 'CellaVision'} k = {k}: {100 * mv:.2f}")
    ok = all(v >= 0.985 for v in lows)
    loss = (f" (forgetting {100 * (before - max(lows)):.1f}–{100 * (before - min(lows)):.1f} pp)"
            if before and lows else "")
    keep = [statistics.mean(vals) for name in meta["sets"] for k in meta["ks"]
            if (vals := [r["pbc_test"]["accuracy"] for (n, kk, _, a), r in records.items()
                         if n == name and kk == k and a == "pbc_interp" and "pbc_test" in r])]
    keep_txt = (f". With `--keep-source`: {100 * min(keep):.2f}–{100 * max(keep):.2f} % in all {len(keep)} rows "
                f"(**met**, at the new lab's cost: see the table above)" if keep else "")
    rows.append("| PBC test accuracy after adapting with replay ≥ 98.5 % | "
                + (f"{100 * before:.2f} % before; after (mean of the seeds): " if before else "")
                + "; ".join(pbc_parts) + f" %{keep_txt} | {_met(ok)}{loss} by default |")
    # interpolation: the alphas the default chose (on PBC val images only)
    alphas = [r["interpolation"]["alpha"] for (n, kk, _, a), r in records.items() if a == "pbc_interp" and "interpolation" in r]
    if alphas:
        rows.append("| (how) `--keep-source`: interpolation back towards the PBC model, alpha chosen on 500 PBC val "
                    "images | alpha " + ", ".join(f"{a:g}: {alphas.count(a)}×" for a in sorted(set(alphas), reverse=True))
                    + f" over {len(alphas)} runs | – |")
    # 5-7. calibration and abstention (the robust runs' cross-domain reports)
    cd = crossdomain_rows()
    runs = sorted({r["run"] for r in cd}, key=ROBUST_RUNS.index)
    pbc = [r for r in cd if r["domain"] == "PBC test"]
    tec = [r for r in cd if r["domain"] == TECOM]
    if pbc:
        worst = max(max(r["ece"], r["ece_cal"]) for r in pbc)
        rows.append("| ECE on PBC test ≤ 2 % | " + "; ".join(
            f"{r['run']}: {100 * r['ece']:.1f} → {100 * r['ece_cal']:.1f} %" for r in pbc)
            + f" (before → after temperature) | {_met(worst <= 0.02)} |")
    if tec:
        txt = "; ".join(f"{r['run']}: {100 * r['accepted_accuracy']:.1f} % correct at threshold {r['threshold']:.3f} "
                        f"(coverage {100 * r['coverage']:.1f} %)" for r in tec)
        ok = all(r["accepted_accuracy"] >= 0.90 for r in tec)
        honest = [(c, c["test"]["at_threshold"]) for c in cli_runs("tecom_k10") if (c.get("test") or {}).get("at_threshold")]
        if honest:
            acc_all = [at["accepted_accuracy"] for _, at in honest if at["accepted_accuracy"] is not None]
            txt += (". After adapting (`wbc-edge adapt --per-class 10`, seeds "
                    + ", ".join(str(c["seed"]) for c, _ in honest) + "; each run's own threshold is fitted on its "
                    "local val half), on the Tecom *test* half, which the threshold never saw: "
                    + "; ".join(f"{_pct(at['accepted_accuracy'])} correct at coverage {100 * at['coverage']:.1f} % "
                                f"(threshold {at['threshold']:.3f}, n = {at['n']})" for _, at in honest))
            ok_adapted = bool(acc_all) and min(acc_all) >= 0.90
            txt += f" - {_met(ok_adapted)} after adapting"
        elif cli and cli["heldout"].get("at_threshold"):
            at = cli["heldout"]["at_threshold"]
            txt += (f". After adapting (the CLI run below: k = 10, its own threshold {at['threshold']:.3f} fitted "
                    f"on the local val half): {100 * at['accepted_accuracy']:.1f} % correct at coverage "
                    f"{100 * at['coverage']:.1f} % of the {at['n']} held-out Tecom images (val + test, so "
                    "optimistic: the threshold saw the val half)")
        rows.append(f"| Tecom: images above the stored threshold ≥ 90 % correct | not adapted (robust models): {txt} "
                    f"| {_met(ok)} not adapted |")
        rows.append("| Coverage at the stored threshold reported for every domain | the table below (PBC test, "
                    f"Tecom, CellaVision{f' × {len(runs)} runs' if len(runs) > 1 else ''}) | **met** |")
    # 8. timing
    wall = timing["wall_s"]
    rows.append(f"| Adapting 50 images per class ≤ 5 min on 2 cores | {wall / 60:.1f} min wall ({wall:.0f} s; "
                f"{timing['cpu_s']:.0f} s CPU), `wbc-edge adapt --per-class 50`, {timing['split_counts']['train']} "
                f"adapt images + {timing['replay_images']} replay | {_met(wall <= 300)} |")
    rows.append("| A bad local folder (one class, unknown class name, unreadable files) gets a one-line error | "
                "`tests/test_adapt.py::test_bad_local_folder_gives_one_line_error` (empty, one class, unknown "
                "folder, corrupt file, too few to adapt) and `::test_a_three_class_model_adapts_with_its_own_labels` "
                "(a folder the model has no class for) | **met** |")
    out = rows + ["", "Calibration and abstention at the stored threshold, from the cross-domain report"
                  + (f"s of the {len(runs)} robust runs" if len(runs) != 1 else f" of {runs[0]}")
                  + " (`benchmarks/robust/runs/*/crossdomain/crossdomain.json`; robust_s3 is the shipped model; "
                  "only its per-run files are committed):", "",
                  *confidence_table(cd)]
    notes = stale_notes(cd)
    if notes:
        out += ["", " ".join(notes)]
    return "\n".join(out)


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f} %"


def cli_runs(prefix: str) -> list[dict]:
    """Every results_s3/cli_<prefix>_seed<N>.json (cli_run.py), seed order, each with its seed."""
    out = []
    for path in sorted(CURVE.glob(f"cli_{prefix}_seed*.json")):
        seed = int(path.stem.rsplit("seed", 1)[1])
        out.append({**json.loads(path.read_text()), "seed": seed})
    return sorted(out, key=lambda c: c["seed"])


def timing_block(t: dict, path: Path) -> str:
    ph = t["phases_s"]
    h = t["heldout"]
    return "\n".join([
        f"`{t['command']}` on {t['lab']}: {t['split_counts']['train']} adapt images "
        f"(+ {t['replay_images']} PBC replay images), {t['finetune']['steps']} fine-tune steps of "
        f"{t['finetune']['local_batch']} local + {t['finetune']['replay_batch']} replay images.",
        "",
        "| wall | CPU (user + sys) | scan + split | activations | fine-tune | load average before → after |",
        "|---:|---:|---:|---:|---:|---|",
        f"| **{t['wall_s']:.0f} s ({t['wall_s'] / 60:.1f} min)** | {t['cpu_s']:.0f} s | {ph['scan_split_s']:.0f} s | "
        f"{ph['activations_s']:.0f} s | {ph['finetune_s']:.0f} s | "
        f"{t['load_avg_before'][0]:.1f} → {t['load_avg_after'][0]:.1f} (1 min) |",
        "",
        f"{t['cpus']} CPUs; the wall time includes TensorFlow's start-up and model loading. Held-out: "
        f"{100 * h['accuracy']:.0f} % of {h['n']} (PBC images, so this says nothing about a new lab - it is a "
        f"timing run). From `{path.relative_to(HERE)}` (`time_adapt.py`).",
    ])


def cli_block(c: dict, records: dict) -> str:
    h = c["heldout"]
    lc = records.get((TECOM, 10, 0, "pbc"))
    lines = ["```console", f"$ nice -n {c['nice']} {c['command']}", *c["output"], "```", ""]
    big4 = [h["per_class_recall"][c] for c in ("eosinophil", "lymphocyte", "monocyte", "neutrophil")
            if c in h["per_class_recall"]]
    load = c["load_avg_before"][0]
    txt = (f"{c['wall_s']:.0f} s wall, {c['cpu_s']:.0f} s CPU, on this 2-core host with a load average of "
           f"{load:.1f} when it started. The held-out Tecom images (n = {h['n']}: val {c['split_counts']['val']} + "
           f"test {c['split_counts']['test']}) score {100 * h['balanced_accuracy']:.1f} % balanced accuracy, "
           f"{100 * statistics.mean(big4):.1f} % over EO/LY/MO/NE")
    if lc:
        txt += (f"; the learning curve's seed-0 run of the same split scored "
                f"{100 * lc['target']['balanced_accuracy']:.1f} % / {100 * lc['target']['balanced_accuracy_big4']:.1f} %"
                " - the same adapt and held-out images, but other augmentation and replay draws (the curve draws "
                "them once for all its runs), which shows how much one run varies")
    lines.append(txt + ". From `results_s3/cli_tecom_k10_seed0.json` (`cli_run.py`); the run directory was "
                 "written to /tmp and deleted.")
    return "\n".join(lines)


def fill(readme: Path, blocks: dict[str, str]) -> str:
    text = readme.read_text()
    for name, body in blocks.items():
        start = f"<!-- generated: {name} (benchmarks/adapt/report.py; do not edit by hand) -->"
        end = f"<!-- end: {name} -->"
        pat = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
        if not pat.search(text):
            raise SystemExit(f"{readme}: markers for block {name!r} not found")
        text = pat.sub(lambda _m, b=body, s=start, e=end: f"{s}\n{b}\n{e}", text)
    return text


def main() -> None:
    meta = json.loads((CURVE / "learning_curve.json").read_text())["meta"]
    records = load_records(CURVE / "runs.jsonl", meta["model_sha256"])
    first_meta = json.loads((RESULTS / "learning_curve.json").read_text())["meta"]
    first = load_records(RESULTS / "runs.jsonl", first_meta["model_sha256"])
    timing_path = next(p for p in (CURVE / "timing_50_per_class.json", RESULTS / "timing_50_per_class.json")
                       if p.is_file())
    timing = json.loads(timing_path.read_text())
    before_meta = json.loads((BEFORE / "learning_curve.json").read_text())["meta"]
    before = load_records(BEFORE / "runs.jsonl", before_meta["model_sha256"])
    cli_path = CURVE / "cli_tecom_k10_seed0.json"
    cli = json.loads(cli_path.read_text()) if cli_path.is_file() else None
    blocks = {"learning-curve": learning_curve_block(records, meta),
              "learning-curve-s42": learning_curve_block(first, first_meta, "####"),
              "learning-curve-s3-robust-views": learning_curve_block(before, before_meta, "####"),
              "targets": targets_block(records, meta, timing, cli),
              "timing": timing_block(timing, timing_path)}
    if cli:
        blocks["cli"] = cli_block(cli, records)
    if (GUARD / "learning_curve.json").is_file():
        guard_meta = json.loads((GUARD / "learning_curve.json").read_text())["meta"]
        blocks["learning-curve-s3-guard"] = learning_curve_block(
            load_records(GUARD / "runs.jsonl", guard_meta["model_sha256"]), guard_meta, "####")
    readme = HERE / "README.md"
    readme.write_text(fill(readme, blocks))
    print(f"{readme.relative_to(REPO)}: {', '.join(blocks)} filled")


if __name__ == "__main__":
    main()
