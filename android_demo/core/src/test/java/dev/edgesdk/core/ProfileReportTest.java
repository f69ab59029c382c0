package dev.edgesdk.core;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import java.util.Arrays;
import java.util.Map;
import org.junit.Test;

/** The writer produces Python's ProfileReport.to_json() byte for byte (tests/vectors/profile_report.json). */
public class ProfileReportTest {

    @Test
    @SuppressWarnings("unchecked")
    public void writesExactlyWhatPythonWrites() throws Exception {
        Map<String, Object> v = TestSupport.vectors("profile_report.json");
        Map<String, Object> fields = (Map<String, Object>) v.get("fields");
        fields.put("schema", ProfileReport.SCHEMA);
        ProfileReport r = ProfileReport.fromJson(Json.write(fields, -1));
        assertTrue(Double.isNaN(r.peakRssMb)); // null in, NaN inside, null out
        assertEquals((String) v.get("json"), r.toJson());
    }

    @Test
    public void statsBlockAndRoundTrip() {
        ProfileReport r = new ProfileReport();
        r.artifact = "/data/local/tmp/edgesdk/m";
        r.target = "onnx-cpu";
        r.backend = "onnxruntime";
        r.backendVersion = "1.32.0";
        r.device = "Google Pixel 8";
        r.threads = 4;
        r.program = "forward";
        r.warmup = 2;
        r.iters = 4;
        r.loadMs = 10.5;
        r.firstRunMs = 2.0;
        r.samplesMs = Arrays.asList(1.0, 2.0, 3.0, 4.0);
        r.baselineRssMb = 50.0;
        r.verified = true;
        r.createdAt = Benchmark.nowIso();
        Map<String, Object> d = r.toMap();
        assertEquals(Arrays.asList("artifact", "target", "backend", "backend_version", "device", "threads", "program",
                "warmup", "iters", "load_ms", "first_run_ms", "samples_ms", "peak_rss_mb", "baseline_rss_mb", "ops",
                "ops_note", "label", "verified", "extra", "created_at", "schema", "stats"), new java.util.ArrayList<String>(d.keySet()));
        @SuppressWarnings("unchecked")
        Map<String, Object> st = (Map<String, Object>) d.get("stats");
        assertEquals(Arrays.asList("count", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "min_ms", "max_ms", "cv",
                "throughput_per_s", "noisy"), new java.util.ArrayList<String>(st.keySet()));
        assertEquals(4L, st.get("count"));
        assertEquals(2.5, st.get("p50_ms"));
        assertEquals(400.0, st.get("throughput_per_s"));
        assertEquals(Boolean.TRUE, st.get("noisy")); // cv 0.447 > 0.10
        assertEquals(null, d.get("peak_rss_mb"));     // NaN is written as null
        assertTrue(r.toJson().contains("\"peak_rss_mb\": null"));
        assertTrue(r.createdAt.matches("\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\d\\+00:00"));

        ProfileReport back = ProfileReport.fromJson(r.toJson());
        assertEquals(r.toJson(), back.toJson());
        assertEquals(4, back.threads);
        assertTrue(back.verified);
        assertTrue(back.table().contains("p50 2.5000"));
    }

    @Test
    public void quietRunIsNotNoisyAndEmptyRunHasNullStats() {
        ProfileReport r = new ProfileReport();
        r.samplesMs = Arrays.asList(1.0, 1.01, 0.99, 1.0);
        assertFalse(r.noisy());
        ProfileReport empty = new ProfileReport();
        String json = empty.toJson();
        assertTrue(json.contains("\"count\": 0"));
        assertTrue(json.contains("\"p50_ms\": null"));
        assertTrue(json.contains("\"noisy\": false"));
    }

    @Test
    public void refusesOtherSchemas() {
        for (String doc : new String[] {"{\"schema\": \"edgesdk.manifest/1\"}", "[]", "not json"}) {
            try {
                ProfileReport.fromJson(doc);
                fail(doc);
            } catch (SdkException e) {
                assertEquals(SdkException.Kind.ConfigError, e.kind());
                assertTrue(e.getMessage().contains("not a profile report"));
            }
        }
    }
}
