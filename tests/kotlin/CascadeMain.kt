// Test harness for wbc_edge/export/Cascade.kt (tests/test_android_kotlin.py): reads temperature, margin, count,
// classes, then the probability vectors (floats; big-endian); writes per vector its margin (double) and the
// decision (1 = fall back).
import java.io.DataInputStream
import java.io.DataOutputStream
import java.io.File

fun main(args: Array<String>) {
    val input = DataInputStream(File(args[0]).inputStream().buffered())
    val output = DataOutputStream(File(args[1]).outputStream().buffered())
    val cascade = Cascade(input.readDouble(), input.readDouble())
    val n = input.readInt()
    val classes = input.readInt()
    repeat(n) {
        val p = FloatArray(classes) { input.readFloat() }
        output.writeDouble(cascade.marginOf(p))
        output.writeInt(if (cascade.needsFallback(p)) 1 else 0)
    }
    output.close()
}
