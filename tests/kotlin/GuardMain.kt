// Test harness for wbc_edge/export/ScaleGuard.kt (tests/test_android_kotlin.py): reads images from a binary
// file (threshold, target, max_zoom, count, then per image: width, height, ARGB ints; big-endian), applies the
// guard, writes per image: zoom (double) and the guarded ARGB ints.
import java.io.DataInputStream
import java.io.DataOutputStream
import java.io.File

fun main(args: Array<String>) {
    val input = DataInputStream(File(args[0]).inputStream().buffered())
    val output = DataOutputStream(File(args[1]).outputStream().buffered())
    val guard = ScaleGuard(input.readDouble(), input.readDouble(), input.readDouble())
    repeat(input.readInt()) {
        val w = input.readInt()
        val h = input.readInt()
        val px = IntArray(w * h) { input.readInt() }
        val r = guard.apply(px, w, h)
        output.writeDouble(r.zoom)
        r.pixels.forEach { output.writeInt(it) }
    }
    output.close()
}
