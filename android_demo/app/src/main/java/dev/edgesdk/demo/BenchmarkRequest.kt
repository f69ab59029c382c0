package dev.edgesdk.demo

import android.content.Context
import android.content.Intent
import java.io.File

/** What one benchmark run was asked to do, from the launching intent's extras. */
data class BenchmarkRequest(
    val artifact: File,
    val warmup: Int,
    val warmupAuto: Boolean,
    val iters: Int,
    val threads: Int,
    val threadsAuto: Boolean,
    val program: String?,
    val out: File,
    val finish: Boolean,
) {
    companion object {
        const val DEFAULT_WARMUP = 10
        const val DEFAULT_ITERS = 100

        /** null when the intent names no artifact (launched from the home screen). */
        fun fromIntent(intent: Intent?, context: Context): BenchmarkRequest? {
            val artifact = intent?.getStringExtra("artifact")?.takeIf { it.isNotBlank() } ?: return null
            val dir = File(artifact.removeSuffix("/manifest.json"))
            val out = intent.getStringExtra("out")?.takeIf { it.isNotBlank() }?.let(::File)
                ?: File(File(context.getExternalFilesDir(null), "profiles"), "${dir.name}.json")
            return BenchmarkRequest(
                artifact = dir,
                // `--es warmup auto` / `--es threads auto`: adaptive warm-up, thread sweep (as runtime.profile)
                warmup = intent.getIntExtra("warmup", DEFAULT_WARMUP),
                warmupAuto = intent.getStringExtra("warmup") == "auto",
                iters = intent.getIntExtra("iters", DEFAULT_ITERS),
                threads = intent.getIntExtra("threads", 0),
                threadsAuto = intent.getStringExtra("threads") == "auto",
                program = intent.getStringExtra("program"),
                out = out,
                finish = intent.getBooleanExtra("finish", false),
            )
        }
    }
}
