// Test harness for wbc_edge/export/LabGate.kt (tests/test_android_kotlin.py): reads cut, val median, batch
// ratio, batch min, then batches (count, classes, then count x classes floats; big-endian) until a count of -1;
// writes per batch each image's distance (double) and far flag (int), then the verdict (n, ratio, unfamiliar,
// far share).
import java.io.DataInputStream
import java.io.DataOutputStream
import java.io.File

fun main(args: Array<String>) {
    val input = DataInputStream(File(args[0]).inputStream().buffered())
    val output = DataOutputStream(File(args[1]).outputStream().buffered())
    val gate = LabGate(input.readDouble(), input.readDouble(), input.readDouble(), input.readInt())
    while (true) {
        val n = input.readInt()
        if (n < 0) break
        val classes = input.readInt()
        val d = DoubleArray(n) { gate.distanceOf(FloatArray(classes) { input.readFloat() }) }
        for (v in d) {
            output.writeDouble(v)
            output.writeInt(if (gate.isFar(v)) 1 else 0)
        }
        val v = gate.batch(d)
        output.writeInt(v.n)
        output.writeDouble(v.medianRatio)
        output.writeInt(if (v.unfamiliar) 1 else 0)
        output.writeDouble(v.farShare)
        for ((i, x) in d.withIndex()) {   // decisions: confident on even cells; alone, then in this batch
            output.writeUTF(gate.decide(i % 2 == 0, x, null))
            output.writeUTF(gate.decide(i % 2 == 0, x, v))
        }
    }
    output.close()
}
