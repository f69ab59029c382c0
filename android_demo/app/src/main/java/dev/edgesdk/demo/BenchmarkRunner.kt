package dev.edgesdk.demo

import android.content.Context
import android.os.Build
import android.util.Log
import dev.edgesdk.core.Benchmark
import dev.edgesdk.core.ProfileReport
import dev.edgesdk.core.SdkException
import java.io.File

/**
 * One headless benchmark: [Benchmark.profile] (manifest check, SHA-256, load, cold run, warm-up,
 * timed runs) with the [AndroidBackend], then the report JSON to app storage and to the
 * requested `out` path, written atomically. On failure, `out.error` gets one line `Kind: message`
 * (the Python side maps Kind back to its error class) and nothing is written to `out`.
 */
object BenchmarkRunner {
    const val TAG = "EdgeSdkBench"   // runtime.devices.LOG_TAG

    class Outcome(val text: String, val report: ProfileReport?)

    fun run(context: Context, req: BenchmarkRequest, progress: (Int, Int) -> Unit): Outcome {
        val error = File(req.out.path + ".error")
        error.delete()
        return try {
            val opts = Benchmark.Options().apply {
                warmup = req.warmup
                warmupAuto = req.warmupAuto
                iters = req.iters
                threads = req.threads
                threadsAuto = req.threadsAuto
                program = req.program
                device = deviceName()
                this.progress = Benchmark.Progress { done, total -> progress(done, total) }
            }
            Log.i(TAG, "profiling ${req.artifact} (${if (req.warmupAuto) "adaptive" else req.warmup.toString()} warm-up + " +
                "${req.iters} runs${if (req.threadsAuto) ", thread sweep first" else ""})")
            val report = Benchmark.profile(req.artifact, AndroidBackend(), opts)
            val json = report.toJson()
            writeAtomically(File(context.filesDir, "profile.json"), json)   // app storage: the latest run
            writeAtomically(req.out, json)
            Log.i(TAG, "wrote ${req.out}")
            Outcome(report.table() + "\n\nwrote ${req.out}", report)
        } catch (e: SdkException) {
            fail(error, e.oneLine(), e)
        } catch (e: Throwable) {   // native library errors, out of memory: still one line for the computer
            fail(error, "ExecutionError: ${e.javaClass.simpleName}: ${e.message}".replace(Regex("\\s+"), " "), e)
        }
    }

    private fun fail(error: File, line: String, e: Throwable): Outcome {
        Log.e(TAG, line, e)
        runCatching { writeAtomically(error, line + "\n") }
            .onFailure { Log.e(TAG, "cannot write $error", it) }
        return Outcome("error: $line", null)
    }

    /** Write to a temporary file beside [f] and rename it into place: readers see all or nothing. */
    fun writeAtomically(f: File, text: String) {
        f.absoluteFile.parentFile?.mkdirs()
        val tmp = File(f.path + ".tmp")
        tmp.writeText(text)
        if (!tmp.renameTo(f)) {
            tmp.delete()
            error("cannot rename $tmp to $f")
        }
    }

    /** e.g. "Google Pixel 8 (Android 14 / API 34, arm64-v8a, SoC Tensor G3)"; the computer replaces it with getprop's. */
    fun deviceName(): String {
        val model = if (Build.MODEL.startsWith(Build.MANUFACTURER, ignoreCase = true)) Build.MODEL
        else "${Build.MANUFACTURER} ${Build.MODEL}"
        val details = mutableListOf("Android ${Build.VERSION.RELEASE} / API ${Build.VERSION.SDK_INT}")
        Build.SUPPORTED_ABIS.firstOrNull()?.let { details += it }
        if (Build.VERSION.SDK_INT >= Build.VERSION_CODES.S) details += "SoC ${Build.SOC_MODEL}"
        return "$model (${details.joinToString(", ")})"
    }
}
