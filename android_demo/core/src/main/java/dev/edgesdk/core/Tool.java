package dev.edgesdk.core;

import java.io.ByteArrayOutputStream;
import java.io.File;
import java.io.IOException;
import java.io.InputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * The core from a shell, for cross-checks against the Python runtime (tests/test_android_core.py)
 * and for checking an artifact on a desktop before pushing it to a phone.
 *
 * <pre>
 * java -cp build/jvm/main dev.edgesdk.core.Tool verify ARTIFACT_DIR      # manifest + sha256, as the app does
 * java -cp build/jvm/main dev.edgesdk.core.Tool manifest FILE...         # one JSON line per manifest: ok / error
 * java -cp build/jvm/main dev.edgesdk.core.Tool summarize &lt; samples.json  # statistics of a JSON list
 * java -cp build/jvm/main dev.edgesdk.core.Tool report &lt; fields.json     # a ProfileReport written by the core
 * java -cp build/jvm/main dev.edgesdk.core.Tool repr &lt; doubles.txt       # Python repr of each double (hex bits per line)
 * </pre>
 * Exit status 0 on success, 2 on an error (one line on stderr).
 */
public final class Tool {
    private Tool() {}

    public static void main(String[] args) throws IOException {
        PrintStream out = new PrintStream(System.out, true, "UTF-8");
        if (args.length == 0) {
            System.err.println("usage: Tool verify DIR | manifest FILE... | summarize | report | repr");
            System.exit(2);
        }
        try {
            String cmd = args[0];
            if ("verify".equals(cmd) && args.length == 2) {
                File dir = new File(args[1]);
                Manifest m = Manifest.read(dir);
                Integrity.verify(dir, m);
                out.println("ok " + m.name + " " + m.target + " (" + m.files.size() + " files verified)");
            } else if ("manifest".equals(cmd)) {
                for (int i = 1; i < args.length; i++) {
                    Map<String, Object> row = new LinkedHashMap<String, Object>();
                    row.put("file", args[i]);
                    try {
                        Manifest m = Manifest.parse(Manifest.readAll(new File(args[i]), Manifest.MAX_MANIFEST_BYTES + 1));
                        row.put("ok", true);
                        row.put("name", m.name);
                        row.put("programs", new java.util.ArrayList<String>(m.programs.keySet()));
                    } catch (SdkException e) {
                        row.put("ok", false);
                        row.put("kind", e.kind().name());
                        row.put("error", e.getMessage());
                    }
                    out.println(Json.write(row, -1));
                }
            } else if ("summarize".equals(cmd)) {
                Object doc = Json.parse(new String(readStdin(), StandardCharsets.UTF_8));
                double[] s = toDoubles(doc);
                Stats.Summary st = Stats.summarize(s);
                Map<String, Object> row = new LinkedHashMap<String, Object>();
                row.put("count", (long) st.count);
                for (String k : new String[] {"p50", "p90", "p99", "mean", "std", "cv", "min", "max"}) {
                    double v = st.get(k);
                    row.put(k, Double.isNaN(v) ? null : (Object) v);
                }
                out.println(Json.write(row, -1));
            } else if ("report".equals(cmd)) {
                // a report from its fields (as Python's ProfileReport(**fields)), written by the core
                String text = new String(readStdin(), StandardCharsets.UTF_8);
                @SuppressWarnings("unchecked")
                Map<String, Object> fields = (Map<String, Object>) Json.parse(text);
                fields.put("schema", ProfileReport.SCHEMA);
                ProfileReport r = ProfileReport.fromJson(Json.write(fields, -1));
                out.print(r.toJson());
            } else if ("repr".equals(cmd)) {
                String[] lines = new String(readStdin(), StandardCharsets.UTF_8).split("\n");
                StringBuilder sb = new StringBuilder();
                for (String line : lines) {
                    line = line.trim();
                    if (line.isEmpty()) continue;
                    double d = Double.longBitsToDouble(Long.parseUnsignedLong(line, 16));
                    sb.append(Json.formatDouble(d)).append('\n');
                }
                out.print(sb);
            } else {
                throw SdkException.config("unknown command '" + cmd + "' (verify, manifest, summarize, report, repr)");
            }
        } catch (SdkException e) {
            System.err.println("error: " + e.oneLine());
            System.exit(2);
        } catch (Json.JsonException e) {
            System.err.println("error: invalid JSON: " + e.getMessage());
            System.exit(2);
        }
    }

    private static double[] toDoubles(Object doc) {
        if (!(doc instanceof List)) throw SdkException.config("expected a JSON list of numbers");
        List<?> l = (List<?>) doc;
        double[] s = new double[l.size()];
        for (int i = 0; i < s.length; i++) s[i] = Json.toDouble(l.get(i));
        return s;
    }

    private static byte[] readStdin() throws IOException {
        InputStream in = System.in;
        ByteArrayOutputStream buf = new ByteArrayOutputStream();
        byte[] b = new byte[1 << 16];
        int n;
        while ((n = in.read(b)) > 0) buf.write(b, 0, n);
        return buf.toByteArray();
    }
}
