// ScaleGuard.kt - the wbc-edge scale guard (method "nucleus-1"), a line-by-line port of wbc_edge/scale_guard.py.
//
// Why: the model was trained on cells that fill about a third of the crop.  On a much smaller cell (a lab
// imaging at lower magnification) it fails; this guard finds the stained nucleus and, when it is smaller than
// almost every training nucleus, magnifies the image about it before classification.  It never zooms out, and
// most images pass unchanged.  Parameters: "scale_guard" in wbc_model.json (threshold, target, max_zoom).
//
// Pure Kotlin, no Android classes: it works on the ARGB_8888 IntArray that Bitmap.getPixels fills, after the
// resize to the model's input size, so it can be unit-tested on a JVM.  wbc-edge's tests run this file against
// the Python reference (the same zoom, and the same pixels, on real cells).
// Drop it into your app's source set and add your package line.

class ScaleGuard(val threshold: Double, val target: Double, val maxZoom: Double = 2.5) {
    init {
        require(threshold > 0.0 && threshold <= target && target < 1.0 && maxZoom >= 1.0 && maxZoom <= 4.0) {
            "scale guard needs 0 < threshold <= target < 1 and 1 <= maxZoom <= 4"
        }
    }

    /** `pixels`: what to feed the model (the input array itself when `zoom` is 1.0). */
    class Result(val pixels: IntArray, val zoom: Double)

    /** Guard one resized image: `argb` is width * height ARGB_8888 pixels, row by row. */
    fun apply(argb: IntArray, width: Int, height: Int): Result {
        require(argb.size == width * height) { "expected ${width * height} pixels, got ${argb.size}" }
        val found = nucleus(argb, width, height) ?: return Result(argb, 1.0)
        val fraction = found[2] / minOf(width, height)
        if (fraction >= threshold) return Result(argb, 1.0)
        val zoom = minOf(maxZoom, target / maxOf(fraction, 1e-6))
        return Result(magnify(argb, width, height, zoom, found[0], found[1]), zoom)
    }

    companion object {
        private const val BORDER = 0.05  // border strip (fraction of the side) whose median is the background
        private const val INNER = 0.25   // radius (fraction of the side) in which the nucleus' colour is sampled
        private const val OUTER = 0.45   // the nucleus is searched within this radius of the centre
        private const val PEAK = 99.0    // percentile of the stain score near the centre = the nucleus' colour

        /** (x, y, equivalent diameter) of the stained nucleus in pixels, or null when none is found. */
        fun nucleus(argb: IntArray, width: Int, height: Int): DoubleArray? {
            // Stain score (B - G) + (255 - G) / 2: nuclei are dark (low green) and blue-purple.
            val score = DoubleArray(argb.size) { i ->
                val g = (argb[i] shr 8) and 0xFF
                val b = argb[i] and 0xFF
                (b - g) + 0.5 * (255 - g)
            }
            val bg = median(borderValues(width, height) { score[it] })
            val inner = ArrayList<Double>()
            val outer = BooleanArray(argb.size)
            for (y in 0 until height) for (x in 0 until width) {
                val r = Math.hypot((y - height / 2.0) / height, (x - width / 2.0) / width)
                if (r < INNER) inner.add(score[y * width + x])
                outer[y * width + x] = r < OUTER
            }
            val fg = percentile(inner.toDoubleArray(), PEAK)
            val cut = bg + 0.5 * (fg - bg)
            var count = 0L
            var sx = 0L
            var sy = 0L
            for (i in score.indices) if (outer[i] && score[i] > cut) {
                count++; sx += i % width; sy += i / width
            }
            if (fg <= bg || count < 10) return null
            return doubleArrayOf(sx.toDouble() / count, sy.toDouble() / count, 2 * Math.sqrt(count / Math.PI))
        }

        /** Magnify by `zoom` about (cx, cy), bilinear as Pillow's affine transform; outside: the border's
         *  median colour. */
        fun magnify(argb: IntArray, width: Int, height: Int, zoom: Double, cx: Double, cy: Double): IntArray {
            val fill = IntArray(3) { c ->
                median(borderValues(width, height) { ((argb[it] shr (16 - 8 * c)) and 0xFF).toDouble() }).toInt()
            }
            val fillArgb = (0xFF shl 24) or (fill[0] shl 16) or (fill[1] shl 8) or fill[2]
            val inv = 1.0 / zoom
            val a2 = cx - inv * width / 2
            val a5 = cy - inv * height / 2
            val out = IntArray(argb.size)
            for (oy in 0 until height) for (ox in 0 until width) {
                var xin = inv * (ox + 0.5) + a2   // Pillow: a0 * (x + 0.5) + a1 * (y + 0.5) + a2, a1 = 0
                var yin = inv * (oy + 0.5) + a5
                if (xin < 0.0 || xin >= width || yin < 0.0 || yin >= height) {
                    out[oy * width + ox] = fillArgb
                    continue
                }
                xin -= 0.5
                yin -= 0.5
                val x = Math.floor(xin).toInt()
                val y = Math.floor(yin).toInt()
                val dx = xin - x
                val dy = yin - y
                val x0 = clip(x, width)
                val x1 = clip(x + 1, width)
                val row0 = clip(y, height) * width
                val hasRow1 = y + 1 in 0 until height
                var pixel = 0xFF shl 24
                for (c in 0..2) {
                    val shift = 16 - 8 * c
                    val p00 = (argb[row0 + x0] shr shift) and 0xFF
                    val p01 = (argb[row0 + x1] shr shift) and 0xFF
                    val v1 = p00 + (p01 - p00) * dx
                    val v2 = if (hasRow1) {
                        val p10 = (argb[(y + 1) * width + x0] shr shift) and 0xFF
                        val p11 = (argb[(y + 1) * width + x1] shr shift) and 0xFF
                        p10 + (p11 - p10) * dx
                    } else v1
                    pixel = pixel or ((v1 + (v2 - v1) * dy).toInt() shl shift)
                }
                out[oy * width + ox] = pixel
            }
            return out
        }

        private fun clip(v: Int, size: Int) = if (v < 0) 0 else if (v < size) v else size - 1

        /** Values of the outer strip (BORDER of the side): top and bottom rows, left and right columns. */
        private fun borderValues(width: Int, height: Int, value: (Int) -> Double): DoubleArray {
            val bw = maxOf(1, Math.rint(BORDER * minOf(width, height)).toInt())
            val out = ArrayList<Double>()
            for (y in 0 until bw) for (x in 0 until width) out.add(value(y * width + x))
            for (y in height - bw until height) for (x in 0 until width) out.add(value(y * width + x))
            for (y in 0 until height) for (x in 0 until bw) out.add(value(y * width + x))
            for (y in 0 until height) for (x in width - bw until width) out.add(value(y * width + x))
            return out.toDoubleArray()
        }

        private fun median(v: DoubleArray): Double {
            val s = v.sortedArray()
            val m = s.size / 2
            return if (s.size % 2 == 1) s[m] else (s[m - 1] + s[m]) / 2
        }

        /** numpy's default ("linear") percentile. */
        private fun percentile(v: DoubleArray, q: Double): Double {
            val s = v.sortedArray()
            val pos = q / 100.0 * (s.size - 1)
            val lo = Math.floor(pos).toInt()
            val hi = minOf(lo + 1, s.size - 1)
            val t = pos - lo
            val d = s[hi] - s[lo]
            return if (t < 0.5) s[lo] + d * t else s[hi] - d * (1 - t)
        }
    }
}
