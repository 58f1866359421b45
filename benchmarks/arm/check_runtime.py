"""Run `wbc_edge.runtime` on some images and print/save JSON; compare two such runs (x86 vs aarch64 / armv7l).

    python benchmarks/arm/check_runtime.py run MODEL.tflite IMAGE_OR_FOLDER... [--out run.json]
    python benchmarks/arm/check_runtime.py compare x86.json arm.json --arch armv7l --json-out R.json --md-out R.md

`run` makes TensorFlow / Keras unimportable first (a sys.meta_path finder), so it proves the runtime works
with numpy + Pillow + LiteRT alone, exactly as on a Raspberry Pi.  It needs only the standard library,
numpy, Pillow and a TFLite interpreter (no click), and imports wbc_edge from this repository.
Used by run_emulated.sh under qemu-aarch64 / qemu-arm and natively.  A model the ARM interpreter cannot load
(e.g. a dynamic-range model on tflite-runtime 2.14) is recorded as such ("error") instead of crashing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BLOCKED = ("tensorflow", "tf_keras", "keras")


class _BlockTF:
    """A meta-path finder that makes TensorFlow and Keras look uninstalled."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} blocked: check_runtime.py runs without TensorFlow")
        return None


def _rel(p: Path) -> str:
    p = p.resolve()
    try:
        return p.relative_to(REPO).as_posix()
    except ValueError:
        return str(p)


def cmd_run(args) -> int:
    if not args.allow_tf:
        sys.meta_path.insert(0, _BlockTF())
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    t0 = time.perf_counter()
    from wbc_edge import runtime  # noqa: E402 - after the blocker on purpose
    import_s = time.perf_counter() - t0
    from wbc_edge.core.errors import WbcEdgeError

    import numpy as np
    import PIL

    files = runtime.find_images(args.images)
    model = Path(args.model)
    try:
        clf = runtime.Classifier(args.model, num_threads=args.threads)
    except WbcEdgeError as exc:
        backend = runtime.load_backend()
        rec = {"machine": platform.machine(), "platform": platform.platform(), "python": sys.version.split()[0],
               "numpy": np.__version__, "pillow": PIL.__version__, "backend": backend.name,
               "backend_version": backend.version, "model": model.name,
               "model_sha256": hashlib.sha256(model.read_bytes()).hexdigest(), "error": str(exc), "results": []}
        text = json.dumps(rec, indent=1)
        Path(args.out).write_text(text + "\n") if args.out else print(text)
        print(f"{rec['machine']}: cannot load {model.name}: {exc}", file=sys.stderr)
        return 3
    out_det = clf.output_details[0]
    scale, zp = out_det["quantization"]
    results, latencies = [], []
    for f in files:
        t = time.perf_counter()
        pred = clf.predict(f)
        latencies.append(time.perf_counter() - t)
        results.append({"image": _rel(Path(f)), "label": pred.label, "zoom": round(float(getattr(pred, "zoom", 1.0)), 4),
                        "probabilities": [float(p) for p in pred.probabilities]})
    rec = {
        "machine": platform.machine(), "platform": platform.platform(), "python": sys.version.split()[0],
        "numpy": np.__version__, "pillow": PIL.__version__,
        "backend": clf.backend, "backend_version": clf.backend_version,
        "tensorflow_imported": any(m.split(".")[0] in BLOCKED for m in sys.modules),
        "model": model.name, "model_sha256": hashlib.sha256(model.read_bytes()).hexdigest(),
        "variant": clf.contract.variant if clf.contract else None,
        "input_size": clf.input_size, "input_dtype": str(clf.input_dtype),
        "output_dtype": str(clf.output_dtype),
        "output_scale": float(scale), "output_zero_point": int(zp),
        "labels": list(clf.labels),
        "import_runtime_s": round(import_s, 4), "load_s": round(clf.load_seconds, 4),
        "median_predict_ms": round(1e3 * float(np.median(latencies)), 2) if latencies else None,
        "results": results,
    }
    text = json.dumps(rec, indent=1)
    if args.out:
        Path(args.out).write_text(text + "\n")
    else:
        print(text)
    print(f"{rec['machine']}: {len(results)} image(s), backend {rec['backend']} {rec['backend_version']}, "
          f"TF imported: {rec['tensorflow_imported']}", file=sys.stderr)
    return 0


def compare(x86: dict, arm: dict, arch: str = "aarch64") -> dict:
    import numpy as np

    if arm.get("error"):
        return {"passed": False, "problems": [f"the {arch} run could not load the model: {arm['error']}"],
                "images": 0, "top1_agreement": 0, "max_abs_prob_diff": None, "exactly_equal": False,
                "tolerance": None, "tolerance_rule": None, "per_image": []}

    integer_out = x86["output_dtype"] in ("uint8", "int8", "int16")
    tol = float(x86["output_scale"]) * 1.0001 if integer_out else 1e-5
    tol_text = (f"1 output quantisation step ({x86['output_scale']:.6g})" if integer_out
                else "1e-5 (float output)")
    a = {r["image"]: r for r in x86["results"]}
    b = {r["image"]: r for r in arm["results"]}
    problems = []
    if x86["model_sha256"] != arm["model_sha256"]:
        problems.append("the two runs used different model files")
    if x86["labels"] != arm["labels"]:
        problems.append("label lists differ")
    if set(a) != set(b):
        problems.append(f"image sets differ ({len(set(a) ^ set(b))} not in both)")
    per_image, max_diff, top1_same = [], 0.0, 0
    for key in sorted(set(a) & set(b)):
        pa = np.asarray(a[key]["probabilities"], dtype=np.float64)
        pb = np.asarray(b[key]["probabilities"], dtype=np.float64)
        d = float(np.max(np.abs(pa - pb))) if pa.shape == pb.shape else float("inf")
        same = a[key]["label"] == b[key]["label"]
        top1_same += same
        max_diff = max(max_diff, d)
        per_image.append({"image": key, "x86": a[key]["label"], arch: b[key]["label"],
                          "max_abs_diff": d})
    n = len(per_image)
    if top1_same != n:
        problems.append(f"top-1 differs on {n - top1_same} of {n} image(s)")
    if max_diff > tol:
        problems.append(f"max |dprob| {max_diff:.3g} exceeds the tolerance {tol_text}")
    if arm.get("machine") != arch:
        problems.append(f"the 'arm' run reports machine {arm.get('machine')!r}, not {arch}")
    if arm.get("tensorflow_imported") or x86.get("tensorflow_imported"):
        problems.append("TensorFlow was imported during a run")
    return {"passed": not problems, "problems": problems, "images": n, "top1_agreement": top1_same,
            "max_abs_prob_diff": max_diff, "exactly_equal": max_diff == 0.0, "tolerance": tol,
            "tolerance_rule": tol_text, "per_image": per_image}


def _g(x) -> str:
    return "-" if x is None else f"{x:.3g}"


def _meta(run: dict) -> dict:
    return {k: v for k, v in run.items() if k != "results"}


def cmd_compare(args) -> int:
    x86 = json.loads(Path(args.x86).read_text())
    arm = json.loads(Path(args.arm).read_text())
    arch = args.arch
    cmp = compare(x86, arm, arch)
    pytest_rec = json.loads(Path(args.pytest).read_text()) if args.pytest else None
    if pytest_rec is not None and args.pytest_log:
        pytest_rec["log_tail"] = Path(args.pytest_log).read_text().splitlines()
    out = {"model": x86["model"], "model_sha256": x86["model_sha256"],
           "when": time.strftime("%Y-%m-%d %H:%M:%S %z"),
           "emulation": (f"qemu-{'aarch64' if arch == 'aarch64' else 'arm'}-static -cpu {args.qemu_cpu} (user "
                         f"mode), /proc/cpuinfo bind-mounted as "
                         f"{'Cortex-A72' if arch == 'aarch64' else 'a Raspberry Pi 2 (Cortex-A7, 32-bit)'}; "
                         "latency numbers under emulation are meaningless"),
           "comparison": cmp, "x86": _meta(x86), arch: _meta(arm),
           "x86_results": x86["results"], f"{arch}_results": arm["results"]}
    if pytest_rec is not None:
        out["pytest_under_emulation"] = pytest_rec
    same = None
    if args.x86_same_interpreter:
        # the same interpreter (version) natively on x86: separates "ARM vs x86" from "LiteRT vs tflite-runtime"
        x86b = json.loads(Path(args.x86_same_interpreter).read_text())
        same = compare(x86b, arm, arch)
        same = {k: same[k] for k in ("passed", "problems", "images", "top1_agreement", "max_abs_prob_diff",
                                     "exactly_equal")}
        same["per_image_identical"] = sum(
            1 for a, b in zip(sorted(x86b["results"], key=lambda r: r["image"]),  # noqa: B905
                              sorted(arm["results"], key=lambda r: r["image"])) if a["probabilities"] == b["probabilities"])
        same["x86"] = _meta(x86b)
        out["x86_same_interpreter"] = same
    Path(args.json_out).write_text(json.dumps(out, indent=1) + "\n")

    pytest_ok = pytest_rec is None or pytest_rec.get("rc") == 0
    verdict = "PASS" if cmp["passed"] else "FAIL"
    if not cmp["passed"] and cmp["images"] and cmp["top1_agreement"] == cmp["images"] and \
            all("exceeds the tolerance" in p for p in cmp["problems"]):
        verdict = "FAIL on probabilities (top-1 identical on every image)"
    if not pytest_ok:
        verdict += " (but pytest under emulation failed)"
    lines = [
        f"# {arch} (emulated) vs x86: `{x86['model']}` - {verdict}",
        "",
        f"- when: {out['when']}; model sha256 `{x86['model_sha256'][:16]}...`, variant {x86.get('variant')}, "
        f"input {x86['input_size']} px {x86['input_dtype']}, output {x86['output_dtype']}",
        f"- {out['emulation']}",
        f"- images: {cmp['images']}; top-1 agreement {cmp['top1_agreement']}/{cmp['images']}; "
        f"max |dprob| {_g(cmp['max_abs_prob_diff'])} (tolerance: {cmp['tolerance_rule']})"
        + ("; outputs bit-identical" if cmp["exactly_equal"] else ""),
        "",
        "| | machine | python | numpy | backend | TF imported | load s | median predict ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in (("native", x86), ("emulated", arm)):
        lines.append(f"| {name} | {r['machine']} | {r['python']} | {r['numpy']} | {r['backend']} "
                     f"{r['backend_version']} | {r.get('tensorflow_imported', '-')} | {r.get('load_s', '-')} | "
                     f"{r.get('median_predict_ms', '-')} |")
    if same is not None:
        xb = same["x86"]
        lines += ["", f"Same interpreter natively on x86 ({xb['backend']} {xb['backend_version']}, numpy {xb['numpy']}) "
                      f"vs {arch}: top-1 agreement {same['top1_agreement']}/{same['images']}; max |dprob| "
                      f"{_g(same['max_abs_prob_diff'])}; {same['per_image_identical']}/{same['images']} images "
                      "bit-identical."]
    if cmp["problems"]:
        lines += ["", "Problems:"] + [f"- {p}" for p in cmp["problems"]]
    if pytest_rec is not None:
        summary = next((ln for ln in reversed(pytest_rec.get("log_tail", [])) if ln.strip()), "")
        lines += ["", f"pytest tests/test_runtime.py under emulation: exit {pytest_rec['rc']} in "
                      f"{pytest_rec['seconds']} s: `{summary.strip('= ')}`"]
    how = "" if arch == "aarch64" else f"--arch {arch} "
    lines += ["", f"Reproduce: `sudo benchmarks/arm/run_emulated.sh {how}MODEL.tflite IMAGE_OR_FOLDER...`", ""]
    Path(args.md_out).write_text("\n".join(lines))
    print("\n".join(lines))
    return 0 if cmp["passed"] and pytest_ok else 1


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="predict images, write JSON")
    r.add_argument("model")
    r.add_argument("images", nargs="+")
    r.add_argument("--out")
    r.add_argument("--threads", type=int, default=None)
    r.add_argument("--allow-tf", action="store_true", help="do not block TensorFlow imports")
    c = sub.add_parser("compare", help="compare an x86 and an aarch64 run")
    c.add_argument("x86")
    c.add_argument("arm")
    c.add_argument("--json-out", required=True)
    c.add_argument("--md-out", required=True)
    c.add_argument("--qemu-cpu", default="cortex-a72")
    c.add_argument("--arch", default="aarch64", choices=("aarch64", "armv7l"))
    c.add_argument("--x86-same-interpreter", help="a `run` JSON made on x86 with the ARM run's interpreter")
    c.add_argument("--pytest")
    c.add_argument("--pytest-log")
    args = ap.parse_args(argv)
    return cmd_run(args) if args.cmd == "run" else cmd_compare(args)


if __name__ == "__main__":
    sys.exit(main())
