"""Android bundle: the int8 model + labels + metadata + a Kotlin snippet, and a checker for such a bundle.

The Kotlin README text is `wbc_edge.export.android_readme`.

    android_assets/
      wbc_int8.tflite   uint8 in (raw RGB pixels, scale 1 / zero point 0), uint8 out; contract embedded
      labels.txt        one label per line, in output order
      wbc_model.json    input shape/dtype/quantisation, output dequantisation, labels, sha256, parity
      README.md         how to call it from Kotlin (LiteRT Interpreter)
      ScaleGuard.kt     the scale guard in Kotlin (only when the model carries one)
      wbc_float16.tflite, Cascade.kt   the cascade's float file and its decision in Kotlin (when exported)
      wbc_gate.tflite, wbc_gate.json, LabGate.kt   the unfamiliar-lab gate (`wbc-edge export-gate --android`)

TF-free: the checker uses the LiteRT interpreter through `wbc_edge.runtime` only.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ..core import atomic
from ..core.contract import ModelContract, read_contract
from ..core.errors import ModelFileError, WbcEdgeError, first_line
from ..core.preprocess import PREPROCESS_VERSION
from .android_readme import (CASCADE_FILE, FALLBACK_FILE, GATE_KT_FILE, GUARD_FILE, LABELS_FILE, METADATA_FILE,
                             MODEL_FILE, readme_text)
from .tensors import dtype_name, tensor_details

README_FILE = "README.md"
BUNDLE_FILES = (MODEL_FILE, LABELS_FILE, METADATA_FILE, README_FILE)
BUNDLE_FORMAT = 1


def cascade_source() -> bytes:
    """Cascade.kt as shipped in the package (a port of the runtime's cascade decision; tests/test_android_kotlin.py)."""
    return (Path(__file__).parent / CASCADE_FILE).read_bytes()


def guard_source() -> bytes:
    """ScaleGuard.kt as shipped in the package (a port of wbc_edge.core.scale_guard; tests/test_android_kotlin.py)."""
    return (Path(__file__).parent / GUARD_FILE).read_bytes()


def bundle_metadata(model_bytes: bytes, contract: ModelContract, input_details: dict, output_details: dict,
                    *, source_variant: str, parity: dict | None = None) -> dict:
    """The wbc_model.json content for `model_bytes` (the exact bytes written as wbc_int8.tflite)."""
    in_scale, in_zp = (float(v) for v in input_details["quantization"])
    out_scale, out_zp = (float(v) for v in output_details["quantization"])
    size = int(input_details["shape"][1])
    return {
        "format": BUNDLE_FORMAT,
        "model_file": MODEL_FILE,
        "sha256": hashlib.sha256(model_bytes).hexdigest(),
        "bytes": len(model_bytes),
        "variant": source_variant,
        "labels_file": LABELS_FILE,
        "labels": list(contract.labels),
        "input": {
            "shape": [int(d) for d in input_details["shape"]],
            "dtype": dtype_name(input_details["dtype"]),
            "layout": "NHWC",
            "channel_order": "RGB",
            "scale": in_scale,
            "zero_point": int(in_zp),
            "normalisation": "none on device: feed the raw 0..255 R,G,B bytes of the resized bitmap "
                             "(x / 127.5 - 1 happens inside the model)",
            "resize": f"bilinear to {size}x{size}, whole image (no crop)",
        },
        "output": {
            "shape": [int(d) for d in output_details["shape"]],
            "dtype": dtype_name(output_details["dtype"]),
            "scale": out_scale,
            "zero_point": int(out_zp),
            "dequantise": "probability[i] = (output[i] - zero_point) * scale  (uint8 read as 0..255)",
            "meaning": "softmax probabilities, one per label, in labels.txt order; argmax = prediction",
        },
        "preprocess_reference": PREPROCESS_VERSION,
        "scale_guard": contract.scale_guard,
        "tflite_metadata": _tflite_metadata_summary(model_bytes),
        "source_model_sha256": contract.source_model_sha256,
        "split_manifest_sha256": contract.split_manifest_sha256,
        "parity": parity,
    }


def _tflite_metadata_summary(model_bytes: bytes) -> dict | None:
    """The standard TFLite metadata summary of the model (None without it, or without `flatbuffers`)."""
    try:
        from .metadata_read import metadata_summary

        return metadata_summary(model_bytes)
    except ImportError:
        return None
    except Exception as exc:  # noqa: BLE001 - a runtime-only install without flatbuffers / model schema
        if isinstance(exc, WbcEdgeError) and "needs" in str(exc):
            return None
        raise


def bundle_metadata_refresh(bundle_dir: str | os.PathLike, model_bytes: bytes) -> bool:
    """After the bundle's model file was rewritten (e.g. `wbc-edge metadata add`): update wbc_model.json's
    sha256 / bytes / tflite_metadata and regenerate README.md, atomically.  True when anything changed."""
    d = Path(bundle_dir)
    path = d / METADATA_FILE
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelFileError(f"{path}: not valid JSON ({first_line(exc)})") from None
    new = json.loads(json.dumps(dict(meta, sha256=hashlib.sha256(model_bytes).hexdigest(), bytes=len(model_bytes),
                                     tflite_metadata=_tflite_metadata_summary(model_bytes))))  # as the file has it
    readme = readme_text(new)
    old_readme = (d / README_FILE).read_text(encoding="utf-8") if (d / README_FILE).is_file() else None
    guard = guard_source() if new.get("scale_guard") else None
    old_guard = (d / GUARD_FILE).read_bytes() if (d / GUARD_FILE).is_file() else None
    cascade_ok = (not new.get("cascade") or (d / CASCADE_FILE).is_file()) and \
        (not new.get("gate") or (d / GATE_KT_FILE).is_file())
    if new == meta and readme == old_readme and guard in (None, old_guard) and cascade_ok:
        return False
    atomic.write_bytes(path, (json.dumps(new, indent=2) + "\n").encode("utf-8"))
    atomic.write_bytes(d / README_FILE, readme.encode("utf-8"))
    if guard is not None:
        atomic.write_bytes(d / GUARD_FILE, guard)
    if new.get("cascade"):
        atomic.write_bytes(d / CASCADE_FILE, cascade_source())
    if new.get("gate"):
        from .android_gate import gate_kotlin_source

        atomic.write_bytes(d / GATE_KT_FILE, gate_kotlin_source())
    return True


def write_bundle(out_dir: str | os.PathLike, model_bytes: bytes, metadata: dict,
                 fallback_bytes: bytes | None = None) -> dict[str, str]:
    """Write the bundle files atomically (four, ScaleGuard.kt with a guard, the float file and Cascade.kt with
    a cascade); returns {file name: sha256}."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {
        MODEL_FILE: model_bytes,
        LABELS_FILE: ("\n".join(metadata["labels"]) + "\n").encode("utf-8"),
        METADATA_FILE: (json.dumps(metadata, indent=2) + "\n").encode("utf-8"),
        README_FILE: readme_text(metadata).encode("utf-8"),
    }
    if metadata.get("scale_guard"):
        files[GUARD_FILE] = guard_source()
    if metadata.get("cascade"):
        if fallback_bytes is None:
            raise WbcEdgeError(f"{out}: the bundle metadata names a cascade but no fallback file was given")
        files[metadata["cascade"]["fallback_file"]] = fallback_bytes
        files[CASCADE_FILE] = cascade_source()
    for name, data in files.items():
        atomic.write_bytes(out / name, data)
    return {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}


def check_android_bundle(bundle_dir: str | os.PathLike) -> list[str]:
    """Problems with an Android bundle (empty list = good).

    Checks: all files present; metadata parses; sha256/bytes of the model match the metadata; the model
    loads; labels.txt == metadata labels == embedded contract labels; label count == model output size;
    input shape, dtypes and quantisation of the model == metadata; uint8 input takes raw pixels.
    """
    d = Path(bundle_dir)
    problems: list[str] = []
    if not d.is_dir():
        return [f"{d}: bundle directory not found"]
    missing = [n for n in BUNDLE_FILES if not (d / n).is_file()]
    problems += [f"{n}: missing" for n in missing]
    meta = None
    if METADATA_FILE not in missing:
        try:
            meta = json.loads((d / METADATA_FILE).read_text(encoding="utf-8"))
            if not isinstance(meta, dict):
                raise ValueError("not a JSON object")
        except (ValueError, UnicodeDecodeError) as exc:
            problems.append(f"{METADATA_FILE}: not valid JSON ({exc})")
            meta = None
    if meta is not None and meta.get("scale_guard") and not (d / GUARD_FILE).is_file():
        problems.append(f"{GUARD_FILE}: missing ({METADATA_FILE} has a scale_guard; the README's Kotlin uses it)")
    if meta is not None and meta.get("cascade"):
        problems += _cascade_problems(d, meta)
    if meta is not None and meta.get("gate"):
        from .android_gate import gate_problems

        problems += gate_problems(d, meta)
    labels_txt = None
    if LABELS_FILE not in missing:
        try:
            text = (d / LABELS_FILE).read_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            problems.append(f"{LABELS_FILE}: not UTF-8 text (byte {exc.start}: {exc.reason})")
        else:
            labels_txt = [x.strip() for x in text.splitlines() if x.strip()]
            if len(set(labels_txt)) != len(labels_txt):
                problems.append(f"{LABELS_FILE}: duplicate labels")
    if meta is not None and labels_txt is not None and labels_txt != list(meta.get("labels", [])):
        problems.append(f"{LABELS_FILE} ({len(labels_txt)} labels) differs from {METADATA_FILE} labels "
                        f"({len(meta.get('labels', []))})")
    if MODEL_FILE in missing:
        return problems
    data = (d / MODEL_FILE).read_bytes()
    if meta is not None:
        sha = hashlib.sha256(data).hexdigest()
        if meta.get("sha256") != sha:
            problems.append(f"{MODEL_FILE}: sha256 {sha[:12]}... does not match {METADATA_FILE} "
                            f"({str(meta.get('sha256'))[:12]}...)")
        if meta.get("bytes") is not None and meta.get("bytes") != len(data):
            problems.append(f"{MODEL_FILE}: {len(data)} bytes, {METADATA_FILE} says {meta.get('bytes')}")
    try:
        contract = read_contract(data)
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        problems.append(f"{MODEL_FILE}: {exc}")
        return problems
    if contract is None:
        problems.append(f"{MODEL_FILE}: no embedded wbc-edge contract")
    try:
        inp, out = tensor_details(d / MODEL_FILE)
    except Exception as exc:  # noqa: BLE001
        problems.append(f"{MODEL_FILE}: cannot be loaded by the interpreter ({first_line(exc)})")
        return problems
    num_out = int(out["shape"][-1])
    for what, labels in (("labels.txt", labels_txt),
                         (METADATA_FILE, None if meta is None else meta.get("labels")),
                         ("embedded contract", None if contract is None else contract.labels)):
        if labels is not None and len(labels) != num_out:
            problems.append(f"{what}: {len(labels)} labels but the model outputs {num_out} values")
    if contract is not None and labels_txt is not None and list(contract.labels) != labels_txt:
        problems.append(f"{LABELS_FILE} differs from the labels embedded in {MODEL_FILE}")
    if meta is not None:
        problems += _tensor_problems(meta, inp, out)
    if dtype_name(inp["dtype"]) != "uint8" or tuple(inp["quantization"]) != (1.0, 0):
        problems.append(f"input is {dtype_name(inp['dtype'])} with quantisation "
                        f"{tuple(inp['quantization'])}; the bundle promises raw uint8 pixels (scale 1.0, "
                        "zero point 0)")
    if contract is not None and int(contract.input_size) != int(inp["shape"][1]):
        problems.append(f"embedded contract input_size {contract.input_size} != model input "
                        f"{list(inp['shape'])}")
    return problems


def _tensor_problems(meta: dict, inp: dict, out: dict) -> list[str]:
    """The model's input/output shapes, dtypes and quantisation against what wbc_model.json tells the app."""
    problems: list[str] = []
    mi, mo = meta.get("input", {}), meta.get("output", {})
    shape = [int(x) for x in inp["shape"]]
    if mi.get("shape") != shape:
        problems.append(f"input shape: model {shape}, {METADATA_FILE} {mi.get('shape')}")
    if mo.get("shape") != [int(x) for x in out["shape"]]:
        problems.append(f"output shape: model {[int(x) for x in out['shape']]}, {METADATA_FILE} "
                        f"{mo.get('shape')}")
    for what, m, det in (("input", mi, inp), ("output", mo, out)):
        if m.get("dtype") != dtype_name(det["dtype"]):
            problems.append(f"{what} dtype: model {dtype_name(det['dtype'])}, {METADATA_FILE} "
                            f"{m.get('dtype')}")
        scale, zp = det["quantization"]
        if m.get("scale") is None or abs(float(m["scale"]) - float(scale)) > 1e-9 * max(1.0, abs(scale)) \
                or m.get("zero_point") != int(zp):
            problems.append(f"{what} quantisation: model ({float(scale):g}, {int(zp)}), {METADATA_FILE} "
                            f"({m.get('scale')}, {m.get('zero_point')})")
    return problems


def _cascade_problems(d: Path, meta: dict) -> list[str]:
    c, out = meta["cascade"], []
    if not (d / CASCADE_FILE).is_file():
        out.append(f"{CASCADE_FILE}: missing ({METADATA_FILE} has a cascade; the README's Kotlin uses it)")
    fb = d / str(c.get("fallback_file", ""))
    if not fb.is_file():
        return out + [f"{c.get('fallback_file')}: missing ({METADATA_FILE} names it as the cascade's float file)"]
    data = fb.read_bytes()
    if hashlib.sha256(data).hexdigest() != c.get("sha256"):
        out.append(f"{fb.name}: sha256 differs from {METADATA_FILE} cascade.sha256")
    fc = read_contract(data)
    if fc is None or list(fc.labels) != list(meta.get("labels", [])):
        out.append(f"{fb.name}: its embedded labels differ from {METADATA_FILE}'s")
    elif fc.variant not in ("float16", "float32") or abs(float(fc.temperature or 1.0) - float(c["temperature"])) > 1e-9:
        out.append(f"{fb.name}: not a float file of this model (variant {fc.variant}, temperature {fc.temperature})")
    return out


def cascade_metadata(fallback_bytes: bytes, variant: str, temperature: float, margin: float) -> dict:
    """wbc_model.json's "cascade": which float file re-runs a low-margin image, and the decision's numbers."""
    return {"fallback_file": FALLBACK_FILE if variant == "float16" else "wbc_float32.tflite",
            "fallback_variant": variant, "sha256": hashlib.sha256(fallback_bytes).hexdigest(),
            "bytes": len(fallback_bytes), "temperature": float(temperature), "margin": float(margin),
            "decision": "calibrated = softmax(ln(clip(p, 1e-4, 1)) / temperature); re-run in the float file when "
                        "calibrated top-1 - top-2 < margin, and use its probabilities"}


def write_android_bundle(bundle_dir: Path, specs, entries: list[dict], files: dict[str, Path], say) -> dict:
    """Write the bundle from the best Android-capable variant (spec `android`) that passed, by parity (ties:
    the `recommended` one); returns the manifest's `android` record."""
    allowed = {s.name for s in specs if s.android}
    recommended = {s.name for s in specs if s.recommended}
    candidates = [e for e in entries if e["variant"] in allowed and e["status"] == "ok" and "parity" in e]
    if not candidates:
        say("Android bundle not written: no int8 variant passed its checks")
        return {"status": "skipped", "reason": "no int8 variant passed its checks", "dir": str(bundle_dir)}

    def key(e):
        p = e["parity"]
        return (p["agreement_pct"], p["delta_accuracy_pp"], -p["mean_abs_dprob"], e["variant"] in recommended)

    best = max(candidates, key=key)
    data = files[best["variant"]].read_bytes()
    in_det, out_det = tensor_details(data)
    contract = read_contract(data)
    meta = bundle_metadata(data, contract, in_det, out_det, source_variant=best["variant"], parity=best["parity"])
    fallback = None
    ok = {e["variant"] for e in entries if e["status"] == "ok"}
    fb_variant = next((v for v in ("float16", "float32") if v in ok and v in files), None)
    if fb_variant is not None:
        from ..runtime.classifier import DEFAULT_FALLBACK_MARGIN

        fallback = files[fb_variant].read_bytes()
        meta["cascade"] = cascade_metadata(fallback, fb_variant, contract.temperature or 1.0, DEFAULT_FALLBACK_MARGIN)
    else:
        say("Android bundle: no float16/float32 file exported, so no cascade (export --float16 to add it)")
    shas = write_bundle(bundle_dir, data, meta, fallback)
    problems = check_android_bundle(bundle_dir)
    if problems:  # pragma: no cover - would be a bug in the writer
        raise WbcEdgeError(f"{bundle_dir}: Android bundle check failed: {'; '.join(problems)}")
    say(f"Android bundle: {bundle_dir} (from {best['variant']}; {', '.join(shas)})")
    return {"status": "ok", "dir": str(bundle_dir), "source_variant": best["variant"], "files": shas}
