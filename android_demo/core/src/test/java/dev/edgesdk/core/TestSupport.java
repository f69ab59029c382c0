package dev.edgesdk.core;

import java.io.File;
import java.io.FileOutputStream;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.util.Map;

/** Shared helpers: the repository root (for tests/vectors) and small artifact builders. */
final class TestSupport {
    private TestSupport() {}

    /** {@code -Dedgesdk.root=...} (set by the Makefile and Gradle), else the first parent holding tests/vectors. */
    static File repoRoot() {
        String prop = System.getProperty("edgesdk.root");
        if (prop != null && !prop.isEmpty()) return new File(prop);
        for (File d = new File("").getAbsoluteFile(); d != null; d = d.getParentFile()) {
            if (new File(d, "tests/vectors/profile_stats.json").isFile()) return d;
        }
        throw new IllegalStateException("cannot find the repository root; pass -Dedgesdk.root=PATH");
    }

    @SuppressWarnings("unchecked")
    static Map<String, Object> vectors(String name) throws IOException {
        File f = new File(repoRoot(), "tests/vectors/" + name);
        return (Map<String, Object>) Json.parse(Manifest.readAll(f, 64 << 20), Json.DEFAULT_LIMITS);
    }

    static void write(File f, byte[] data) throws IOException {
        f.getParentFile().mkdirs();
        FileOutputStream out = new FileOutputStream(f);
        try {
            out.write(data);
        } finally {
            out.close();
        }
    }

    static void write(File f, String text) throws IOException {
        write(f, text.getBytes(StandardCharsets.UTF_8));
    }

    /** A manifest for one payload file, in the shape `edgesdk convert` writes. */
    static String manifestJson(String path, long size, String sha256, String format, String target) {
        return "{\n"
                + "  \"schema\": \"edgesdk.manifest/1\",\n"
                + "  \"name\": \"mlp-" + target + "\",\n"
                + "  \"target\": \"" + target + "\",\n"
                + "  \"device\": \"cpu\",\n"
                + "  \"format\": \"" + format + "\",\n"
                + "  \"quantization\": {\"scheme\": \"fp32\"},\n"
                + "  \"programs\": {\n"
                + "    \"forward\": {\n"
                + "      \"file\": \"" + path + "\",\n"
                + "      \"method\": \"forward\",\n"
                + "      \"inputs\": [\n"
                + "        {\"name\": \"x\", \"shape\": [2, 32], \"dtype\": \"float32\"},\n"
                + "        {\"name\": \"ids\", \"shape\": [\"batch\", 5], \"dtype\": \"int64\", \"value_range\": [3, 9]},\n"
                + "        {\"name\": \"mask\", \"shape\": [1, 5], \"dtype\": \"bool\"}\n"
                + "      ],\n"
                + "      \"outputs\": [{\"name\": \"y\", \"shape\": [2, 8], \"dtype\": \"float32\"}]\n"
                + "    }\n"
                + "  },\n"
                + "  \"files\": [{\"path\": \"" + path + "\", \"size\": " + size + ", \"sha256\": \"" + sha256 + "\"}],\n"
                + "  \"versions\": {\"edge-sdk\": \"0.1.0\"},\n"
                + "  \"created_at\": \"2026-11-30T03:38:49+00:00\",\n"
                + "  \"verification\": {\"passed\": true, \"max_abs_err\": 8.940696716308594e-07},\n"
                + "  \"partition\": {\"delegated\": 3}\n"
                + "}\n";
    }

    /** Write payload + manifest under {@code dir}; returns the dir. */
    static File artifact(File dir, byte[] payload) throws IOException {
        File model = new File(dir, "model.pte");
        write(model, payload);
        write(new File(dir, "manifest.json"),
                manifestJson("model.pte", payload.length, Integrity.sha256(model), "pte", "executorch-xnnpack"));
        return dir;
    }
}
