"""Per-op profile of a .tflite model with the Python LiteRT interpreter: why is int8 slower than fp32 here?

    python benchmarks/profile_ops.py MODEL.tflite [MODEL2.tflite ...] [--threads 1] [--runs 30]
        [--no-single-op] [--litert-benchmark] [--json OUT.json]

The Python `Interpreter` has no op profiler (the C++ `benchmark_model --enable_op_profiling=true` does, and
the `litert-benchmark` console script in the ai-edge-litert wheel is a Python CompiledModel-API timer
without per-op tables), so this script measures per op itself:

1. CPU: model name and the ISA flags that decide int8 vs float kernels (avx2, fma, avx512f, avx512_vnni,
   avx_vnni, amx_int8; ARM: asimddp = dot product, i8mm).
2. Graph: every op with its input/output dtypes; which ops the XNNPACK delegate took (node list of an
   interpreter with XNNPACK: the ops between a DELEGATE node's inputs and outputs) and which run on the
   builtin kernels; per-channel vs per-tensor quantisation of the CONV_2D / DEPTHWISE_CONV_2D /
   FULLY_CONNECTED weights, and the input/output quantisation.
3. Whole-model latency (median of --runs invokes) with XNNPACK and with the builtin kernels.
4. Per-op latency (unless --no-single-op): each op is cut out into a one-op model (same weights, same
   quantisation; ai_edge_litert.tools.flatbuffer_utils) and timed alone with XNNPACK and with the builtin
   kernels; the table shows the top ops and a summary by op type.  A one-op model pays one Python
   invoke() (~5-20 us) and loses cross-op fusion/caching, so the per-op sum is somewhat above the
   whole-model time; the proportions are what matter.
5. --litert-benchmark: also run the wheel's `litert-benchmark` (CompiledModel API) as a cross-check.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from wbc_edge.bench import cpu_flags, cpu_model, delegated_op_indices, delegation_summary  # noqa: E402
from wbc_edge.core.contract import strip_contract  # noqa: E402

WEIGHTED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV")


def _interp(content: bytes, threads: int, xnnpack: bool):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kw = {"model_content": content, "num_threads": threads}
    if not xnnpack:
        kw["experimental_op_resolver_type"] = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    it = Interpreter(**kw)
    it.allocate_tensors()
    return it


def _fill_inputs(it, rng) -> None:
    for d in it.get_input_details():
        dt = np.dtype(d["dtype"])
        shape = tuple(int(x) for x in d["shape"])
        if dt == np.float32:
            x = rng.uniform(0, 255, size=shape).astype(np.float32)
        elif np.issubdtype(dt, np.integer):
            info = np.iinfo(dt)
            x = rng.integers(max(info.min, -128), min(info.max, 255) + 1, size=shape).astype(dt)
        else:
            x = np.zeros(shape, dtype=dt)
        it.set_tensor(d["index"], x)


def _time(it, runs: int, warmup: int = 3) -> float:
    """Median invoke() time in ms."""
    for _ in range(warmup):
        it.invoke()
    ts = []
    for _ in range(runs):
        t0 = time.perf_counter()
        it.invoke()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts) * 1e3


def _quant_kind(details: dict) -> str:
    q = details.get("quantization_parameters") or {}
    scales = q.get("scales")
    n = 0 if scales is None else len(scales)
    if n == 0:
        return "none"
    return f"per-channel ({n} scales, axis {q.get('quantized_dimension')})" if n > 1 else "per-tensor"


def graph_report(content: bytes, threads: int) -> dict:
    it = _interp(content, threads, xnnpack=True)
    dsum = delegation_summary(it)
    ops = [o for o in it._get_ops_details() if o["op_name"] != "DELEGATE"]
    tens = {t["index"]: t for t in it.get_tensor_details()}
    delegated = delegated_op_indices(it._get_ops_details())
    rows = []
    for o in ops:
        ins = [int(i) for i in o["inputs"] if int(i) >= 0]
        weight = None
        if o["op_name"] in WEIGHTED_OPS and len(ins) > 1 and ins[1] in tens:
            w = tens[ins[1]]
            weight = {"dtype": np.dtype(w["dtype"]).name, "shape": [int(x) for x in w["shape"]],
                      "quantization": _quant_kind(w)}
        out_t = tens.get(int(o["outputs"][0])) if len(o["outputs"]) else None
        rows.append({"index": o["index"], "op": o["op_name"], "delegated": o["index"] in delegated,
                     "in_dtypes": [np.dtype(tens[i]["dtype"]).name for i in ins[:1] if i in tens],
                     "out_dtype": np.dtype(out_t["dtype"]).name if out_t else None,
                     "out_shape": [int(x) for x in out_t["shape"]] if out_t else None, "weights": weight})
    inp, outp = it.get_input_details()[0], it.get_output_details()[0]
    return {"delegation": dsum, "ops": rows,
            "input": {"dtype": np.dtype(inp["dtype"]).name, "quantization": list(inp["quantization"])},
            "output": {"dtype": np.dtype(outp["dtype"]).name, "quantization": list(outp["quantization"])}}


def single_op_models(flat: bytes):
    """Yield (op index, op name, one-op model bytes) for every op of subgraph 0."""
    from ai_edge_litert.tools import flatbuffer_utils as fbu

    model = fbu.read_model_from_bytearray(bytearray(flat))
    sg = model.subgraphs[0]
    bufs = model.buffers
    ops, sg_in, sg_out, sigs = sg.operators, sg.inputs, sg.outputs, model.signatureDefs

    def const(ti: int) -> bool:
        b = sg.tensors[ti].buffer
        return 0 < b < len(bufs) and bufs[b].data is not None and len(bufs[b].data) > 0

    try:
        for k, op in enumerate(ops):
            code = model.operatorCodes[op.opcodeIndex]
            name = fbu.opcode_to_name(model, op.opcodeIndex) or str(code.builtinCode)
            used = {sg.tensors[i].buffer for i in op.inputs if i >= 0}
            stash = []
            for bi, b in enumerate(bufs):
                if bi not in used and b.data is not None and len(b.data) > 0:
                    stash.append((bi, b.data))
                    b.data = None
            sg.operators = [op]
            sg.inputs = [int(i) for i in op.inputs if i >= 0 and not const(int(i))]
            sg.outputs = [int(i) for i in op.outputs]
            model.signatureDefs = []
            try:
                blob = bytes(fbu.convert_object_to_bytearray(model))
            finally:
                for bi, data in stash:
                    bufs[bi].data = data
            yield k, name, blob
    finally:
        sg.operators, sg.inputs, sg.outputs, model.signatureDefs = ops, sg_in, sg_out, sigs


def per_op(flat: bytes, threads: int, runs: int) -> list[dict]:
    rng = np.random.default_rng(0)
    out = []
    for k, name, blob in single_op_models(flat):
        rec = {"index": k, "op": name}
        for xnn in (True, False):
            key = "xnnpack" if xnn else "builtin"
            try:
                it = _interp(blob, threads, xnnpack=xnn)
                _fill_inputs(it, rng)
                if xnn:
                    rec["delegated"] = any(o["op_name"] == "DELEGATE" for o in it._get_ops_details())
                rec[f"{key}_ms"] = _time(it, runs)
            except Exception as exc:  # noqa: BLE001 - report and go on
                rec[f"{key}_ms"] = None
                rec[f"{key}_error"] = str(exc).splitlines()[0][:120]
        out.append(rec)
    return out


def litert_benchmark(path: Path, threads: int, runs: int) -> dict | None:
    exe = shutil.which("litert-benchmark") or str(Path(sys.executable).parent / "litert-benchmark")
    if not Path(exe).exists():
        return None
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "m.tflite"
        model.write_bytes(strip_contract(path.read_bytes()))
        res = Path(tmp) / "r.json"
        proc = subprocess.run([exe, f"--model={model}", f"--num_threads={threads}", f"--num_runs={runs}",
                               "--warmup_runs=5", f"--result_json={res}"], capture_output=True, text=True)
        if proc.returncode != 0 or not res.is_file():
            return {"error": (proc.stderr or proc.stdout).strip().splitlines()[-1:]}
        return json.loads(res.read_text())


def report(path: Path, threads: int, runs: int, single: bool, cross_check: bool) -> dict:
    flat = strip_contract(path.read_bytes())
    g = graph_report(flat, threads)
    rng = np.random.default_rng(0)
    whole = {}
    for xnn in (True, False):
        it = _interp(flat, threads, xnnpack=xnn)
        _fill_inputs(it, rng)
        whole["xnnpack_ms" if xnn else "builtin_ms"] = _time(it, runs)
    rep = {"model": str(path), "bytes": path.stat().st_size, "threads": threads, "runs": runs, **g,
           "whole_model": whole}
    if single:
        rep["per_op"] = per_op(flat, threads, runs)
    if cross_check:
        rep["litert_benchmark"] = litert_benchmark(path, threads, runs)
    return rep


def print_report(rep: dict, top: int) -> None:
    print(f"\n=== {rep['model']} ({rep['bytes'] / 1e6:.2f} MB), {rep['threads']} thread(s) ===")
    print(f"input {rep['input']['dtype']} q={rep['input']['quantization']}, "
          f"output {rep['output']['dtype']} q={rep['output']['quantization']}")
    d = rep["delegation"] or {}
    print(f"XNNPACK: {d.get('ops_delegated')}/{d.get('ops_total')} ops delegated in {d.get('partitions')} "
          f"partition(s); builtin kernels run: {d.get('not_delegated') or 'nothing'}")
    kinds: dict[str, dict] = OrderedDict()
    for o in rep["ops"]:
        if o["weights"]:
            k = kinds.setdefault(o["op"], {})
            label = f"{o['weights']['dtype']} {o['weights']['quantization'].split(' (')[0]}"
            k[label] = k.get(label, 0) + 1
    for op, k in kinds.items():
        print(f"  {op} weights: " + ", ".join(f"{n}x {lab}" for lab, n in k.items()))
    acts = sorted({(o["op"], tuple(o["in_dtypes"]), o["out_dtype"])
                   for o in rep["ops"] if not o["delegated"]})
    for op, ins, out in acts:
        print(f"  not delegated: {op} {'/'.join(ins) or '-'} -> {out}")
    w = rep["whole_model"]
    print(f"whole model (median of {rep['runs']}): XNNPACK {w['xnnpack_ms']:.3f} ms, builtin kernels "
          f"{w['builtin_ms']:.3f} ms")
    if rep.get("litert_benchmark"):
        lb = rep["litert_benchmark"]
        if "latency" in lb:
            print("litert-benchmark (CompiledModel API) cross-check: "
                  f"median {lb['latency']['median_ms']:.3f} ms, "
                  f"avg {lb['latency']['avg_ms']:.3f} ms, fully accelerated: {lb.get('fully_accelerated')}")
        else:
            print(f"litert-benchmark failed: {lb.get('error')}")
    ops = rep.get("per_op")
    if not ops:
        return
    tot_x = sum(o.get("xnnpack_ms") or 0 for o in ops)
    tot_b = sum(o.get("builtin_ms") or 0 for o in ops)
    print(f"\nper-op (each op alone, median of {rep['runs']}): sum XNNPACK {tot_x:.3f} ms, "
          f"sum builtin {tot_b:.3f} ms")
    by_type: dict[str, list] = OrderedDict()
    for o in ops:
        by_type.setdefault(o["op"], []).append(o)
    print(f"{'op type':<20} {'n':>3} {'deleg':>5} {'XNNPACK ms':>10} {'%':>6} {'builtin ms':>10} {'%':>6}")
    for op, lst in sorted(by_type.items(), key=lambda kv: -sum(o.get("xnnpack_ms") or 0 for o in kv[1])):
        x = sum(o.get("xnnpack_ms") or 0 for o in lst)
        b = sum(o.get("builtin_ms") or 0 for o in lst)
        dl = sum(bool(o.get("delegated")) for o in lst)
        print(f"{op:<20} {len(lst):>3} {dl:>5} {x:>10.3f} {100 * x / max(tot_x, 1e-9):>5.1f}% "
              f"{b:>10.3f} {100 * b / max(tot_b, 1e-9):>5.1f}%")
    print(f"\ntop {top} ops by XNNPACK time:")
    g_ops = {o["index"]: o for o in rep["ops"]}
    for o in sorted(ops, key=lambda o: -(o.get("xnnpack_ms") or 0))[:top]:
        go = g_ops.get(o["index"], {})
        wq = (go.get("weights") or {}).get("quantization", "")
        print(f"  #{o['index']:<3} {o['op']:<18} out {str(go.get('out_shape')):<18} "
              f"{'XNNPACK' if o.get('delegated') else 'builtin':<7} "
              f"{o.get('xnnpack_ms') or float('nan'):8.3f} ms "
              f"(builtin {o.get('builtin_ms') or float('nan'):7.3f})  {wq}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+", type=Path)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("--no-single-op", action="store_true", help="skip the per-op (one-op model) timings")
    ap.add_argument("--litert-benchmark", action="store_true",
                    help="cross-check the whole-model time with the wheel's litert-benchmark")
    ap.add_argument("--json", dest="json_out", type=Path)
    args = ap.parse_args(argv)

    flags = cpu_flags()
    print(f"CPU: {cpu_model()} ({os.uname().machine}), {os.cpu_count()} CPUs; int8/float-relevant flags: "
          f"{', '.join(flags) or '-'}")
    vnni = [f for f in flags if "vnni" in f or f in ("asimddp", "i8mm", "amx_int8")]
    print(f"  int8 dot-product instructions: {', '.join(vnni) if vnni else 'none reported'}")
    reports = []
    for p in args.models:
        rep = report(p, args.threads, args.runs, not args.no_single_op, args.litert_benchmark)
        print_report(rep, args.top)
        reports.append(rep)
    if len(reports) > 1:
        print("\nwhole-model summary (median ms, XNNPACK / builtin):")
        for r in reports:
            w = r["whole_model"]
            print(f"  {Path(r['model']).name:<28} {w['xnnpack_ms']:8.3f} / {w['builtin_ms']:8.3f}")
    if args.json_out:
        args.json_out.write_text(json.dumps({"cpu": cpu_model(), "cpu_flags": flags, "reports": reports},
                                            indent=2, default=str))
        print(f"\nwrote {args.json_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
