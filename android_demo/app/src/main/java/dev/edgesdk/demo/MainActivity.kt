package dev.edgesdk.demo

import android.app.Activity
import android.content.Intent
import android.graphics.Typeface
import android.os.Bundle
import android.view.WindowManager
import android.widget.ScrollView
import android.widget.TextView
import java.util.concurrent.ExecutorService
import java.util.concurrent.Executors

/**
 * Shows a benchmark's numbers (p50/p90/p99, cold start, load time, memory) on screen.
 *
 * Started with an `artifact` extra (see AndroidManifest.xml and README.md) it runs the benchmark
 * on a background thread at once; `finish=true` closes the activity when the JSON is written,
 * which is how `edgesdk profile --device adb:SERIAL` drives it.
 */
class MainActivity : Activity() {
    private lateinit var text: TextView
    private val worker: ExecutorService = Executors.newSingleThreadExecutor()
    @Volatile private var running = false

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        text = TextView(this).apply {
            typeface = Typeface.MONOSPACE
            textSize = 12f
            setPadding(32, 32, 32, 32)
            setTextIsSelectable(true)
        }
        setContentView(ScrollView(this).apply { addView(text) })
        handle(intent)
    }

    override fun onNewIntent(intent: Intent) {
        super.onNewIntent(intent)
        setIntent(intent)
        handle(intent)
    }

    private fun handle(intent: Intent?) {
        val req = BenchmarkRequest.fromIntent(intent, this)
        if (req == null) {
            text.text = USAGE
            return
        }
        if (running) return
        running = true
        window.addFlags(WindowManager.LayoutParams.FLAG_KEEP_SCREEN_ON)
        text.text = "profiling ${req.artifact}\n${req.warmup} warm-up + ${req.iters} timed runs\n"
        worker.execute {
            val outcome = BenchmarkRunner.run(applicationContext, req) { done, total ->
                runOnUiThread { text.text = "profiling ${req.artifact}\ntimed runs: $done / $total" }
            }
            runOnUiThread {
                running = false
                window.clearFlags(WindowManager.LayoutParams.FLAG_KEEP_SCREEN_ON)
                text.text = outcome.text
                if (req.finish) finish()
            }
        }
    }

    override fun onDestroy() {
        worker.shutdown()
        super.onDestroy()
    }

    private companion object {
        const val USAGE = """Edge SDK bench

Push an artifact from `edgesdk convert --target executorch-xnnpack | onnx-cpu | qnn-htp`
to the phone and start the benchmark from a computer:

  edgesdk profile out/NAME --device adb:SERIAL --iters 200

or by hand:

  adb push out/NAME/. /data/local/tmp/edgesdk/NAME/
  adb shell am start -n dev.edgesdk.demo/.MainActivity \
    --es artifact /data/local/tmp/edgesdk/NAME --ei iters 200

The report (edgesdk.profile/1 JSON) goes to this app's files
directory and, with --es out PATH, to PATH."""
    }
}
