package dev.edgesdk.core;

import java.util.Arrays;
import java.util.List;

/**
 * Latency statistics with exactly the definitions of {@code runtime/stats.py}.
 *
 * <ul>
 *   <li>percentile: linear interpolation between closest ranks (numpy's "linear"):
 *       {@code rank = q/100 * (n-1); value = s[floor] + (s[ceil] - s[floor]) * frac(rank)}</li>
 *   <li>mean: {@code fsum(s) / n}; std: population deviation {@code sqrt(fsum((x-mean)^2) / n)}</li>
 *   <li>cv: {@code std / mean} (NaN when the mean is 0)</li>
 * </ul>
 *
 * <p>{@link #fsum} is Python's {@code math.fsum} (Shewchuk's exact summation with the same
 * final half-even correction), so the results agree with the Python profiler to the last bit
 * on the shared vectors ({@code tests/vectors/profile_stats.json}).
 */
public final class Stats {
    private Stats() {}

    /** The result of {@link #summarize}; field names as in Python's dict. */
    public static final class Summary {
        public final int count;
        public final double p50, p90, p99, mean, std, cv, min, max;

        Summary(int count, double p50, double p90, double p99, double mean, double std, double cv,
                double min, double max) {
            this.count = count;
            this.p50 = p50;
            this.p90 = p90;
            this.p99 = p99;
            this.mean = mean;
            this.std = std;
            this.cv = cv;
            this.min = min;
            this.max = max;
        }

        /** Value by the Python dict key ({@code p50}, {@code mean}, ...). */
        public double get(String key) {
            if ("count".equals(key)) return count;
            if ("p50".equals(key)) return p50;
            if ("p90".equals(key)) return p90;
            if ("p99".equals(key)) return p99;
            if ("mean".equals(key)) return mean;
            if ("std".equals(key)) return std;
            if ("cv".equals(key)) return cv;
            if ("min".equals(key)) return min;
            if ("max".equals(key)) return max;
            throw new IllegalArgumentException("no statistic '" + key + "'");
        }
    }

    /** Percentile {@code q} (0..100) of already sorted samples; NaN when empty. */
    public static double percentile(double[] sorted, double q) {
        int n = sorted.length;
        if (n == 0) return Double.NaN;
        double rank = q / 100.0 * (n - 1);
        int lo = (int) Math.floor(rank);
        int hi = Math.min(lo + 1, n - 1);
        double frac = rank - lo;
        return sorted[lo] + (sorted[hi] - sorted[lo]) * frac;
    }

    public static Summary summarize(List<Double> samples) {
        double[] a = new double[samples.size()];
        for (int i = 0; i < a.length; i++) a[i] = samples.get(i);
        return summarize(a);
    }

    /** p50/p90/p99/mean/std/cv/min/max of raw samples (not modified). */
    public static Summary summarize(double[] samples) {
        double[] s = samples.clone();
        Arrays.sort(s);
        int n = s.length;
        if (n == 0) {
            double nan = Double.NaN;
            return new Summary(0, nan, nan, nan, nan, nan, nan, nan, nan);
        }
        double mean = fsum(s) / n;
        double[] sq = new double[n];
        for (int i = 0; i < n; i++) {
            double d = s[i] - mean;
            sq[i] = d * d;
        }
        double std = Math.sqrt(fsum(sq) / n);
        double cv = mean != 0.0 ? std / mean : Double.NaN;
        return new Summary(n, percentile(s, 50), percentile(s, 90), percentile(s, 99), mean, std, cv, s[0], s[n - 1]);
    }

    /**
     * Python's {@code math.fsum}: the correctly rounded sum of the values (Shewchuk's
     * algorithm with partials, as in CPython's {@code mathmodule.c}). Non-finite inputs give
     * the ordinary IEEE sum (NaN or an infinity), where Python would raise for {@code inf - inf}.
     */
    public static double fsum(double[] values) {
        double special = 0.0;
        boolean nonFinite = false;
        for (double v : values) {
            if (Double.isNaN(v) || Double.isInfinite(v)) {
                nonFinite = true;
                special += v;
            }
        }
        if (nonFinite) return special;
        double[] p = new double[32];
        int n = 0;
        for (double v : values) {
            double x = v;
            int i = 0;
            for (int j = 0; j < n; j++) {
                double y = p[j];
                if (Math.abs(x) < Math.abs(y)) {
                    double t = x;
                    x = y;
                    y = t;
                }
                double hi = x + y;
                double lo = y - (hi - x);
                if (lo != 0.0) p[i++] = lo;
                x = hi;
            }
            n = i;
            if (x != 0.0) {
                if (n == p.length) p = Arrays.copyOf(p, n * 2);
                p[n++] = x;
            }
        }
        double hi = 0.0;
        if (n > 0) {
            hi = p[--n];
            double lo = 0.0;
            while (n > 0) {
                double x = hi;
                double y = p[--n];
                hi = x + y;
                double yr = hi - x;
                lo = y - yr;
                if (lo != 0.0) break;
            }
            // half-even rounding across partials, so fsum([1e-16, 1, 1e16]) rounds up as Python does
            if (n > 0 && ((lo < 0.0 && p[n - 1] < 0.0) || (lo > 0.0 && p[n - 1] > 0.0))) {
                double y = lo * 2.0;
                double x = hi + y;
                double yr = x - hi;
                if (y == yr) hi = x;
            }
        }
        return hi;
    }
}
