"""The Markdown report of a bench result (or of a `merge`), and writing the JSON + Markdown outputs.

Sections: the header (device, software, data, reference), the main table (one row per variant x thread
count), parity details with the disagreeing images, latency details with XNNPACK delegation, time to first
prediction, clients, other domains, the gate and the notes.  Pure formatting: every number is in the result.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .schema import MERGE_KIND

__all__ = ["to_markdown", "write_outputs"]


def _f(x, fmt: str, none: str = "-") -> str:
    return none if x is None else format(x, fmt)


def _table(header: Sequence[str], rows: list[Sequence]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return out


def _main_rows(rows: list[dict], with_device: bool) -> tuple[list[str], list[list[str]]]:
    header = ["Variant", "Size MB", "Acc", "ΔAcc pp", "Agree", "p50 ms", "p90 ms", "img/s", "threads"]
    if with_device:
        header = ["Device", "Arch", "CPU", "Backend"] + header
    body = []
    for r in rows:
        ref = r.get("is_reference")
        acc = r.get("accuracy")
        agree = r.get("agreement_pct")
        cells = [r["variant"] + (" (ref)" if ref else ""), _f(r.get("size_mb"), ".2f"),
                 _f(None if acc is None else 100 * acc, ".2f", "n/a") + ("%" if acc is not None else ""),
                 "ref" if ref else _f(r.get("delta_accuracy_pp"), "+.2f", "n/a"),
                 "ref" if ref else (_f(agree, ".1f", "n/a") + ("%" if agree is not None else "")),
                 _f(r.get("p50_ms"), ".2f"), _f(r.get("p90_ms"), ".2f"), _f(r.get("img_s"), ".1f"),
                 _f(r.get("threads"), "d")]
        if with_device:
            backend = " ".join(x for x in (r.get("backend"), r.get("backend_version")) if x)
            cells = [r.get("device") or "-", r.get("arch") or "-", r.get("cpu") or "-", backend or "-"] + cells
        body.append(cells)
    return header, body


def _merged(result: dict) -> str:
    header, body = _main_rows(result["rows"], with_device=True)
    lines = ["# wbc-edge bench: merged results", ""] + _table(header, body) + [""]
    lines += ["Sources:", ""]
    lines += [f"- {s['file']}: {s['device']} ({s['arch']}), {s['source']}, {s['created']}"
              for s in result["sources"]]
    if result.get("notes"):
        lines += [""] + [f"- {n}" for n in result["notes"]]
    return "\n".join(lines) + "\n"


def _header(result: dict) -> list[str]:
    s, sw = result["system"], result["software"]
    d = result.get("data") or {}  # None in a result converted from benchmark_model (random inputs)
    lines = ["# wbc-edge bench", ""]
    lines.append(f"- Device: **{s.get('device')}** - {s.get('cpu')} ({s.get('arch')}), {s.get('os')}, "
                 f"{s.get('usable_cpus')} usable CPUs; flags: {', '.join(s.get('cpu_flags') or []) or '-'}")
    lines.append(f"- Software: Python {sw.get('python')}, numpy {sw.get('numpy')}, "
                 f"{sw.get('runtime_backend')} {sw.get('runtime_backend_version')}"
                 + (f", TensorFlow {sw['tensorflow']}" if sw.get("tensorflow") else "")
                 + f"; XNNPACK {'on' if result['config'].get('use_xnnpack', True) else 'OFF'}")
    if not d:
        lines.append("- Data: none (latency on random inputs only, no accuracy)")
    else:
        if d.get("split_manifest"):
            what = f"split `{d['split']}` of {d['split_manifest']} (root {d['root']})"
        else:
            what = f"all valid images under {d.get('root')}"
        lines.append(f"- Data: {what}: {d.get('n_images')} images"
                     + (f" (limit {d['limit']})" if d.get("limit") else "")
                     + f"; sha256 {str(d.get('sha256'))[:16]}… ({d.get('sha256_of')})")
        g = d.get("scale_guard")
        lines.append("- Scale guard: off (every image fed as preprocessed)" if not g else
                     f"- Scale guard (from the reference): {g['magnified']} of {g['n']} images magnified (nucleus "
                     f"under {g['threshold']:.3f} of the side); {g['ms_per_image']:.2f} ms per image, not in "
                     "the latencies below")
    ref = result.get("reference") or {}
    if ref:
        lines.append(f"- Reference: **{ref.get('name')}** ({ref.get('path')}), {ref.get('how')}")
        ep = ref.get("export_parity") or {}
        if ep.get("parity"):
            p = ep["parity"]
            lines.append(f"  - its Keras parity at export ({ep.get('manifest')}): "
                         f"agreement {p.get('agreement_pct', float('nan')):.2f}%, "
                         f"Δacc {p.get('delta_accuracy_pp', float('nan')):+.2f} pp, "
                         f"max |Δp| {p.get('max_abs_dprob', float('nan')):.2e} on {p.get('n')} images")
        elif ref.get("kind") == "tflite":
            lines.append("  - no export manifest.json beside it: its parity with Keras is not recorded here")
    lines.append(f"- Created {result.get('created')}; {result['config'].get('runs')} timed runs after "
                 f"{result['config'].get('warmup')} warm-up calls")
    return lines + [""]


def _parity(result: dict) -> list[str]:
    lines = ["## Parity with the reference", ""]
    body = []
    for v in result["variants"]:
        p = v.get("parity") or {}
        if not p:
            continue
        deltas = p.get("per_class_recall_delta_pp")
        worst = min(deltas.items(), key=lambda kv: kv[1]) if deltas else ("-", 0.0)
        body.append([v["name"] + (" (ref)" if v["is_reference"] else ""), f"{100 * p['accuracy']:.2f}%",
                     f"{100 * p['balanced_accuracy']:.2f}%", f"{p['macro_f1']:.4f}",
                     f"{p['mean_abs_dprob']:.2e}", f"{p['max_abs_dprob']:.2e}", f"{p['n_disagreements']}/{p['n']}",
                     "-" if v["is_reference"] else f"{worst[0]} {worst[1]:+.1f}"])
    lines += _table(["Variant", "Acc", "Bal. acc", "Macro-F1", "mean |Δp|", "max |Δp|", "disagree",
                     "worst recall Δ pp"], body) + [""]
    dis = [[v["name"], d["path"], d["true"], f"{d['reference_label']} {d['reference_conf']:.2f}",
            f"{d['variant_label']} {d['variant_conf']:.2f}"]
           for v in result["variants"] for d in ((v.get("parity") or {}).get("disagreements") or [])[:10]]
    if dis:
        lines += ["Disagreements with the reference (first 10 per variant; all in the JSON):", ""]
        lines += _table(["Variant", "Image", "True", "Reference", "Variant"], dis) + [""]
    return lines


def _delegation(dlg: dict | None) -> str:
    if not dlg:
        return "-"
    text = f"{dlg['ops_delegated']}/{dlg['ops_total']} ops, {dlg['partitions']} part."
    if dlg.get("not_delegated"):
        text += " (not: " + ", ".join(f"{k}×{c}" for k, c in dlg["not_delegated"].items()) + ")"
    return text


def _latency(result: dict) -> list[str]:
    body = [[v["name"], lat["threads"], _f(lat.get("load_ms"), ".1f"),
             f"{_f(lat.get('mean_ms'), '.2f')} ± {_f(lat.get('std_ms'), '.2f')}", _f(lat.get("p99_ms"), ".2f"),
             _f(lat.get("min_ms"), ".2f"), _f(lat.get("rss_after_mb"), ".0f"),
             _f(lat.get("process_peak_rss_mb"), ".0f"), _delegation(lat.get("delegate"))]
            for v in result["variants"] for lat in v.get("latency") or []]
    return ["## Latency details", ""] + _table(
        ["Variant", "threads", "load ms", "mean ± std ms", "p99 ms", "min ms", "RSS after MB", "peak RSS MB",
         "XNNPACK delegation"], body) + [""]


def _ttfp(result: dict) -> list[str]:
    if not result.get("ttfp"):
        return []
    body = [[t["path"], Path(t["model"]).name, _f(t.get("wall_s"), ".2f"), _f(t.get("in_process_s"), ".2f"),
             t.get("error") or t.get("what", "")] for t in result["ttfp"]]
    return (["## Time to first prediction (fresh process)", ""]
            + _table(["Path", "Model", "wall s", "in-process s", "what"], body) + [""])


def _domains(result: dict) -> list[str]:
    if not result.get("domains"):
        return []
    body = [[Path(model).name, d["name"], str(r["n"]), _f(100 * r["accuracy"], ".1f"),
             _f(100 * r["balanced_accuracy"], ".1f"), _f(r.get("agreement_pct"), ".2f"), str(r.get("flips", "-")),
             _f(r.get("accepted_agreement_pct"), ".2f") + (f" ({r['accepted_n']})" if "accepted_n" in r else "")]
            for d in result["domains"]["domains"] for model, r in d["results"].items()]
    return (["## Other domains (all images; agreement with the reference)", "",
             "Agree on accepted: top-1 agreement on the images the variant itself accepts (calibrated confidence at "
             "or above its stored abstain threshold; n of them in brackets) - the answers a user is not told are "
             "uncertain.", ""]
            + _table(["Variant", "Domain", "n", "Acc %", "Bal. acc %", "Agree %", "Flips", "Agree on accepted % (n)"],
                     body) + [""])


def _gate(result: dict) -> list[str]:
    g = result.get("gate") or {}
    if not g.get("checked"):
        return []
    lines = ["## Gate", "",
             f"max accuracy drop {_f(g.get('max_accuracy_drop_pp'), 'g', 'unchecked')} pp, "
             f"min agreement {_f(g.get('min_agreement_pct'), 'g', 'unchecked')}%: "
             + ("**passed**" if g.get("passed") else "**FAILED**")]
    lines += [f"- {f['variant']}: {f['reason']}" for f in g.get("failures", [])]
    return lines + [""]


def to_markdown(result: dict) -> str:
    """A Markdown report of a run_bench result (or of a `merge` result: the cross-device table)."""
    if result.get("kind") == MERGE_KIND:
        return _merged(result)
    header, body = _main_rows(result["rows"], with_device=False)
    lines = _header(result) + _table(header, body) + [""]
    lines += _parity(result) + _latency(result) + _ttfp(result)
    if (result.get("clients") or {}).get("mediapipe"):
        from .mediapipe_client import markdown_section

        lines += markdown_section(result["clients"]["mediapipe"])
    lines += _domains(result) + _gate(result)
    if result.get("notes"):
        lines += ["## Notes", ""] + [f"- {n}" for n in result["notes"]] + [""]
    return "\n".join(lines)


def write_outputs(result: dict, *, json_path=None, markdown_path=None) -> None:
    """Write the JSON and/or Markdown report atomically."""
    from ..core.atomic import write_json, write_text

    if json_path is not None:
        write_json(json_path, result)
    if markdown_path is not None:
        write_text(markdown_path, to_markdown(result))
