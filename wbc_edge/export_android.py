"""Android bundle: the int8 model + labels + metadata + a Kotlin snippet, and a checker for such a bundle.

    android_assets/
      wbc_int8.tflite   uint8 in (raw RGB pixels, scale 1 / zero point 0), uint8 out; contract embedded
      labels.txt        one label per line, in output order
      wbc_model.json    input shape/dtype/quantisation, output dequantisation, labels, sha256, parity
      README.md         how to call it from Kotlin (LiteRT Interpreter)

TF-free: the checker uses the LiteRT interpreter through `wbc_edge.runtime` only.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from . import atomic
from .contract import ModelContract, read_contract
from .errors import first_line
from .preprocess import PREPROCESS_VERSION

MODEL_FILE = "wbc_int8.tflite"
LABELS_FILE = "labels.txt"
METADATA_FILE = "wbc_model.json"
README_FILE = "README.md"
BUNDLE_FILES = (MODEL_FILE, LABELS_FILE, METADATA_FILE, README_FILE)
BUNDLE_FORMAT = 1


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
            "dtype": _dtype_name(input_details["dtype"]),
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
            "dtype": _dtype_name(output_details["dtype"]),
            "scale": out_scale,
            "zero_point": int(out_zp),
            "dequantise": "probability[i] = (output[i] - zero_point) * scale  (uint8 read as 0..255)",
            "meaning": "softmax probabilities, one per label, in labels.txt order; argmax = prediction",
        },
        "preprocess_reference": PREPROCESS_VERSION,
        "tflite_metadata": _tflite_metadata_summary(model_bytes),
        "source_model_sha256": contract.source_model_sha256,
        "split_manifest_sha256": contract.split_manifest_sha256,
        "parity": parity,
    }


def _tflite_metadata_summary(model_bytes: bytes) -> dict | None:
    """The standard TFLite metadata summary of the model (None without it, or without `flatbuffers`)."""
    try:
        from .tflite_metadata import metadata_summary

        return metadata_summary(model_bytes)
    except ImportError:
        return None
    except Exception as exc:  # noqa: BLE001 - a runtime-only install without flatbuffers / model schema
        from .errors import WbcEdgeError

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
        from .errors import ModelFileError

        raise ModelFileError(f"{path}: not valid JSON ({first_line(exc)})") from None
    new = dict(meta, sha256=hashlib.sha256(model_bytes).hexdigest(), bytes=len(model_bytes),
               tflite_metadata=_tflite_metadata_summary(model_bytes))
    readme = readme_text(new)
    old_readme = (d / README_FILE).read_text(encoding="utf-8") if (d / README_FILE).is_file() else None
    if new == meta and readme == old_readme:
        return False
    atomic.write_bytes(path, (json.dumps(new, indent=2) + "\n").encode("utf-8"))
    atomic.write_bytes(d / README_FILE, readme.encode("utf-8"))
    return True


def _mediapipe_section(meta: dict) -> str:
    size = meta["input"]["shape"][1]
    if meta.get("tflite_metadata"):
        state = (f"`{MODEL_FILE}` carries the standard TFLite metadata (`TFLITE_METADATA`: RGB image input\n"
                 "with NormalizationOptions mean 0 / std 1 = raw pixels, `labels.txt` as the output's\n"
                 "TENSOR_AXIS_LABELS file), so MediaPipe returns class **names** and needs no other file.")
    else:
        state = (f"**This `{MODEL_FILE}` has no standard TFLite metadata yet** (it predates it): MediaPipe would\n"
                 "return no class names. Add it first: `wbc-edge metadata add android_assets/"
                 f"{MODEL_FILE}`\n(or re-export), then check with `wbc-edge metadata show`.")
    return f"""## The short path: MediaPipe Tasks `ImageClassifier`

{state}
MediaPipe scales the bitmap to {size}x{size} itself (bilinear, no antialiasing), which differs slightly from
the reference resize; `wbc-edge bench --client mediapipe` measures by how much (on the 40 PBC samples it
changed no top-1 label of the 224 px models).

```kotlin
// build.gradle.kts: implementation("com.google.mediapipe:tasks-vision:latest.release")  (pin the one you test)
import android.content.Context
import android.graphics.Bitmap
import com.google.mediapipe.framework.image.BitmapImageBuilder
import com.google.mediapipe.tasks.core.BaseOptions
import com.google.mediapipe.tasks.vision.core.RunningMode
import com.google.mediapipe.tasks.vision.imageclassifier.ImageClassifier

class WbcMediaPipeClassifier(context: Context) {{
    private val classifier = ImageClassifier.createFromOptions(context,
        ImageClassifier.ImageClassifierOptions.builder()
            .setBaseOptions(BaseOptions.builder().setModelAssetPath("{MODEL_FILE}").build())
            .setRunningMode(RunningMode.IMAGE)
            .setMaxResults(3)                      // top 3, highest score first
            .build())

    /** Returns (label, probability) of the most likely class. */
    fun classify(bitmap: Bitmap): Pair<String, Float> {{
        val argb = if (bitmap.config == Bitmap.Config.ARGB_8888) bitmap
                   else bitmap.copy(Bitmap.Config.ARGB_8888, false)
        val result = classifier.classify(BitmapImageBuilder(argb).build())
        val best = result.classificationResult().classifications()[0].categories()[0]
        return best.categoryName() to best.score()   // name from labels.txt inside the model
    }}

    fun close() = classifier.close()
}}
```

## The raw interpreter (LiteRT), full control of the resize
"""


def readme_text(meta: dict) -> str:
    size = meta["input"]["shape"][1]
    labels = ", ".join(meta["labels"])
    return f"""# White-blood-cell classifier for Android (wbc-edge)

Files: `{MODEL_FILE}` (LiteRT/TFLite flatbuffer, {meta['variant']}, {meta['bytes']:,} bytes,
sha256 `{meta['sha256']}`), `{LABELS_FILE}`, `{METADATA_FILE}` (the numbers below, machine-readable).

- Input: `{meta['input']['shape']}` {meta['input']['dtype']}, NHWC, **RGB**, raw pixel bytes 0..255
  (input scale {meta['input']['scale']:g}, zero point {meta['input']['zero_point']}).  uint8 because that is
  what an Android `Bitmap` holds: no float conversion and no normalisation on the device - the model
  computes x / 127.5 - 1 itself.
- Resize the whole cell image to {size}x{size} with bilinear filtering (no crop).  The reference pipeline
  (`wbc_edge.preprocess`, Pillow bilinear) antialiases when shrinking; `Bitmap.createScaledBitmap(..., true)`
  does not, so for large downscales pixels differ slightly - check a few known images on the device.
- Output: `{meta['output']['shape']}` {meta['output']['dtype']}; probability = (q - zero_point) * scale =
  (q - {meta['output']['zero_point']}) * {meta['output']['scale']:g}; labels in order: {labels}.
- The .tflite file also carries its contract (labels, input size, quantisation) in a zip appended to the
  flatbuffer (with `labels.txt`: the standard TFLite "associated files" layout); LiteRT ignores it.  Keep
  the file uncompressed in the APK (`androidResources {{ noCompress += "tflite" }}`) so it can be
  memory-mapped.

{_mediapipe_section(meta)}
```kotlin
// build.gradle.kts: implementation("com.google.ai.edge.litert:litert:1.0.1")
//   (the same API as the older org.tensorflow:tensorflow-lite artifact)
import android.content.Context
import android.graphics.Bitmap
import org.tensorflow.lite.Interpreter
import java.io.FileInputStream
import java.nio.ByteBuffer
import java.nio.ByteOrder
import java.nio.channels.FileChannel

class WbcClassifier(context: Context) {{
    private val size = {size}                       // wbc_model.json input.shape[1]
    private val outScale = {meta['output']['scale']!r}f           // output.scale
    private val outZeroPoint = {meta['output']['zero_point']}                // output.zero_point
    val labels: List<String> = context.assets.open("{LABELS_FILE}").bufferedReader()
        .readLines().filter {{ it.isNotBlank() }}
    private val interpreter = Interpreter(
        context.assets.openFd("{MODEL_FILE}").use {{ fd ->
            FileInputStream(fd.fileDescriptor).channel.map(
                FileChannel.MapMode.READ_ONLY, fd.startOffset, fd.declaredLength)
        }},
        Interpreter.Options().setNumThreads(4))
    private val input = ByteBuffer.allocateDirect(size * size * 3).order(ByteOrder.nativeOrder())
    private val pixels = IntArray(size * size)
    private val output = Array(1) {{ ByteArray(labels.size) }}

    /** Returns (label, probability) of the most likely class. */
    fun classify(bitmap: Bitmap): Pair<String, Float> {{
        val argb = if (bitmap.config == Bitmap.Config.ARGB_8888) bitmap
                   else bitmap.copy(Bitmap.Config.ARGB_8888, false)
        val scaled = Bitmap.createScaledBitmap(argb, size, size, /* filter = bilinear */ true)
        scaled.getPixels(pixels, 0, size, 0, 0, size, size)
        input.rewind()
        for (p in pixels) {{                         // ARGB_8888 int -> R, G, B bytes, raw 0..255
            input.put(((p shr 16) and 0xFF).toByte())
            input.put(((p shr 8) and 0xFF).toByte())
            input.put((p and 0xFF).toByte())
        }}
        input.rewind()
        interpreter.run(input, output)
        val probs = FloatArray(labels.size) {{ i ->
            ((output[0][i].toInt() and 0xFF) - outZeroPoint) * outScale   // uint8 -> probability
        }}
        val best = probs.indices.maxByOrNull {{ probs[it] }}!!
        return labels[best] to probs[best]
    }}

    fun close() = interpreter.close()
}}
```
"""


def write_bundle(out_dir: str | os.PathLike, model_bytes: bytes, metadata: dict) -> dict[str, str]:
    """Write the four bundle files atomically; returns {file name: sha256}."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {
        MODEL_FILE: model_bytes,
        LABELS_FILE: ("\n".join(metadata["labels"]) + "\n").encode("utf-8"),
        METADATA_FILE: (json.dumps(metadata, indent=2) + "\n").encode("utf-8"),
        README_FILE: readme_text(metadata).encode("utf-8"),
    }
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
    labels_txt = None
    if LABELS_FILE not in missing:
        text = (d / LABELS_FILE).read_text(encoding="utf-8")
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
        mi, mo = meta.get("input", {}), meta.get("output", {})
        shape = [int(x) for x in inp["shape"]]
        if mi.get("shape") != shape:
            problems.append(f"input shape: model {shape}, {METADATA_FILE} {mi.get('shape')}")
        if mo.get("shape") != [int(x) for x in out["shape"]]:
            problems.append(f"output shape: model {[int(x) for x in out['shape']]}, {METADATA_FILE} "
                            f"{mo.get('shape')}")
        for what, m, det in (("input", mi, inp), ("output", mo, out)):
            if m.get("dtype") != _dtype_name(det["dtype"]):
                problems.append(f"{what} dtype: model {_dtype_name(det['dtype'])}, {METADATA_FILE} "
                                f"{m.get('dtype')}")
            scale, zp = det["quantization"]
            if m.get("scale") is None or abs(float(m["scale"]) - float(scale)) > 1e-9 * max(1.0, abs(scale)) \
                    or m.get("zero_point") != int(zp):
                problems.append(f"{what} quantisation: model ({float(scale):g}, {int(zp)}), {METADATA_FILE} "
                                f"({m.get('scale')}, {m.get('zero_point')})")
    if _dtype_name(inp["dtype"]) != "uint8" or tuple(inp["quantization"]) != (1.0, 0):
        problems.append(f"input is {_dtype_name(inp['dtype'])} with quantisation "
                        f"{tuple(inp['quantization'])}; the bundle promises raw uint8 pixels (scale 1.0, "
                        "zero point 0)")
    if contract is not None and int(contract.input_size) != int(inp["shape"][1]):
        problems.append(f"embedded contract input_size {contract.input_size} != model input "
                        f"{list(inp['shape'])}")
    return problems


def tensor_details(model: bytes | str | os.PathLike) -> tuple[dict, dict]:
    """(input details, output details) of a one-input, one-output .tflite model (bytes or a path)."""
    from .runtime import load_backend

    backend = load_backend()
    if isinstance(model, (bytes, bytearray)):
        interp = backend.interpreter_cls(model_content=bytes(model))
    else:
        interp = backend.interpreter_cls(model_path=str(model))
    interp.allocate_tensors()
    ins, outs = interp.get_input_details(), interp.get_output_details()
    if len(ins) != 1 or len(outs) != 1:
        raise ValueError(f"expected one input and one output, got {len(ins)} and {len(outs)}")
    return ins[0], outs[0]


def _dtype_name(dtype) -> str:
    import numpy as np

    return np.dtype(dtype).name
