package dev.edgesdk.core;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import java.io.File;
import java.util.ArrayList;
import java.util.List;
import org.junit.Rule;
import org.junit.Test;
import org.junit.rules.TemporaryFolder;

/** The measuring loop with a fake backend and a fake clock. */
public class BenchmarkTest {
    @Rule public TemporaryFolder tmp = new TemporaryFolder();

    /** A clock that advances 1 ms per reading, plus whatever the fake program adds. */
    static final class FakeClock implements Benchmark.Clock {
        long now;

        @Override
        public long nanoTime() {
            now += 1_000_000L;
            return now;
        }
    }

    static final class FakeBackend implements Benchmark.Backend {
        final FakeClock clock;
        int opened, runs, closed;
        List<Inputs.Tensor> bound;
        RuntimeException failOnRun;
        double[] msAtThreads;            // when set: each run costs msAtThreads[threads - 1] ms
        final List<Integer> openedWith = new ArrayList<Integer>();

        FakeBackend(FakeClock clock) {
            this.clock = clock;
        }

        @Override
        public String name() {
            return "fake";
        }

        @Override
        public String version() {
            return "0.0";
        }

        @Override
        public Benchmark.Program open(File dir, Manifest m, Manifest.ProgramSpec spec, final int threads) {
            opened++;
            openedWith.add(threads);
            return new Benchmark.Program() {
                @Override
                public void bind(List<Inputs.Tensor> inputs) {
                    bound = inputs;
                }

                @Override
                public void run() {
                    if (failOnRun != null) throw failOnRun;
                    runs++;
                    if (msAtThreads != null) {
                        clock.now += (long) (msAtThreads[threads - 1] * 1e6);
                    } else {
                        clock.now += runs * 1_000_000L; // the k-th run takes k ms (+1 ms clock step)
                    }
                }

                @Override
                public int threads() {
                    return threads > 0 ? threads : 3;
                }

                @Override
                public String label() {
                    return "fake EP";
                }

                @Override
                public String opsNote() {
                    return "no per-op timing in the fake";
                }

                @Override
                public void close() {
                    closed++;
                }
            };
        }
    }

    File artifact() throws Exception {
        return TestSupport.artifact(tmp.newFolder("art"), "not really a model".getBytes("UTF-8"));
    }

    @Test
    public void measuresLoadColdWarmupAndTimedRuns() throws Exception {
        FakeClock clock = new FakeClock();
        FakeBackend be = new FakeBackend(clock);
        Benchmark.Options o = new Benchmark.Options();
        o.warmup = 2;
        o.iters = 5;
        o.clock = clock;
        o.device = "Fake Phone";
        final List<Integer> progress = new ArrayList<Integer>();
        o.progress = new Benchmark.Progress() {
            @Override
            public void update(int done, int total) {
                progress.add(done);
            }
        };
        ProfileReport r = Benchmark.profile(artifact(), be, o);
        assertEquals(1, be.opened);
        assertEquals(1 + 2 + 5, be.runs);
        assertEquals(1, be.closed);
        assertEquals(1.0, r.loadMs, 0.0);
        assertEquals(2.0, r.firstRunMs, 0.0);            // run 1: 1 ms + clock step
        // runs 4..8 are timed: k ms + 1 ms clock step
        assertEquals(java.util.Arrays.asList(5.0, 6.0, 7.0, 8.0, 9.0), r.samplesMs);
        assertEquals(7.0, r.stats().p50, 0.0);
        assertEquals(java.util.Arrays.asList(1, 2, 3, 4, 5), progress);
        assertEquals("executorch-xnnpack", r.target);
        assertEquals("fake", r.backend);
        assertEquals("forward", r.program);
        assertEquals(3, r.threads);
        assertEquals("fake EP", r.label);
        assertEquals("Fake Phone", r.device);
        assertTrue(r.verified);
        assertEquals(3, be.bound.size());
        assertEquals("x", be.bound.get(0).name);
        assertFalse(r.toJson().isEmpty());
    }

    @Test
    public void adaptiveWarmupStopsWhenTheWindowMedianSettles() throws Exception {
        FakeClock clock = new FakeClock();
        FakeBackend be = new FakeBackend(clock);
        be.msAtThreads = new double[] {4.0};       // every run 4 ms + the 1 ms clock step: 5 ms measured
        ProfileReport r = autoWarmup(be, clock, 1, 20);
        java.util.Map<String, Object> steady = obj(r.extra.get("steady_state"));
        java.util.Map<String, Object> warm = obj(steady.get("warmup"));
        assertEquals("auto", warm.get("mode"));
        assertEquals(5L, warm.get("window"));              // ceil(25 ms / 5 ms)
        assertEquals(13L, warm.get("runs"));               // 3 to estimate + two windows that agree
        assertEquals(13, r.warmup);
        assertEquals(Boolean.TRUE, warm.get("settled"));
        assertEquals(Boolean.TRUE, steady.get("settled"));
        assertEquals(1 + 13 + 20, be.runs);
        assertTrue(r.toJson().contains("\"steady_state\""));
    }

    @Test
    public void adaptiveWarmupThatNeverSettlesIsBoundedAndFlagged() throws Exception {
        FakeClock clock = new FakeClock();
        FakeBackend be = new FakeBackend(clock);   // the k-th run takes k ms: always slowing down
        ProfileReport r = autoWarmup(be, clock, 0, 8);
        java.util.Map<String, Object> steady = obj(r.extra.get("steady_state"));
        java.util.Map<String, Object> warm = obj(steady.get("warmup"));
        assertEquals(Boolean.FALSE, warm.get("settled"));
        assertEquals("3 s", warm.get("bound"));
        assertEquals(Boolean.FALSE, steady.get("settled"));
        assertTrue(steady.get("flags").toString(), steady.get("flags").toString().startsWith("[warm-up never settled within 3 s"));
    }

    @Test
    public void threadSweepTimesEveryCountAndProfilesAtTheFastestWithFewerThreadsOnATie() throws Exception {
        FakeClock clock = new FakeClock();
        FakeBackend be = new FakeBackend(clock);
        be.msAtThreads = new double[] {9.0, 5.1, 5.0, 7.0}; // measured 10, 6.1, 6.0, 8 ms: 2 threads ties with 3
        Benchmark.Options o = new Benchmark.Options();
        o.threadsAuto = true;
        o.maxThreads = 4;
        o.warmup = 1;
        o.iters = 5;
        o.clock = clock;
        ProfileReport r = Benchmark.profile(artifact(), be, o);
        java.util.Map<String, Object> sweep = obj(r.extra.get("threads_sweep"));
        assertEquals(2L, sweep.get("chosen"));
        assertEquals(java.util.Arrays.asList(1, 2, 3, 4, 4, 3, 2, 1, 2), be.openedWith); // 2 rounds, reversed, then the profile
        assertEquals(9, be.closed);
        assertEquals(2, r.threads);
        assertEquals(4, ((List<?>) sweep.get("rows")).size());
        assertEquals("lowest p50; fewer threads within 3%", sweep.get("rule"));
        assertEquals(java.util.Arrays.asList(6.1, 6.1, 6.1, 6.1, 6.1), roundAll(r.samplesMs));
        ProfileReport back = ProfileReport.fromJson(r.toJson());
        assertTrue(back.extra.containsKey("threads_sweep"));
    }

    ProfileReport autoWarmup(FakeBackend be, FakeClock clock, int threads, int iters) throws Exception {
        Benchmark.Options o = new Benchmark.Options();
        o.warmupAuto = true;
        o.threads = threads;
        o.iters = iters;
        o.clock = clock;
        return Benchmark.profile(artifact(), be, o);
    }

    @SuppressWarnings("unchecked")
    static java.util.Map<String, Object> obj(Object o) {
        return (java.util.Map<String, Object>) o;
    }

    static List<Double> roundAll(List<Double> xs) {
        List<Double> out = new ArrayList<Double>();
        for (Double x : xs) out.add(Math.round(x * 1000) / 1000.0);
        return out;
    }

    @Test
    public void tamperedPayloadNeverReachesTheBackend() throws Exception {
        File dir = artifact();
        TestSupport.write(new File(dir, "model.pte"), "not really a modeL".getBytes("UTF-8"));
        FakeBackend be = new FakeBackend(new FakeClock());
        try {
            Benchmark.profile(dir, be, new Benchmark.Options());
            fail();
        } catch (SdkException e) {
            assertEquals(SdkException.Kind.IntegrityError, e.kind());
        }
        assertEquals(0, be.opened);
    }

    @Test
    public void badArgumentsAndUnknownProgramsAreConfigErrors() throws Exception {
        File dir = artifact();
        FakeBackend be = new FakeBackend(new FakeClock());
        Benchmark.Options o = new Benchmark.Options();
        o.iters = 0;
        expect(dir, be, o, SdkException.Kind.ConfigError, "iters must be a positive int, got 0");
        o.iters = 1;
        o.warmup = -1;
        expect(dir, be, o, SdkException.Kind.ConfigError, "warmup must be a non-negative int");
        o.warmup = 0;
        o.program = "decode";
        expect(dir, be, o, SdkException.Kind.ConfigError, "no program 'decode'");
        assertEquals(0, be.opened);
    }

    @Test
    public void backendFailuresAreExecutionErrorsAndTheProgramIsClosed() throws Exception {
        FakeBackend be = new FakeBackend(new FakeClock());
        be.failOnRun = new IllegalStateException("boom");
        expect(artifact(), be, new Benchmark.Options(), SdkException.Kind.ExecutionError, "fake failed running program 'forward'");
        assertEquals(1, be.closed);
    }

    static void expect(File dir, Benchmark.Backend be, Benchmark.Options o, SdkException.Kind kind, String fragment) {
        try {
            Benchmark.profile(dir, be, o);
            fail("expected " + kind);
        } catch (SdkException e) {
            assertEquals(kind, e.kind());
            assertTrue(e.getMessage(), e.getMessage().contains(fragment));
        }
    }
}
