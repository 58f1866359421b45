"""The README.md of the Android bundle: what the model takes and gives, and Kotlin to call it (MediaPipe Tasks
ImageClassifier, or the raw LiteRT Interpreter), filled in with the bundle's own numbers (wbc_model.json)."""

from __future__ import annotations

#: The bundle's file names (the README names them; wbc_edge.export.android writes and checks them).
MODEL_FILE = "wbc_int8.tflite"
LABELS_FILE = "labels.txt"
METADATA_FILE = "wbc_model.json"
GUARD_FILE = "ScaleGuard.kt"      # written when the model carries a scale guard
CASCADE_FILE = "Cascade.kt"        # written with a float fallback file (the cascade)
FALLBACK_FILE = "wbc_float16.tflite"
GATE_MODEL_FILE = "wbc_gate.tflite"   # the unfamiliar-lab gate (added by `wbc-edge export-gate --android`)
GATE_JSON_FILE = "wbc_gate.json"
GATE_KT_FILE = "LabGate.kt"


def _cascade_kotlin(meta: dict) -> tuple[str, str]:
    """(the cascade's fields, the statements after the int8 probabilities) in the raw-interpreter Kotlin."""
    c = meta.get("cascade")
    if not c:
        return "", ""
    fields = f"""
    // The cascade (wbc_model.json "cascade", {CASCADE_FILE}): a low-margin int8 answer is re-run in float.
    private val cascade = Cascade({float(c['temperature'])!r}, {float(c['margin'])!r})
    private val fallback = Interpreter(
        context.assets.openFd("{c['fallback_file']}").use {{ fd ->
            FileInputStream(fd.fileDescriptor).channel.map(
                FileChannel.MapMode.READ_ONLY, fd.startOffset, fd.declaredLength)
        }},
        Interpreter.Options().setNumThreads(4))
    private val floatInput = ByteBuffer.allocateDirect(size * size * 3 * 4).order(ByteOrder.nativeOrder())
    private val floatOutput = Array(1) {{ FloatArray(labels.size) }}"""
    body = """
        if (cascade.needsFallback(probs)) {   // float32 raw 0..255 in, probabilities out
            floatInput.rewind()
            input.rewind()
            while (input.hasRemaining()) floatInput.putFloat((input.get().toInt() and 0xFF).toFloat())
            floatInput.rewind()
            fallback.run(floatInput, floatOutput)
            floatOutput[0].copyInto(probs)
        }"""
    return fields, body


def _cascade_section(meta: dict) -> str:
    c = meta.get("cascade")
    if not c:
        return ""
    return f"""- Cascade: `{c['fallback_file']}` ({c['fallback_variant']}, {c['bytes']:,} bytes, float32 raw 0..255 in,
  probabilities out) and `{CASCADE_FILE}` (pure Kotlin; wbc-edge's tests check it against the Python runtime).
  When the int8 answer's calibrated top-1 minus top-2 probability (temperature {c['temperature']:g}) is below
  {c['margin']:g}, the code below runs the image again in the float file and returns its answer, as
  `wbc_edge.runtime.Classifier(..., fallback=...)` and `wbc-edge predict` do.  On another lab's images the
  int8 file alone disagrees with the float model far more often than on PBC; the cascade re-runs the few
  low-margin images (the share and latency per lab: wbc-edge's `benchmarks/cascade/`).  Drop both files and
  the marked lines to ship int8 alone.
"""


def _gate_section(meta: dict) -> str:
    g = meta.get("gate")
    if not g:
        return ""
    return f"""- Unfamiliar-lab gate: `{GATE_MODEL_FILE}` ({g['bytes']:,} bytes, float16 weights; float32 raw 0..255 in,
  the same pixels as the classifier; out: squared Mahalanobis distance to each class in the model's features)
  and `{GATE_KT_FILE}` (pure Kotlin; wbc-edge's tests check it against the Python runtime).  A cell is *far*
  when its distance exceeds {g['cut']:.4g} (95 % of the training lab's val cells are within); a slide of
  {g['batch_min']} or more cells comes from an **unfamiliar lab** when the median distance exceeds
  {g['batch_ratio']:.4g} x {g['val_median']:.4g}.  Then the answers are not to be trusted as on the training
  lab: check a labelled sample with `wbc-edge crossdomain`, then `wbc-edge adapt` and re-export.
  ```kotlin
  val gate = LabGate({float(g['cut'])!r}, {float(g['val_median'])!r}, {float(g['batch_ratio'])!r}, {int(g['batch_min'])})
  // per cell: gateInterpreter.run(floatInput, gateOut)  (floatInput as the cascade fills it, 1 x classes out)
  val d = gate.distanceOf(gateOut[0]); val far = gate.isFar(d)
  // per slide: val verdict = gate.batch(distances)   (verdict.unfamiliar: adapt before trusting any answer)
  // the one accept/refuse decision per cell ("accept", "uncertain", "unfamiliar-lab" or "far"), as
  // `wbc-edge predict --gate` makes it: confident = calibrated top-1 >= {float(g.get('abstain_threshold', 0.0))!r}
  val decision = gate.decide(confident, d, verdict)   // verdict = null for a single cell
  ```
"""


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
changed no top-1 label of the 224 px models).{_mediapipe_guard_note(meta)}

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


def _mediapipe_guard_note(meta: dict) -> str:
    if not meta.get("scale_guard"):
        return ""
    size = meta["input"]["shape"][1]
    return (f"\nThis path skips the scale guard.  To keep it, scale the bitmap to {size}x{size} yourself, get its "
            f"pixels and\ngive MediaPipe `Bitmap.createBitmap(guard.apply(pixels, {size}, {size}).pixels, {size}, "
            f"{size}, Bitmap.Config.ARGB_8888)`\n(`{GUARD_FILE}`; as in the raw-interpreter code below).")


def _guard_kotlin(meta: dict) -> tuple[str, str]:
    """(the guard's field, the expression for the pixels fed) in the raw-interpreter Kotlin."""
    g = meta.get("scale_guard")
    if not g:
        return "", "pixels"
    return (f"\n    private val guard = ScaleGuard({g['threshold']!r}, {g['target']!r}, {float(g['max_zoom'])!r})"
            f"   // wbc_model.json scale_guard ({GUARD_FILE})",
            "guard.apply(pixels, size, size).pixels")


def _scale_guard_section(meta: dict) -> str:
    g = meta.get("scale_guard")
    if not g:
        return ""
    return f"""- Scale guard: `{GUARD_FILE}` (pure Kotlin, in this folder; the raw-interpreter code below applies it, as
  `wbc_edge.runtime` and `wbc-edge predict` do; wbc-edge's tests check it gives the Python reference's zoom and
  pixels).  The model was trained on cells filling about a third of the crop; on much smaller cells (a lower
  magnification) it fails.  On the resized {meta['input']['shape'][1]}-px RGB image: score = (B - G) + (255 - G) / 2;
  background = median score of the 5 % border strip; nucleus colour = 99th percentile within 0.25 of the
  side from the centre; nucleus = pixels within 0.45 of the side from the centre whose score is above the
  midpoint of the two (at least 10 pixels).  d = 2 * sqrt(pixel count / pi) / side.  If d < {g['threshold']}
  magnify about the nucleus' centroid by min({g['max_zoom']:g}, {g['target']} / d) (bilinear; outside: the
  border's median colour) and classify that instead.  Images with d >= {g['threshold']} pass unchanged.
"""


def readme_text(meta: dict) -> str:
    size = meta["input"]["shape"][1]
    guard_field, fed = _guard_kotlin(meta)
    cascade_fields, cascade_body = _cascade_kotlin(meta)
    guard_file = f", `{GUARD_FILE}` (the scale guard)" if meta.get("scale_guard") else ""
    if meta.get("cascade"):
        guard_file += f", `{meta['cascade']['fallback_file']}` and `{CASCADE_FILE}` (the cascade)"
    if meta.get("gate"):
        guard_file += f", `{GATE_MODEL_FILE}`, `{GATE_JSON_FILE}` and `{GATE_KT_FILE}` (the unfamiliar-lab gate)"
    labels = ", ".join(meta["labels"])
    return f"""# White-blood-cell classifier for Android (wbc-edge)

Files: `{MODEL_FILE}` (LiteRT/TFLite flatbuffer, {meta['variant']}, {meta['bytes']:,} bytes,
sha256 `{meta['sha256']}`), `{LABELS_FILE}`, `{METADATA_FILE}` (the numbers below, machine-readable){guard_file}.

- Input: `{meta['input']['shape']}` {meta['input']['dtype']}, NHWC, **RGB**, raw pixel bytes 0..255
  (input scale {meta['input']['scale']:g}, zero point {meta['input']['zero_point']}).  uint8 because that is
  what an Android `Bitmap` holds: no float conversion and no normalisation on the device - the model
  computes x / 127.5 - 1 itself.
- Resize the whole cell image to {size}x{size} with bilinear filtering (no crop).  The reference pipeline
  (`wbc_edge.core.preprocess`, Pillow bilinear) antialiases when shrinking; `Bitmap.createScaledBitmap(..., true)`
  does not, so for large downscales pixels differ slightly - check a few known images on the device.
- Output: `{meta['output']['shape']}` {meta['output']['dtype']}; probability = (q - zero_point) * scale =
  (q - {meta['output']['zero_point']}) * {meta['output']['scale']:g}; labels in order: {labels}.
- The .tflite file also carries its contract (labels, input size, quantisation) in a zip appended to the
  flatbuffer (with `labels.txt`: the standard TFLite "associated files" layout); LiteRT ignores it.  Keep
  the file uncompressed in the APK (`androidResources {{ noCompress += "tflite" }}`) so it can be
  memory-mapped.
{_scale_guard_section(meta)}{_cascade_section(meta)}{_gate_section(meta)}
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
    private val output = Array(1) {{ ByteArray(labels.size) }}{guard_field}{cascade_fields}

    /** Returns (label, probability) of the most likely class. */
    fun classify(bitmap: Bitmap): Pair<String, Float> {{
        val argb = if (bitmap.config == Bitmap.Config.ARGB_8888) bitmap
                   else bitmap.copy(Bitmap.Config.ARGB_8888, false)
        val scaled = Bitmap.createScaledBitmap(argb, size, size, /* filter = bilinear */ true)
        scaled.getPixels(pixels, 0, size, 0, 0, size, size)
        input.rewind()
        for (p in {fed}) {{   // ARGB_8888 int -> R, G, B bytes, raw 0..255
            input.put(((p shr 16) and 0xFF).toByte())
            input.put(((p shr 8) and 0xFF).toByte())
            input.put((p and 0xFF).toByte())
        }}
        input.rewind()
        interpreter.run(input, output)
        val probs = FloatArray(labels.size) {{ i ->
            ((output[0][i].toInt() and 0xFF) - outZeroPoint) * outScale   // uint8 -> probability
        }}{cascade_body}
        val best = probs.indices.maxByOrNull {{ probs[it] }}!!
        return labels[best] to probs[best]
    }}

    fun close() = interpreter.close()
}}
```
"""
