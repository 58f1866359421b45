"""The learning curve's summary, from the per-run records alone (no TensorFlow): table, JSON, plot.

    .venv/bin/python benchmarks/adapt/learning_curve.py --summary-only   # rewrites results/learning_curve.*

Why separate from the runs: the records (results/runs.jsonl, one line per set / k / seed / arm) are the
measurement; everything in learning_curve.{md,json,png} and the tables of benchmarks/adapt/README.md is
derived from them, so they can be re-derived after an interrupted or extended run without re-training.
A record appears more than once when a run was resumed; the copies are identical and counted once.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import numpy as np

ARMS = ("unadapted", "pbc", "pbc_interp", "pbc_head", "imagenet", "pbc_noreplay")
ARM_NAMES = {"unadapted": "PBC model, not adapted",
             "pbc": "PBC model + adapt (default: replay, no head phase)",
             "pbc_interp": "PBC model + adapt + `--keep-source` (interpolated back towards PBC)",
             "pbc_head": "PBC model + head phase + adapt (replay)",
             "imagenet": "ImageNet + head phase + adapt (replay)", "pbc_noreplay": "PBC model + adapt, no replay"}
SHORT = {"zheng2018_tecom": "Tecom", "zheng2018_cellavision": "CellaVision"}


def load_records(runs_file: Path, model_sha256: str) -> dict[tuple, dict]:
    """{(set, k, seed, arm): record} of one model; resumed duplicates collapse to one key."""
    done: dict[tuple, dict] = {}
    for line in Path(runs_file).read_text().splitlines():
        r = json.loads(line)
        if r.get("model_sha256") == model_sha256:
            done[(r["set"], r["k"], r["seed"], r["arm"])] = r
    return done


def ms(values) -> tuple[float | None, float | None]:
    """(mean, sd) of the non-missing values; sd 0 for one value; (None, None) for none."""
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def groups(records: list[dict], meta: dict, arms):
    """(set, k, arm, records over the seeds in meta['seeds']) for every set x k x arm that has runs."""
    for name in meta["sets"]:
        for k in meta["ks"]:
            for arm in arms:
                rs = [r for r in records if r["set"] == name and r["k"] == k and r["arm"] == arm
                      and r["seed"] in meta["seeds"]]
                if rs:
                    yield name, k, arm, rs


def summarize(records: list[dict], meta: dict) -> list[dict]:
    """One row per set x k x arm: mean/sd over the seeds in meta['seeds'] that were run."""
    arms = [a for a in ARMS if any(r["arm"] == a for r in records)]
    table = []
    for name, k, arm, rs in groups(records, meta, arms):
        row = {"set": name, "k": k, "arm": arm, "seeds": len(rs), "seed_list": sorted(r["seed"] for r in rs),
               "n_adapt": ms([r["n_adapt"] for r in rs])[0], "n_test": ms([r["target"]["n"] for r in rs])[0],
               "adapt_per_class": rs[0]["adapt_per_class"], "test_per_class": rs[0]["test_per_class"]}
        for key in ("balanced_accuracy", "balanced_accuracy_big4", "accuracy"):
            row[key] = ms([r["target"][key] for r in rs])
        row["pbc_test_accuracy"] = ms([r["pbc_test"]["accuracy"] for r in rs if "pbc_test" in r])
        row["fit_s"] = ms([r.get("fit_s") for r in rs])
        table.append(row)
    return table


def pct(m_s) -> str:
    m, s = m_s
    return "–" if m is None else f"{100 * m:.1f} ± {100 * s:.1f}"


def partial_note(table: list[dict], meta: dict) -> str:
    """Which arms lack seeds or k values (reported as measured, marked in the table)."""
    full = len(meta["seeds"])
    notes = []
    for arm in ARMS:
        rows = [r for r in table if r["arm"] == arm]
        if not rows:
            continue
        gaps = []
        for name in meta["sets"]:
            for k in meta["ks"]:
                got = [r for r in rows if r["set"] == name and r["k"] == k]
                n = got[0]["seeds"] if got else 0
                if n < full:
                    gaps.append(f"{SHORT.get(name, name)} k = {k}: {n} of {full} seeds")
        if gaps:
            notes.append(f"*{ARM_NAMES[arm]}* is partial ({'; '.join(gaps)}).")
    return " ".join(notes)


def table_markdown(table: list[dict], meta: dict, name: str) -> list[str]:
    big4 = name == "zheng2018_tecom"
    full = len(meta["seeds"])
    lines = ["| k / class | arm | adapt images (BA/EO/LY/MO/NE) | test images | bal. acc % |"
             + (" bal. acc EO/LY/MO/NE % |" if big4 else "") + " accuracy % | PBC test acc % | fit s |",
             "|---:|---|---|---|---:|" + ("---:|" if big4 else "") + "---:|---:|---:|"]
    for r in table:
        if r["set"] != name:
            continue
        fit = "–" if r["fit_s"][0] is None else f"{r['fit_s'][0]:.0f}"
        arm = ARM_NAMES[r["arm"]] + (f" ({r['seeds']} of {full} seeds)" if r["seeds"] < full else "")
        lines.append(f"| {r['k']} | {arm} | {'/'.join(map(str, r['adapt_per_class']))} | "
                     f"{'/'.join(map(str, r['test_per_class']))} | {pct(r['balanced_accuracy'])} |"
                     + (f" {pct(r['balanced_accuracy_big4'])} |" if big4 else "")
                     + f" {pct(r['accuracy'])} | {pct(r['pbc_test_accuracy'])} | {fit} |")
    return lines


FOOTNOTE = ("k = labelled images per class used for adapting (fewer where a class has fewer: at least one image "
            "per class is always held out). PBC test acc: the leak-free PBC test split (2,057 images) after "
            "adapting (not measured for the ImageNet start). fit s = seconds of the training phases per run on "
            "this 2-core host (activations cached once), while other jobs ran.")


def to_markdown(table: list[dict], meta: dict, *, heading_level: int = 1) -> str:
    h = "#" * heading_level
    lines = [f"{h} Few-shot adaptation learning curve (model sha256 `{meta['model_sha256'][:16]}…`)", "",
             f"Model: `{meta['model']}`. Mean ± sd over seeds {meta['seeds']}; balanced accuracy on the held-out "
             "images of the set (everything not used for adapting).", ""]
    for name in meta["sets"]:
        lines += [f"{h}# {name}", "", *table_markdown(table, meta, name), ""]
    lines.append(FOOTNOTE)
    note = partial_note(table, meta)
    if note:
        lines += ["", note]
    return "\n".join(lines) + "\n"


def plot(table: list[dict], meta: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"unadapted": "grey", "pbc": "tab:blue", "pbc_head": "tab:purple", "imagenet": "tab:orange",
               "pbc_noreplay": "tab:green", "pbc_interp": "tab:cyan"}
    panels = [("zheng2018_tecom", "balanced_accuracy_big4", "Tecom: bal. acc EO/LY/MO/NE"),
              ("zheng2018_cellavision", "balanced_accuracy", "CellaVision blog: bal. acc"),
              (None, "pbc_test_accuracy", "PBC test accuracy after adapting")]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2), dpi=130)
    for ax, (name, key, title) in zip(axes, panels, strict=True):
        for arm, colour in colours.items():
            for set_name, style in ((name, "-"),) if name else (("zheng2018_tecom", "-"), ("zheng2018_cellavision", "--")):
                rows = sorted((r for r in table if r["set"] == set_name and r["arm"] == arm and r[key][0] is not None),
                              key=lambda r: r["k"])
                if not rows:
                    continue
                ks = [r["k"] for r in rows]
                m = np.array([100 * r[key][0] for r in rows])
                s = np.array([100 * r[key][1] for r in rows])
                label = ARM_NAMES[arm] + ("" if name else f" ({SHORT[set_name]})")
                if any(r["seeds"] < len(meta["seeds"]) for r in rows):
                    label += " (partial)"
                ax.errorbar(ks, m, yerr=s, fmt="o" + style, color=colour, capsize=3, label=label.replace("`", ""))
        ax.axhline(98.5 if key == "pbc_test_accuracy" else 90, color="k", lw=0.6, ls=":")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("labelled images per class (k)")
        ax.set_xticks(meta["ks"])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    axes[0].set_ylabel("%")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_summary(records: list[dict], meta: dict, out: Path) -> list[dict]:
    """learning_curve.json / .md / .png in `out` from the records; returns the summary table."""
    table = summarize(records, meta)
    (out / "learning_curve.json").write_text(json.dumps({"meta": meta, "summary": table}, indent=2) + "\n")
    (out / "learning_curve.md").write_text(to_markdown(table, meta))
    try:
        plot(table, meta, out / "learning_curve.png")
    except ImportError:
        pass
    return table
