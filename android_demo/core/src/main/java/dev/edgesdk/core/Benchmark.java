package dev.edgesdk.core;

import java.io.BufferedReader;
import java.io.File;
import java.io.FileReader;
import java.io.FileWriter;
import java.io.IOException;
import java.text.SimpleDateFormat;
import java.util.ArrayList;
import java.util.Collections;
import java.util.Date;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.TimeZone;

/**
 * The measuring loop of {@code runtime.profile}, independent of any inference library.
 *
 * <p>Order and definitions as in Python: the peak-RSS mark is reset, then the <em>load</em> is
 * timed (manifest read and validation, payload size+SHA-256 check, backend open), inputs are
 * generated from the manifest's spec, one cold run is timed ({@code first_run_ms}), {@code warmup}
 * runs are discarded, and {@code iters} runs are timed one by one with a monotonic clock. The app
 * plugs in ExecuTorch or ONNX Runtime through {@link Backend}; tests plug in a fake.
 *
 * <p>As {@code runtime.profile}: {@link Options#warmupAuto} warms up in windows of runs until a
 * window's median moves by at most {@link #SETTLE_TOL} from the previous one (bounded), and
 * {@link Options#threadsAuto} first times every thread count from 1 to the cores in alternating
 * rounds of short blocks and profiles at the fastest (fewer threads on a {@link #THREAD_TIE} tie);
 * the report's {@code extra} records {@code steady_state} and {@code threads_sweep} in Python's shape.
 */
public final class Benchmark {
    private Benchmark() {}

    // Same constants as runtime/profile.py.
    public static final double SETTLE_TOL = 0.05;
    public static final double MAX_WARMUP_S = 3.0;
    public static final int MAX_WARMUP_RUNS = 5000;
    public static final double WINDOW_S = 0.025;
    public static final int MIN_WINDOW = 3;
    public static final int MAX_WINDOW = 100;
    public static final double DRIFT_LIMIT = 0.10;
    public static final double SWEEP_BLOCK_S = 0.08;
    public static final double THREAD_TIE = 0.03;

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
        public boolean warmupAuto;       // adaptive warm-up instead of {@code warmup} runs
        public double maxWarmupS = MAX_WARMUP_S;
        public boolean threadsAuto;      // sweep 1..maxThreads and use the fastest
        public int maxThreads = Runtime.getRuntime().availableProcessors();
        public long seed = 0;
        public String device = "";
        public Clock clock = SYSTEM_CLOCK;
        public Progress progress;
    }

    public static ProfileReport profile(File artifactDir, Backend backend, Options o) {
        if (o.iters < 1) throw SdkException.config("iters must be a positive int, got " + o.iters);
        if (o.warmup < 0) throw SdkException.config("warmup must be a non-negative int, got " + o.warmup);
        Clock clock = o.clock;
        int threads = o.threads;
        Map<String, Object> sweep = null;
        if (o.threadsAuto) {
            Manifest m0 = Manifest.read(artifactDir);
            Manifest.ProgramSpec s0 = m0.program(o.program);
            Integrity.verify(artifactDir, m0);  // nothing unverified reaches the backend
            try {
                sweep = sweepThreads(artifactDir, m0, s0, backend, o);
            } catch (SdkException e) {
                throw e;
            } catch (Exception e) {
                throw new SdkException(SdkException.Kind.ExecutionError, backend.name() + " failed sweeping thread counts on "
                        + new File(artifactDir, s0.file) + ": " + e, e);
            }
            threads = ((Number) sweep.get("chosen")).intValue();
        }
        Memory.resetPeak();
        double baseline = Memory.rssMb();

        long t0 = clock.nanoTime();
        Manifest manifest = Manifest.read(artifactDir);
        Manifest.ProgramSpec spec = manifest.program(o.program);
        Integrity.verify(artifactDir, manifest);
        Program prog;
        try {
            prog = backend.open(artifactDir, manifest, spec, threads);
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
            Map<String, Object> warm = warmUp(prog, o);
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
            r.warmup = ((Number) warm.get("runs")).intValue();
            r.extra.put("steady_state", steadyState(samples, warm));
            if (sweep != null) r.extra.put("threads_sweep", sweep);
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

    /** One timed run in ms. */
    static double timed(Program prog, Clock clock) throws Exception {
        long t = clock.nanoTime();
        prog.run();
        return (clock.nanoTime() - t) / 1e6;
    }

    static double median(List<Double> xs) {
        return Stats.summarize(xs).p50;
    }

    /** Warm-up as {@code runtime.profile.warm_up}: fixed runs, or windows until the median settles. */
    static Map<String, Object> warmUp(Program prog, Options o) throws Exception {
        Map<String, Object> w = new LinkedHashMap<String, Object>();
        if (!o.warmupAuto) {
            for (int i = 0; i < o.warmup; i++) prog.run();
            w.put("mode", "fixed");
            w.put("runs", (long) o.warmup);
            return w;
        }
        List<Double> est = new ArrayList<Double>();
        for (int i = 0; i < MIN_WINDOW; i++) est.add(timed(prog, o.clock));
        double estS = median(est) / 1e3;
        int window = (int) Math.min(MAX_WINDOW, Math.max(MIN_WINDOW, estS > 0 ? Math.ceil(WINDOW_S / estS) : MAX_WINDOW));
        long t0 = o.clock.nanoTime();
        List<Double> meds = new ArrayList<Double>();
        String bound = null;
        long runs = 0;
        while (true) {
            List<Double> win = new ArrayList<Double>(window);
            for (int i = 0; i < window; i++) win.add(timed(prog, o.clock));
            runs += window;
            meds.add(median(win));
            int n = meds.size();
            if (n >= 2 && meds.get(n - 2) > 0 && Math.abs(meds.get(n - 1) - meds.get(n - 2)) <= SETTLE_TOL * meds.get(n - 2)) break;
            if (n >= 2 && (o.clock.nanoTime() - t0) / 1e9 > o.maxWarmupS) {
                bound = (o.maxWarmupS == Math.rint(o.maxWarmupS) ? String.valueOf((long) o.maxWarmupS)
                        : String.valueOf(o.maxWarmupS)) + " s";
                break;
            }
            if (runs >= MAX_WARMUP_RUNS) {
                bound = MAX_WARMUP_RUNS + " runs";
                break;
            }
        }
        w.put("mode", "auto");
        w.put("runs", MIN_WINDOW + runs);
        w.put("window", (long) window);
        w.put("medians_ms", meds);
        w.put("settled", bound == null);
        w.put("bound", bound);
        w.put("tolerance", SETTLE_TOL);
        return w;
    }

    /** {@code runtime.profile.steady_state} without the host readings the app has no access to. */
    static Map<String, Object> steadyState(List<Double> samples, Map<String, Object> warm) {
        List<String> flags = new ArrayList<String>();
        if ("auto".equals(warm.get("mode")) && !Boolean.TRUE.equals(warm.get("settled"))) {
            @SuppressWarnings("unchecked")
            List<Double> m = (List<Double>) warm.get("medians_ms");
            flags.add(String.format(Locale.US, "warm-up never settled within %s (%d runs; the last window medians were %.4g and %.4g ms)",
                    warm.get("bound"), (Long) warm.get("runs"), m.get(m.size() - 2), m.get(m.size() - 1)));
        }
        List<Double> segs = new ArrayList<Double>();
        double drift = 0.0;
        int k = samples.size() / 4;
        if (k >= 3) {
            for (int i = 0; i < 4; i++) segs.add(median(samples.subList(i * k, (i + 1) * k)));
            double lo = Collections.min(segs), hi = Collections.max(segs);
            drift = lo > 0 ? hi / lo - 1 : 0.0;
        }
        if (drift > DRIFT_LIMIT) {
            StringBuilder b = new StringBuilder();
            for (Double x : segs) b.append(b.length() == 0 ? "" : ", ").append(String.format(Locale.US, "%.4g", x));
            flags.add(String.format(Locale.US, "the timed runs drifted: quarter medians %s ms (%.0f%% apart)", b, drift * 100));
        }
        Map<String, Object> s = new LinkedHashMap<String, Object>();
        s.put("settled", flags.isEmpty());
        s.put("flags", flags);
        s.put("causes", new ArrayList<String>());  // the app reads no other processes' load or CPU frequency
        s.put("warmup", warm);
        s.put("segment_medians_ms", segs);
        s.put("drift", drift);
        return s;
    }

    /** {@code runtime.profile.sweep_threads}: 1..maxThreads in alternating rounds of short blocks. */
    static Map<String, Object> sweepThreads(File dir, Manifest manifest, Manifest.ProgramSpec spec, Backend backend,
                                            Options o) throws Exception {
        List<Integer> counts = new ArrayList<Integer>();
        for (int n = 1; n <= Math.max(1, o.maxThreads); n++) counts.add(n);
        Map<Integer, List<Double>> per = new LinkedHashMap<Integer, List<Double>>();
        Map<Integer, Integer> effective = new LinkedHashMap<Integer, Integer>();
        for (Integer n : counts) per.put(n, new ArrayList<Double>());
        List<Inputs.Tensor> inputs = Inputs.generate(spec.inputs, o.seed);
        int rounds = counts.size() > 1 ? 2 : 1;
        for (int r = 0; r < rounds; r++) {
            List<Integer> order = new ArrayList<Integer>(counts);
            if (r % 2 == 1) Collections.reverse(order);
            for (Integer n : order) {
                Program p = backend.open(dir, manifest, spec, n);
                try {
                    p.bind(inputs);
                    effective.put(n, p.threads());
                    List<Double> est = new ArrayList<Double>();
                    for (int i = 0; i < 3; i++) est.add(timed(p, o.clock));
                    int block = (int) Math.min(200, Math.max(5, Math.ceil(SWEEP_BLOCK_S / Math.max(median(est) / 1e3, 1e-7))));
                    for (int i = 0; i < block; i++) per.get(n).add(timed(p, o.clock));
                } finally {
                    p.close();
                }
            }
        }
        List<Object> rows = new ArrayList<Object>();
        double best = Double.POSITIVE_INFINITY;
        for (Integer n : counts) best = Math.min(best, median(per.get(n)));
        long chosen = -1;
        for (Integer n : counts) {
            Stats.Summary st = Stats.summarize(per.get(n));
            Map<String, Object> row = new LinkedHashMap<String, Object>();
            row.put("threads", (long) n);
            row.put("effective_threads", (long) effective.get(n));
            row.put("p50_ms", st.p50);
            row.put("p90_ms", st.p90);
            row.put("cv", st.cv);
            row.put("runs", (long) st.count);
            rows.add(row);
            if (chosen < 0 && st.p50 <= best * (1 + THREAD_TIE)) chosen = n;
        }
        List<Object> countsOut = new ArrayList<Object>();
        for (Integer n : counts) countsOut.add((long) n);
        Map<String, Object> sweep = new LinkedHashMap<String, Object>();
        sweep.put("rows", rows);
        sweep.put("chosen", chosen);
        sweep.put("counts", countsOut);
        sweep.put("rounds", (long) rounds);
        sweep.put("rule", String.format(Locale.US, "lowest p50; fewer threads within %.0f%%", THREAD_TIE * 100));
        sweep.put("unit", "run");
        return sweep;
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
