// wbc-edge cascade for Android: decide when the int8 file's answer is re-computed by the float file.
// A port of wbc_edge.calibration.apply_temperature + wbc_edge.runtime.classifier.margins (Python reference);
// tests/test_android_kotlin.py compiles this file with kotlinc and checks it against the reference.
// Pure Kotlin (no Android classes).  Numbers: wbc_model.json "cascade" (temperature, margin).
import kotlin.math.exp
import kotlin.math.ln
import kotlin.math.max

class Cascade(private val temperature: Double, private val margin: Double) {
    /** Temperature-scaled probabilities: softmax(ln(clip(p, 1e-4, 1)) / T), as the runtime's calibration. */
    fun calibrated(probs: FloatArray): DoubleArray {
        val z = DoubleArray(probs.size) { ln(max(probs[it].toDouble(), EPS).coerceAtMost(1.0)) / temperature }
        if (z.isEmpty()) return DoubleArray(0)
        var top = z[0]
        for (v in z) if (v > top) top = v   // a loop, not max()/maxOrNull(): both Kotlin 1.3 and 1.9 compile it
        val e = DoubleArray(z.size) { exp(z[it] - top) }
        val sum = e.sum()
        return DoubleArray(e.size) { e[it] / sum }
    }

    /** Calibrated top-1 minus top-2 probability (the top-1 itself for one class). */
    fun marginOf(probs: FloatArray): Double {
        val c = calibrated(probs).sortedDescending()
        return if (c.size > 1) c[0] - c[1] else if (c.size == 1) c[0] else 0.0
    }

    /** True: run this image again in the float file and use its probabilities instead. */
    fun needsFallback(probs: FloatArray): Boolean = marginOf(probs) < margin

    companion object {
        const val EPS = 1e-4
    }
}
