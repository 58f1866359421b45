"""LiteRT / TFLite `benchmark_model` output -> a wbc-edge bench result (for `wbc-edge bench merge`).

    python -m wbc_edge.bench.android OUTPUT.txt --model export/wbc_int8.tflite --threads 4 \
        --device "Pixel 7" --abi arm64-v8a --json android_pixel7_int8_t4.json

(benchmarks/android/run_benchmark_model.sh runs benchmark_model over adb and calls this.)

The parser reads the text benchmark_model prints (stdout, `adb shell` output, or a logcat dump with
"I/tflite ( pid): " prefixes; with or without the "INFO: " prefix of newer versions):

    Num threads: [4]                                   (also "#threads used for CPU inference: [4]")
    Graph: [/data/local/tmp/wbc_int8.tflite]
    Use xnnpack: [1]
    Created TensorFlow Lite XNNPACK delegate for CPU.
    Replacing 66 out of 69 node(s) with delegate (TfLiteXNNPackDelegate) node, yielding 1 partitions ...
    The input model file size (MB): 0.63
    Initialized session in 23.5ms.
    count=12 first=... curr=... min=... max=... avg=... std=...      (warm-up runs)
    count=50 first=... curr=... min=... max=... avg=... std=... [p5=... median=... p95=...]  (timed runs)
    Inference timings in us: Init: 23500, First inference: 9875, Warmup (avg): 7312.1, Inference (avg): 6991.5
    Memory footprint delta from the start of the tool (MB): init=3.14 overall=12.5
    (older: "Peak memory footprint (MB): init=... overall=...")
    Overall peak memory footprint (MB) via periodic monitoring: 15.2      (--report_peak_memory_footprint)

With --enable_op_profiling the per-operator tables follow; their "Timings (microseconds): count=..." lines
are not mistaken for the timed-run line, and the "Summary by node type" table is kept.  Values may be
printed in scientific notation (avg=2.95034e+06).  benchmark_model feeds random inputs: a converted result
has latency but no accuracy (parity is measured by `wbc-edge bench` where Python runs).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import re
import sys
from pathlib import Path

from ..core.errors import WbcEdgeError
from .schema import RESULT_KIND, SCHEMA_VERSION, result_rows

__all__ = ["parse_benchmark_model", "to_result", "main"]

_NUM = r"([-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)"
# Log prefixes to strip: "INFO: ", "VERBOSE: ", logcat "07-08 15:33:55.768 I/tflite  ( 5395): ",
# "I tflite  : " (logcat -v brief variants).
_PREFIX = re.compile(r"^\s*(?:\d\d-\d\d\s+[\d:.]+\s+)?(?:(?:[VDIWEF]/[\w.-]+\s*\(\s*\d+\)\s*:\s*)|"
                     r"(?:[VDIWEF]\s+[\w.-]+\s*:\s*))?(?:(?:INFO|VERBOSE|WARNING|ERROR|DEBUG):\s*)?")
_RUN = re.compile(r"^count=(\d+)(.*)$")
_KV = re.compile(r"(\w+)=" + _NUM)
_TIMINGS = re.compile(r"^Inference timings in us: Init: " + _NUM + r", First inference: " + _NUM
                      + r", Warmup \(avg\): " + _NUM + r", Inference \(avg\): " + _NUM)
_MEM = re.compile(r"^(?:Memory footprint delta from the start of the tool|Peak memory footprint) \(MB\): "
                  r"init=" + _NUM + r" overall=" + _NUM)
_PEAK = re.compile(r"^Overall peak memory footprint \(MB\) via periodic monitoring: " + _NUM)
_THREADS = re.compile(r"^(?:Num threads|#threads used for CPU inference): \[(\d+)\]")
_GRAPH = re.compile(r"^Graph: \[(.*)\]")
_XNN_FLAG = re.compile(r"^Use xnnpack: \[(\w+)\]", re.IGNORECASE)
_REPLACING = re.compile(r"Replacing (\d+) out of (\d+) node\(s\) with delegate \((\w+)\) node, "
                        r"yielding (\d+) partitions")
_SIZE = re.compile(r"^The input model file size \(MB\): " + _NUM)
_SESSION = re.compile(r"^Initialized session in " + _NUM + r"\s*ms")
_NODE_TYPE_ROW = re.compile(r"^\s*([A-Za-z_0-9:/]+)\s+(\d+)\s+" + _NUM + r"\s+" + _NUM + r"%\s+"
                            + _NUM + r"%")


def _strip(line: str) -> str:
    return _PREFIX.sub("", line.rstrip("\r\n"), count=1).strip()


def parse_benchmark_model(text: str) -> dict:
    """Parse benchmark_model's text output into a dict of numbers (microseconds as printed, ms derived).

    Raises WbcEdgeError when the text has no "Inference timings in us" line (not benchmark_model output,
    or the run failed - its last lines are quoted).
    """
    lines = [_strip(x) for x in text.splitlines()]
    out: dict = {"threads": None, "graph": None, "xnnpack_flag": None, "xnnpack_delegate_created": False,
                 "delegation": None, "model_size_mb": None, "session_init_ms": None, "runs": [],
                 "timings_us": None, "memory_mb": None, "peak_memory_mb": None, "op_profile_by_type": None}
    in_node_summary = False
    summaries: list[dict] = []
    for line in lines:
        if not line:
            continue
        m = _THREADS.match(line)
        if m and out["threads"] is None:
            out["threads"] = int(m.group(1))
            continue
        m = _GRAPH.match(line)
        if m and out["graph"] is None:
            out["graph"] = m.group(1)
            continue
        m = _XNN_FLAG.match(line)
        if m:
            out["xnnpack_flag"] = m.group(1) in ("1", "true", "True")
            continue
        if "XNNPACK delegate" in line and "Created" in line:
            out["xnnpack_delegate_created"] = True
        m = _REPLACING.search(line)
        if m:
            out["delegation"] = {"ops_delegated": int(m.group(1)), "ops_total": int(m.group(2)),
                                 "delegate": m.group(3), "partitions": int(m.group(4))}
            continue
        m = _SIZE.match(line)
        if m:
            out["model_size_mb"] = float(m.group(1))
            continue
        m = _SESSION.match(line)
        if m:
            out["session_init_ms"] = float(m.group(1))
            continue
        m = _RUN.match(line)  # anchored: "Timings (microseconds): count=..." of op profiling does not match
        if m and out["timings_us"] is None:
            rec = {"count": int(m.group(1))}
            rec.update({k: float(v) for k, v in _KV.findall(m.group(2))})
            out["runs"].append(rec)
            continue
        m = _TIMINGS.match(line)
        if m:
            out["timings_us"] = {"init": float(m.group(1)), "first_inference": float(m.group(2)),
                                 "warmup_avg": float(m.group(3)), "inference_avg": float(m.group(4))}
            continue
        m = _MEM.match(line)
        if m:
            out["memory_mb"] = {"init": float(m.group(1)), "overall": float(m.group(2))}
            continue
        m = _PEAK.match(line)
        if m:
            out["peak_memory_mb"] = float(m.group(1))
            continue
        if line.startswith("=") and "Summary by node type" in line:
            in_node_summary = True
            summaries.append({})
            continue
        if in_node_summary:
            m = _NODE_TYPE_ROW.match(line)
            if m:
                summaries[-1][m.group(1)] = {"count": int(m.group(2)), "avg_ms": float(m.group(3)),
                                             "avg_pct": float(m.group(4))}
            elif not line.startswith("["):
                in_node_summary = False
    if out["timings_us"] is None:
        tail = " | ".join([x for x in lines if x][-3:])
        raise WbcEdgeError("no 'Inference timings in us' line: not benchmark_model output, or the run failed"
                           + (f" (last lines: {tail})" if tail else ""))
    if summaries:
        out["op_profile_by_type"] = summaries[-1]  # the regular runs' table comes after the init table
    timed = out["runs"][-1] if out["runs"] else {}
    inf = out["timings_us"]
    out["latency_ms"] = {
        "count": timed.get("count"),
        "mean_ms": (timed.get("avg", inf["inference_avg"])) / 1e3,
        "std_ms": timed["std"] / 1e3 if "std" in timed else None,
        "min_ms": timed["min"] / 1e3 if "min" in timed else None,
        "max_ms": timed["max"] / 1e3 if "max" in timed else None,
        "p5_ms": timed["p5"] / 1e3 if "p5" in timed else None,
        "p50_ms": timed["median"] / 1e3 if "median" in timed else None,
        "p95_ms": timed["p95"] / 1e3 if "p95" in timed else None,
        "init_ms": inf["init"] / 1e3, "first_inference_ms": inf["first_inference"] / 1e3,
        "warmup_avg_ms": inf["warmup_avg"] / 1e3,
    }
    return out


def to_result(parsed: dict, *, model: str | os.PathLike | None = None, device: str | None = None,
              abi: str | None = None, android_release: str | None = None, soc: str | None = None,
              threads: int | None = None, binary: str | None = None) -> dict:
    """A wbc-edge bench result (schema_version 1, no accuracy) from `parse_benchmark_model` output."""
    lat = parsed["latency_ms"]
    thr = threads if threads is not None else parsed.get("threads")
    name = variant = sha = input_size = input_dtype = None
    size_mb = parsed.get("model_size_mb")
    if model is not None and Path(model).is_file():
        p = Path(model)
        data = p.read_bytes()
        size_mb, sha = len(data) / 1e6, hashlib.sha256(data).hexdigest()
        try:
            from ..core.contract import read_contract

            c = read_contract(data)
        except WbcEdgeError:
            c = None
        if c is not None:
            variant, input_size, input_dtype = c.variant, c.input_size, c.input_dtype
        name = variant or p.stem
    graph = parsed.get("graph")
    if name is None:
        name = Path(graph).stem if graph else (Path(model).stem if model else "model")
    xnn = parsed.get("xnnpack_flag")
    if xnn is None:
        xnn = bool(parsed.get("xnnpack_delegate_created")) or None
    count = lat.get("count")
    latency = {"threads": thr, "backend": "benchmark_model", "backend_version": binary,
               "xnnpack": xnn, "delegate": parsed.get("delegation"), "load_ms": lat["init_ms"],
               "warmup": None, "runs": count, "p50_ms": lat["p50_ms"], "p90_ms": None, "p99_ms": None,
               "mean_ms": lat["mean_ms"], "std_ms": lat["std_ms"], "min_ms": lat["min_ms"],
               "max_ms": lat["max_ms"], "throughput_images": None,
               "throughput_img_s": 1e3 / lat["mean_ms"] if lat["mean_ms"] else None,
               "rss_before_mb": None, "rss_after_mb": None,
               "process_peak_rss_mb": parsed.get("peak_memory_mb"),
               "p5_ms": lat["p5_ms"], "p95_ms": lat["p95_ms"],
               "first_inference_ms": lat["first_inference_ms"],
               "warmup_avg_ms": lat["warmup_avg_ms"], "memory_delta_mb": parsed.get("memory_mb"),
               "op_profile_by_type": parsed.get("op_profile_by_type")}
    system = {"device": device or "android device", "cpu": soc or abi or "unknown", "arch": abi or "unknown",
              "os": f"Android {android_release}" if android_release else "Android", "cpu_count": None,
              "usable_cpus": None, "cpu_flags": [], "hostname": None}
    result = {
        "schema_version": SCHEMA_VERSION, "kind": RESULT_KIND, "source": "benchmark_model (LiteRT CLI)",
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "system": system,
        "software": {"python": None, "numpy": None, "pillow": None, "wbc_edge": None,
                     "runtime_backend": "benchmark_model", "runtime_backend_version": binary},
        "config": {"models": [str(model or graph)], "threads": [thr], "runs": count, "warmup": None,
                   "use_xnnpack": xnn, "max_accuracy_drop": None, "min_agreement": None},
        "data": None, "reference": None,
        "variants": [{"name": name, "path": str(model or graph), "kind": "tflite", "is_reference": False,
                      "variant": variant, "input_size": input_size, "input_dtype": input_dtype,
                      "size_mb": size_mb, "sha256": sha, "labels": None, "parity": None,
                      "export_parity": None, "latency": [latency]}],
        "rows": [], "ttfp": None,
        "memory": {"process_peak_rss_mb": parsed.get("peak_memory_mb"), "delta_mb": parsed.get("memory_mb"),
                   "note": "benchmark_model's own (approximate) memory report"},
        "gate": None,
        "notes": ["benchmark_model times random inputs: latency only; accuracy parity comes from "
                  "wbc-edge bench",
                  "img/s = 1000 / mean latency (benchmark_model has no throughput run)",
                  "p50 = benchmark_model's median (printed by newer versions only; older ones print "
                  "avg/std)"],
        "timings": None,
        "benchmark_model": {k: v for k, v in parsed.items() if k != "latency_ms"},
    }
    result["rows"] = result_rows(result)
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("output", help="benchmark_model's captured text output ('-' = stdin)")
    ap.add_argument("--model", help="the local .tflite that was benchmarked (name, size, contract)")
    ap.add_argument("--threads", type=int)
    ap.add_argument("--device", help="e.g. the output of `adb shell getprop ro.product.model`")
    ap.add_argument("--abi", help="e.g. ro.product.cpu.abi (arm64-v8a)")
    ap.add_argument("--android-release", help="ro.build.version.release")
    ap.add_argument("--soc", help="ro.soc.model / ro.board.platform")
    ap.add_argument("--binary", help="benchmark_model version or file name, recorded as the backend version")
    ap.add_argument("--json", dest="json_out", help="write the result here (default: stdout)")
    args = ap.parse_args(argv)
    text = sys.stdin.read() if args.output == "-" else Path(args.output).read_text(encoding="utf-8",
                                                                                 errors="replace")
    try:
        result = to_result(parse_benchmark_model(text), model=args.model, device=args.device, abi=args.abi,
                           android_release=args.android_release, soc=args.soc, threads=args.threads,
                           binary=args.binary)
    except WbcEdgeError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    if args.json_out:
        from ..core.atomic import write_json

        write_json(args.json_out, result)
        lat = result["variants"][0]["latency"][0]
        print(f"Wrote {args.json_out}: {result['variants'][0]['name']} on {result['system']['device']}, "
              f"{lat['threads']} thread(s): mean {lat['mean_ms']:.2f} ms"
              + (f", median {lat['p50_ms']:.2f} ms" if lat.get("p50_ms") else ""), file=sys.stderr)
    else:
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
