// wbc-edge unfamiliar-lab gate for Android: which cells, and which slides, lie far from the training labs.
// A port of wbc_edge.runtime.gate (LabGate.far / batch_verdict, Python reference); tests/test_android_kotlin.py
// compiles this file with kotlinc and checks it against the reference.  Pure Kotlin (no Android classes).
// Numbers: wbc_model.json "gate" (cut, val_median, batch_ratio, batch_min), copied from wbc_gate.json.
// The gate file wbc_gate.tflite takes the classifier's pixels as float32 0..255 (1, S, S, 3) and outputs
// (1, classes) squared Mahalanobis distances; an image's distance is their minimum (distanceOf).

class LabGate(private val cut: Double, private val valMedian: Double,
              private val batchRatio: Double, private val batchMin: Int) {

    /** One batch's verdict: "unfamiliar" = at least batchMin cells whose median distance exceeds
     *  batchRatio x the training lab's val median. */
    data class BatchVerdict(val n: Int, val medianRatio: Double, val unfamiliar: Boolean, val farShare: Double)

    /** The gate file's output for one image -> its distance (the nearest class). */
    fun distanceOf(output: FloatArray): Double {
        var m = Double.POSITIVE_INFINITY
        for (v in output) if (v.toDouble() < m) m = v.toDouble()
        return m
    }

    /** True: this cell is unlike the training labs' cells (beyond the cut that 95 % of val stays within). */
    fun isFar(distance: Double): Boolean = distance > cut

    /** One accept/refuse decision (as wbc_edge.runtime.gate.decide): "accept", or why not - "uncertain"
     *  (confidence below the model's abstain threshold), "unfamiliar-lab" (the cell's batch of >= batchMin
     *  cells is from an unfamiliar lab), "far" (a single cell, or a batch too small to judge, beyond the cut). */
    fun decide(confident: Boolean, distance: Double?, verdict: BatchVerdict?): String {
        if (!confident) return "uncertain"
        if (verdict != null && verdict.n >= batchMin) return if (verdict.unfamiliar) "unfamiliar-lab" else "accept"
        if (distance != null && distance > cut) return "far"
        return "accept"
    }

    /** The batch decision an app scanning a slide acts on ("check these cells with crossdomain, then adapt"). */
    fun batch(distances: DoubleArray): BatchVerdict {
        val n = distances.size
        if (n == 0) return BatchVerdict(0, 0.0, false, 0.0)
        val s = distances.sortedArray()
        val median = if (n % 2 == 1) s[n / 2] else (s[n / 2 - 1] + s[n / 2]) / 2.0   // as numpy.median
        val ratio = median / valMedian
        var far = 0
        for (d in distances) if (d > cut) far++
        return BatchVerdict(n, ratio, n >= batchMin && ratio > batchRatio, far.toDouble() / n)
    }
}
