package dev.edgesdk.core;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;

/**
 * Latency profile of one artifact on one device: the {@code edgesdk.profile/1} schema of
 * {@code runtime.profile.ProfileReport}. Statistics derive from {@link #samplesMs}.
 *
 * <p>{@link #toJson()} writes the same keys, in the same order, with the same number spelling
 * as Python's {@code ProfileReport.to_json()} (NaN becomes {@code null}), so Python reads it with
 * {@code runtime.ProfileReport.from_json} and a report with the same values is byte-identical.
 */
public final class ProfileReport {
    public static final String SCHEMA = "edgesdk.profile/1";
    public static final double NOISY_CV = 0.10;

    public String artifact = "";
    public String target = "";
    public String backend = "";
    public String backendVersion = "";
    public String device = "";
    public int threads;
    public String program = "";
    public int warmup;
    public int iters;
    public double loadMs = Double.NaN;
    public double firstRunMs = Double.NaN;
    public List<Double> samplesMs = new ArrayList<Double>();
    public double peakRssMb = Double.NaN;
    public double baselineRssMb = Double.NaN;
    /** Per-op rows ({@code name, op_type, backend, calls, total_ms, mean_ms, share}), where the backend can say. */
    public List<Map<String, Object>> ops = new ArrayList<Map<String, Object>>();
    public String opsNote = "";
    public String label = "";
    public boolean verified;
    /** Backend-specific numbers (e.g. an accelerator's own timing); written as a JSON object. */
    public Map<String, Object> extra = new LinkedHashMap<String, Object>();
    public String createdAt = "";
    public String schema = SCHEMA;

    public Stats.Summary stats() {
        return Stats.summarize(samplesMs);
    }

    public double throughputPerS() {
        double m = stats().mean;
        return (m != 0.0 && !Double.isNaN(m)) ? 1e3 / m : Double.NaN;
    }

    /** True when the coefficient of variation exceeds 10%. */
    public boolean noisy() {
        return stats().cv > NOISY_CV;
    }

    /** {@code ProfileReport.to_dict()} after {@code _json_safe}: NaN and infinities become null. */
    public Map<String, Object> toMap() {
        Stats.Summary st = stats();
        Map<String, Object> d = new LinkedHashMap<String, Object>();
        d.put("artifact", artifact);
        d.put("target", target);
        d.put("backend", backend);
        d.put("backend_version", backendVersion);
        d.put("device", device);
        d.put("threads", (long) threads);
        d.put("program", program);
        d.put("warmup", (long) warmup);
        d.put("iters", (long) iters);
        d.put("load_ms", safe(loadMs));
        d.put("first_run_ms", safe(firstRunMs));
        List<Object> samples = new ArrayList<Object>();
        for (Double x : samplesMs) samples.add(safe(x));
        d.put("samples_ms", samples);
        d.put("peak_rss_mb", safe(peakRssMb));
        d.put("baseline_rss_mb", safe(baselineRssMb));
        d.put("ops", safeTree(ops));
        d.put("ops_note", opsNote);
        d.put("label", label);
        d.put("verified", verified);
        d.put("extra", safeTree(extra));
        d.put("created_at", createdAt);
        d.put("schema", schema);
        Map<String, Object> s = new LinkedHashMap<String, Object>();
        s.put("count", (long) st.count);
        s.put("p50_ms", safe(st.p50));
        s.put("p90_ms", safe(st.p90));
        s.put("p99_ms", safe(st.p99));
        s.put("mean_ms", safe(st.mean));
        s.put("std_ms", safe(st.std));
        s.put("min_ms", safe(st.min));
        s.put("max_ms", safe(st.max));
        s.put("cv", safe(st.cv));
        s.put("throughput_per_s", safe(throughputPerS()));
        s.put("noisy", st.cv > NOISY_CV);
        d.put("stats", s);
        return d;
    }

    /** {@code to_json(indent=2)}. */
    public String toJson() {
        return Json.write(toMap(), 2);
    }

    /** Read a report written by either side; ConfigError when it is not an {@code edgesdk.profile/1} object. */
    @SuppressWarnings("unchecked")
    public static ProfileReport fromJson(String text) {
        Object o;
        try {
            o = Json.parse(text);
        } catch (Json.JsonException e) {
            throw SdkException.config("not a profile report: " + e.getMessage());
        }
        if (!(o instanceof Map) || !SCHEMA.equals(((Map<?, ?>) o).get("schema"))) {
            Object got = o instanceof Map ? ((Map<?, ?>) o).get("schema") : null;
            throw SdkException.config("not a profile report (schema " + Manifest.pyRepr(got)
                    + ", expected '" + SCHEMA + "')");
        }
        Map<String, Object> d = (Map<String, Object>) o;
        ProfileReport r = new ProfileReport();
        r.artifact = str(d, "artifact");
        r.target = str(d, "target");
        r.backend = str(d, "backend");
        r.backendVersion = str(d, "backend_version");
        r.device = str(d, "device");
        r.threads = (int) num(d, "threads");
        r.program = str(d, "program");
        r.warmup = (int) num(d, "warmup");
        r.iters = (int) num(d, "iters");
        r.loadMs = num(d, "load_ms");
        r.firstRunMs = num(d, "first_run_ms");
        Object samples = d.get("samples_ms");
        if (samples instanceof List) {
            for (Object x : (List<Object>) samples) r.samplesMs.add(x == null ? Double.NaN : Json.toDouble(x));
        }
        r.peakRssMb = num(d, "peak_rss_mb");
        r.baselineRssMb = num(d, "baseline_rss_mb");
        if (d.get("ops") instanceof List) {
            for (Object row : (List<Object>) d.get("ops")) {
                if (row instanceof Map) r.ops.add((Map<String, Object>) row);
            }
        }
        r.opsNote = str(d, "ops_note");
        r.label = str(d, "label");
        r.verified = Boolean.TRUE.equals(d.get("verified"));
        if (d.get("extra") instanceof Map) r.extra = (Map<String, Object>) d.get("extra");
        r.createdAt = str(d, "created_at");
        return r;
    }

    /** A readable summary, the same lines as Python's {@code ProfileReport.table()} (without per-op rows). */
    public String table() {
        Stats.Summary st = stats();
        StringBuilder sb = new StringBuilder();
        sb.append(artifact).append('\n');
        sb.append("  target ").append(target).append(" \u00b7 backend ").append(backend).append(' ')
                .append(backendVersion).append(" \u00b7 ").append(threads).append(" threads");
        if (!label.isEmpty()) sb.append(" \u00b7 ").append(label);
        sb.append('\n');
        sb.append("  device ").append(device).append('\n');
        sb.append(String.format(Locale.US, "  load %.2f ms \u00b7 first run (cold) %.3f ms \u00b7 peak RSS %.1f MB "
                + "(before load %.1f MB)%n", loadMs, firstRunMs, peakRssMb, baselineRssMb));
        sb.append(String.format(Locale.US, "  %d runs after %d warm-up: p50 %.4f \u00b7 p90 %.4f \u00b7 p99 %.4f "
                        + "\u00b7 mean %.4f \u00b1 %.4f ms \u00b7 %.1f/s \u00b7 CV %.1f%%",
                st.count, warmup, st.p50, st.p90, st.p99, st.mean, st.std, throughputPerS(), st.cv * 100));
        if (noisy()) sb.append("  [NOISY: CV > 10%, rerun on a quieter machine]");
        if (!opsNote.isEmpty()) sb.append("\n  per-op: ").append(opsNote);
        return sb.toString();
    }

    private static Object safe(double x) {
        return (Double.isNaN(x) || Double.isInfinite(x)) ? null : (Object) x;
    }

    private static Object safeTree(Object o) {
        if (o instanceof Double || o instanceof Float) return safe(((Number) o).doubleValue());
        if (o instanceof Map) {
            Map<Object, Object> out = new LinkedHashMap<Object, Object>();
            for (Map.Entry<?, ?> e : ((Map<?, ?>) o).entrySet()) out.put(e.getKey(), safeTree(e.getValue()));
            return out;
        }
        if (o instanceof List) {
            List<Object> out = new ArrayList<Object>();
            for (Object x : (List<?>) o) out.add(safeTree(x));
            return out;
        }
        return o;
    }

    private static String str(Map<String, Object> d, String key) {
        Object v = d.get(key);
        return v == null ? "" : String.valueOf(v);
    }

    private static double num(Map<String, Object> d, String key) {
        Object v = d.get(key);
        return Json.isNumber(v) ? Json.toDouble(v) : Double.NaN;
    }
}
