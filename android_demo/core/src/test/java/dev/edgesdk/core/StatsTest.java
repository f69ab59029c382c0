package dev.edgesdk.core;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;

import java.util.List;
import java.util.Map;
import org.junit.Test;

/** The statistics agree with tests/vectors/profile_stats.json, the vectors the Python profiler passes too. */
public class StatsTest {

    /** Python's math.isclose(a, b, rel_tol=tol, abs_tol=tol), as tests/test_stats.py uses. */
    static boolean isClose(double a, double b, double tol) {
        if (a == b) return true;
        return Math.abs(a - b) <= Math.max(tol * Math.max(Math.abs(a), Math.abs(b)), tol);
    }

    @Test
    @SuppressWarnings("unchecked")
    public void sharedVectors() throws Exception {
        Map<String, Object> v = TestSupport.vectors("profile_stats.json");
        double tol = Json.toDouble(v.get("tolerance"));
        assertEquals(1e-12, tol, 0.0);
        List<Object> cases = (List<Object>) v.get("cases");
        assertTrue("expected several cases", cases.size() >= 5);
        int checked = 0;
        for (Object c : cases) {
            Map<String, Object> cs = (Map<String, Object>) c;
            String name = (String) cs.get("name");
            List<Object> raw = (List<Object>) cs.get("samples_ms");
            double[] s = new double[raw.size()];
            for (int i = 0; i < s.length; i++) s[i] = Json.toDouble(raw.get(i));
            Stats.Summary got = Stats.summarize(s);
            assertEquals(name + " count", s.length, got.count);
            for (Map.Entry<String, Object> e : ((Map<String, Object>) cs.get("expected")).entrySet()) {
                double want = Json.toDouble(e.getValue());
                double have = got.get(e.getKey());
                assertTrue(name + "." + e.getKey() + ": got " + have + ", expected " + want, isClose(have, want, tol));
                checked++;
            }
        }
        assertTrue(checked >= 35);
    }

    @Test
    public void percentileIsLinearInterpolation() {
        double[] s = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
        assertEquals(5.5, Stats.percentile(s, 50), 0.0);
        assertEquals(1.0, Stats.percentile(s, 0), 0.0);
        assertEquals(10.0, Stats.percentile(s, 100), 0.0);
        assertEquals(9.91, Stats.percentile(s, 99), 1e-15);
        assertEquals(7.0, Stats.percentile(new double[] {7}, 99), 0.0);
        assertTrue(Double.isNaN(Stats.percentile(new double[0], 50)));
    }

    @Test
    public void stdIsPopulationAndInputIsNotSorted() {
        double[] s = {3.0, 1.0};
        Stats.Summary st = Stats.summarize(s);
        assertEquals(1.0, st.std, 0.0); // population: divide by n, not n-1
        assertEquals(2.0, st.mean, 0.0);
        assertEquals(0.5, st.cv, 0.0);
        assertEquals(3.0, s[0], 0.0); // caller's array untouched
        assertEquals(1.0, st.min, 0.0);
        assertEquals(3.0, st.max, 0.0);
    }

    @Test
    public void emptyIsNanNotAnException() {
        Stats.Summary st = Stats.summarize(new double[0]);
        assertEquals(0, st.count);
        assertTrue(Double.isNaN(st.p50) && Double.isNaN(st.mean) && Double.isNaN(st.std) && Double.isNaN(st.cv));
    }

    @Test
    public void zeroMeanGivesNanCv() {
        assertTrue(Double.isNaN(Stats.summarize(new double[] {0.0, 0.0}).cv));
    }

    @Test
    public void fsumIsCorrectlyRoundedLikePython() {
        // values checked against CPython's math.fsum
        double[] tenth = new double[10];
        java.util.Arrays.fill(tenth, 0.1);
        assertEquals(1.0, Stats.fsum(tenth), 0.0);                            // naive sum: 0.9999999999999999
        assertEquals(1.0000000000000002e16, Stats.fsum(new double[] {1e-16, 1, 1e16}), 0.0);
        assertEquals(0.0, Stats.fsum(new double[] {1e100, 1.0, -1e100}) - 1.0, 0.0);
        assertEquals(9007199254740994.0, Stats.fsum(new double[] {0x1p53, 1.0, 0x1p-50}), 0.0); // ties round up past half
        assertEquals(1e-300, Stats.fsum(new double[] {1.0, 1e-300, -1.0}), 0.0);
        assertEquals(0.0, Stats.fsum(new double[0]), 0.0);
        assertTrue(Double.isNaN(Stats.fsum(new double[] {1.0, Double.NaN})));
    }
}
