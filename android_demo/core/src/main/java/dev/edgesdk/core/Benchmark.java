package dev.edgesdk.core;

import java.io.BufferedReader;
import java.io.File;
import java.io.FileReader;
import java.io.FileWriter;
import java.io.IOException;
import java.text.SimpleDateFormat;
import java.util.ArrayList;
import java.util.Date;
import java.util.List;
import java.util.Locale;
import java.util.TimeZone;

/**
 * The measuring loop of {@code runtime.profile}, independent of any inference library.
 *
 * <p>Order and definitions as in Python: the peak-RSS mark is reset, then the <em>load</em> is
 * timed (manifest read and validation, payload size+SHA-256 check, backend open), inputs are
 * generated from the manifest's spec, one cold run is timed ({@code first_run_ms}), {@code warmup}
 * runs are discarded, and {@code iters} runs are timed one by one with a monotonic clock. The app
 * plugs in ExecuTorch or ONNX Runtime through {@link Backend}; tests plug in a fake.
 */
public final class Benchmark {
    private Benchmark() {}

    /** An inference library that can open one program of an artifact. */
    public interface Backend {
        /** As Python's backend {@code NAME}: {@code "executorch"}, {@code "onnxruntime"}. */
        String name();

        String version();

        /** Open {@code spec} from the verified artifact at {@code dir}. {@code threads <= 0}: the library's default. */
        Program open(File dir, Manifest manifest, Manifest.ProgramSpec spec, int threads) throws Exception;
    }

    /** An opened program, bound once to its inputs, then run repeatedly. */
    public interface Program {
        /** Convert the inputs to the library's tensors (not timed). */
        void bind(List<Inputs.Tensor> inputs) throws Exception;

        /** One inference on the bound inputs (timed). */
        void run() throws Exception;

        /** Threads the library runs with (as recorded in the report). */
        int threads();

        /** A label for the report, e.g. which execution provider ran; "" when there is nothing to say. */
        String label();

        /** Why {@code ops} is empty, or "". */
        String opsNote();

        void close();
    }

    /** Monotonic nanoseconds; {@link #SYSTEM_CLOCK} in the app, a fake in tests. */
    public interface Clock {
        long nanoTime();
    }

    public interface Progress {
        void update(int done, int total);
    }

    public static final Clock SYSTEM_CLOCK = new Clock() {
        @Override
        public long nanoTime() {
            return System.nanoTime();
        }
    };

    /** What to measure. */
    public static final class Options {
        public String program;           // null: forward, else the first program
        public int warmup = 10;
        public int iters = 100;
        public int threads = 0;          // 0: the backend's default
        public long seed = 0;
        public String device = "";
        public Clock clock = SYSTEM_CLOCK;
        public Progress progress;
    }

    public static ProfileReport profile(File artifactDir, Backend backend, Options o) {
        if (o.iters < 1) throw SdkException.config("iters must be a positive int, got " + o.iters);
        if (o.warmup < 0) throw SdkException.config("warmup must be a non-negative int, got " + o.warmup);
        Clock clock = o.clock;
        Memory.resetPeak();
        double baseline = Memory.rssMb();

        long t0 = clock.nanoTime();
        Manifest manifest = Manifest.read(artifactDir);
        Manifest.ProgramSpec spec = manifest.program(o.program);
        Integrity.verify(artifactDir, manifest);
        Program prog;
        try {
            prog = backend.open(artifactDir, manifest, spec, o.threads);
        } catch (SdkException e) {
            throw e;
        } catch (Exception e) {
            throw new SdkException(SdkException.Kind.ExecutionError, backend.name() + " could not open "
                    + new File(artifactDir, spec.file) + ": " + e, e);
        }
        double loadMs = (clock.nanoTime() - t0) / 1e6;

        try {
            List<Inputs.Tensor> inputs = Inputs.generate(spec.inputs, o.seed);
            prog.bind(inputs);
            long t = clock.nanoTime();
            prog.run();
            double firstMs = (clock.nanoTime() - t) / 1e6;
            for (int i = 0; i < o.warmup; i++) prog.run();
            List<Double> samples = new ArrayList<Double>(o.iters);
            int step = Math.max(1, o.iters / 50);
            for (int i = 0; i < o.iters; i++) {
                t = clock.nanoTime();
                prog.run();
                samples.add((clock.nanoTime() - t) / 1e6);
                if (o.progress != null && (i + 1) % step == 0) o.progress.update(i + 1, o.iters);
            }
            double peak = Memory.peakRssMb();

            ProfileReport r = new ProfileReport();
            r.artifact = artifactDir.getPath();
            r.target = manifest.target;
            r.backend = backend.name();
            r.backendVersion = backend.version();
            r.device = o.device;
            r.threads = prog.threads();
            r.program = spec.name;
            r.warmup = o.warmup;
            r.iters = o.iters;
            r.loadMs = loadMs;
            r.firstRunMs = firstMs;
            r.samplesMs = samples;
            r.peakRssMb = peak;
            r.baselineRssMb = baseline;
            r.opsNote = prog.opsNote();
            r.label = prog.label();
            r.verified = true;
            r.createdAt = nowIso();
            return r;
        } catch (SdkException e) {
            throw e;
        } catch (Exception e) {
            throw new SdkException(SdkException.Kind.ExecutionError, backend.name() + " failed running program '"
                    + spec.name + "': " + e, e);
        } finally {
            prog.close();
        }
    }

    /** UTC time as Python's {@code datetime.now(timezone.utc).isoformat(timespec="seconds")}. */
    public static String nowIso() {
        SimpleDateFormat f = new SimpleDateFormat("yyyy-MM-dd'T'HH:mm:ss'+00:00'", Locale.US);
        f.setTimeZone(TimeZone.getTimeZone("UTC"));
        return f.format(new Date());
    }

    /** Process memory from /proc (Linux and Android); NaN elsewhere. */
    public static final class Memory {
        private Memory() {}

        static double statusMb(String key) {
            try {
                BufferedReader r = new BufferedReader(new FileReader("/proc/self/status"));
                try {
                    String line;
                    while ((line = r.readLine()) != null) {
                        if (line.startsWith(key + ":")) {
                            String[] parts = line.substring(key.length() + 1).trim().split("\\s+");
                            return Double.parseDouble(parts[0]) / 1024.0;
                        }
                    }
                } finally {
                    r.close();
                }
            } catch (IOException | RuntimeException e) {
                return Double.NaN;
            }
            return Double.NaN;
        }

        public static double rssMb() {
            return statusMb("VmRSS");
        }

        public static double peakRssMb() {
            return statusMb("VmHWM");
        }

        /** Reset the kernel's high-water mark so the peak covers only what follows. */
        public static boolean resetPeak() {
            try {
                FileWriter w = new FileWriter(new File("/proc/self/clear_refs"));
                try {
                    w.write("5");
                } finally {
                    w.close();
                }
                return true;
            } catch (IOException e) {
                return false;
            }
        }
    }
}
