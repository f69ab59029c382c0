package dev.edgesdk.demo

import ai.onnxruntime.OnnxJavaType
import ai.onnxruntime.OnnxTensor
import ai.onnxruntime.OrtEnvironment
import ai.onnxruntime.OrtSession
import dev.edgesdk.core.Benchmark
import dev.edgesdk.core.Inputs
import dev.edgesdk.core.Manifest
import dev.edgesdk.core.SdkException
import java.io.File
import org.pytorch.executorch.EValue
import org.pytorch.executorch.Module
import org.pytorch.executorch.Tensor

/**
 * The inference libraries behind [Benchmark.Backend]: the manifest's format picks one
 * (`pte` -> ExecuTorch, `onnx` -> ONNX Runtime, with the QNN execution provider for `qnn-htp`).
 * [Benchmark.profile] has already checked every payload file's size and SHA-256 when [open] runs.
 */
class AndroidBackend : Benchmark.Backend {
    private var chosen: Benchmark.Backend? = null

    override fun name(): String = chosen?.name() ?: "android"

    override fun version(): String = chosen?.version() ?: ""

    override fun open(dir: File, manifest: Manifest, spec: Manifest.ProgramSpec, threads: Int): Benchmark.Program {
        val backend: Benchmark.Backend = when (manifest.format) {
            "pte" -> ExecuTorchBackend()
            "onnx" -> OrtBackend()
            else -> throw SdkException(
                SdkException.Kind.TargetUnavailableError,
                "format '${manifest.format}' does not run in this app (it runs pte with ExecuTorch and onnx " +
                    "with ONNX Runtime)",
            )
        }
        chosen = backend
        return backend.open(dir, manifest, spec, threads)
    }
}

/** ExecuTorch's Android library (`org.pytorch:executorch-android`, XNNPACK delegate included). */
class ExecuTorchBackend : Benchmark.Backend {
    override fun name() = "executorch"   // as runtime/executorch.py's NAME

    override fun version(): String = BuildConfig.EXECUTORCH_VERSION

    override fun open(dir: File, manifest: Manifest, spec: Manifest.ProgramSpec, threads: Int): Benchmark.Program {
        val module = Module.load(File(dir, spec.file).absolutePath, Module.LOAD_MODE_MMAP)
        module.loadMethod(spec.method)   // inside load_ms, not the first run
        return ExecuTorchProgram(module, spec.method)
    }
}

private class ExecuTorchProgram(private val module: Module, private val method: String) : Benchmark.Program {
    private var args: Array<EValue> = emptyArray()

    override fun bind(inputs: List<Inputs.Tensor>) {
        args = inputs.map { EValue.from(toTensor(it)) }.toTypedArray()
    }

    override fun run() {
        module.execute(method, *args)
    }

    override fun threads() = 0   // ExecuTorch's own thread pool (one thread per performance core)

    override fun label() = "threads: ExecuTorch default"

    override fun opsNote() =
        "per-op timing is not collected on Android yet (ExecuTorch needs an ETDump-enabled AAR)"

    override fun close() = module.destroy()

    private fun toTensor(t: Inputs.Tensor): Tensor {
        val d = t.data.duplicate().order(t.data.order())
        return when (t.dtype) {
            "float32" -> Tensor.fromBlob(d.asFloatBuffer(), t.shape)
            "float64" -> Tensor.fromBlob(d.asDoubleBuffer(), t.shape)
            "int64" -> Tensor.fromBlob(d.asLongBuffer(), t.shape)
            "int32" -> Tensor.fromBlob(d.asIntBuffer(), t.shape)
            "int8" -> Tensor.fromBlob(d, t.shape)
            "uint8" -> Tensor.fromBlobUnsigned(d, t.shape)
            else -> throw SdkException(
                SdkException.Kind.TargetUnavailableError,
                "input '${t.name}': ExecuTorch's Android API has no ${t.dtype} tensors; export the model " +
                    "with a float32/int input instead, or use the onnx-cpu target",
            )
        }
    }
}

/** ONNX Runtime Android (`onnxruntime-android`, or `onnxruntime-android-qnn` with `-PwithQnn=true`). */
class OrtBackend : Benchmark.Backend {
    override fun name() = "onnxruntime"   // as runtime/ort.py's NAME

    override fun version(): String = BuildConfig.ONNXRUNTIME_VERSION

    override fun open(dir: File, manifest: Manifest, spec: Manifest.ProgramSpec, threads: Int): Benchmark.Program {
        val env = OrtEnvironment.getEnvironment()
        val opts = OrtSession.SessionOptions()
        opts.setOptimizationLevel(OrtSession.SessionOptions.OptLevel.ALL_OPT)
        if (threads > 0) opts.setIntraOpNumThreads(threads)
        var label = if (threads > 0) "" else "threads: ONNX Runtime default"
        if (manifest.target == "qnn-htp") {
            label = try {
                if (!BuildConfig.WITH_QNN) error("this build has no QNN execution provider (build with -PwithQnn=true)")
                opts.addQnn(mapOf("backend_path" to "libQnnHtp.so", "htp_performance_mode" to "burst"))
                "QNN EP, HTP backend"
            } catch (e: Exception) {
                "QNN EP unavailable (${e.message}); ran on the CPU EP"
            }
        }
        val session = env.createSession(File(dir, spec.file).absolutePath, opts)
        return OrtProgram(env, session, opts, threads, label)
    }
}

private class OrtProgram(
    private val env: OrtEnvironment,
    private val session: OrtSession,
    private val opts: OrtSession.SessionOptions,
    private val threads: Int,
    private val label: String,
) : Benchmark.Program {
    private val feeds = LinkedHashMap<String, OnnxTensor>()

    override fun bind(inputs: List<Inputs.Tensor>) {
        for (t in inputs) {
            feeds[t.name] = OnnxTensor.createTensor(env, t.data.duplicate().order(t.data.order()), t.shape, type(t.dtype))
        }
    }

    override fun run() {
        session.run(feeds).use { }   // outputs are native memory: release them every run
    }

    override fun threads() = threads

    override fun label() = label

    override fun opsNote() =
        "per-op timing is not collected on Android yet (ONNX Runtime's profiler could provide it)"

    override fun close() {
        feeds.values.forEach { it.close() }
        session.close()
        opts.close()
    }

    private fun type(dtype: String): OnnxJavaType = when (dtype) {
        "float32" -> OnnxJavaType.FLOAT
        "float16" -> OnnxJavaType.FLOAT16
        "float64" -> OnnxJavaType.DOUBLE
        "int64" -> OnnxJavaType.INT64
        "int32" -> OnnxJavaType.INT32
        "int16" -> OnnxJavaType.INT16
        "int8" -> OnnxJavaType.INT8
        "uint8" -> OnnxJavaType.UINT8
        "bool" -> OnnxJavaType.BOOL
        else -> throw SdkException(SdkException.Kind.ConfigError, "unknown dtype '$dtype'")
    }
}
