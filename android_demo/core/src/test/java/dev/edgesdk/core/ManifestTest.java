package dev.edgesdk.core;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertNull;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import java.nio.charset.StandardCharsets;
import java.util.Arrays;
import org.junit.Test;

/** The rules of runtime/manifest.py's parse_manifest, mirrored (tests/test_android_core.py compares both sides). */
public class ManifestTest {
    static final String SHA = "7c51ec299d4dde179e36a9e79d2493c1df5531142a651a048d50bcdfeeb397c6";
    static final String GOOD = TestSupport.manifestJson("model.pte", 2659880, SHA, "pte", "executorch-xnnpack");

    static Manifest parse(String s) {
        return Manifest.parse(s.getBytes(StandardCharsets.UTF_8));
    }

    static void rejects(String doc, String fragment) {
        try {
            parse(doc);
            fail("accepted: " + fragment);
        } catch (SdkException e) {
            assertEquals(SdkException.Kind.IntegrityError, e.kind());
            assertTrue("message '" + e.getMessage() + "' lacks '" + fragment + "'", e.getMessage().contains(fragment));
        }
    }

    /** GOOD with one substring replaced (the replaced text must occur). */
    static String with(String from, String to) {
        assertTrue("fixture lacks " + from, GOOD.contains(from));
        return GOOD.replace(from, to);
    }

    @Test
    public void readsWhatConvertWrites() {
        Manifest m = parse(GOOD);
        assertEquals("mlp-executorch-xnnpack", m.name);
        assertEquals("executorch-xnnpack", m.target);
        assertEquals("pte", m.format);
        assertEquals("cpu", m.device);
        assertEquals("fp32", m.quantization.get("scheme"));
        assertEquals(1, m.files.size());
        assertEquals(2659880L, m.files.get(0).size);
        Manifest.ProgramSpec p = m.defaultProgram();
        assertEquals("forward", p.name);
        assertEquals("model.pte", p.file);
        assertEquals(3, p.inputs.size());
        assertEquals(Arrays.<Object>asList("batch", 5L), p.inputs.get(1).shape);
        assertEquals(1L, p.inputs.get(1).concreteShape()[0]);
        assertEquals(3L, p.inputs.get(1).valueRange[0]);
        assertNull(p.inputs.get(0).valueRange);
        assertEquals("bool", p.inputs.get(2).dtype);
        assertTrue(m.extra.containsKey("partition"));
        assertEquals("2026-11-30T03:38:49+00:00", m.createdAt);
        assertEquals(p, m.program("forward"));
        try {
            m.program("decode");
            fail();
        } catch (SdkException e) {
            assertEquals(SdkException.Kind.ConfigError, e.kind());
            assertTrue(e.getMessage().contains("this artifact has forward"));
        }
    }

    @Test
    public void defaultsAsInPython() {
        Manifest m = parse(with("  \"device\": \"cpu\",\n", "").replace("  \"quantization\": {\"scheme\": \"fp32\"},\n", "")
                .replace("      \"method\": \"forward\",\n", ""));
        assertEquals("cpu", m.device);
        assertEquals("fp32", m.quantization.get("scheme"));
        assertEquals("forward", m.defaultProgram().method);
    }

    @Test
    public void rejectsMalformedTopLevel() {
        rejects("[]", "top level must be an object");
        rejects("{", "manifest is not valid JSON");
        rejects(with("edgesdk.manifest/1", "edgesdk.manifest/2"), "manifest schema 'edgesdk.manifest/2' is not supported");
        rejects(with("\"name\": \"mlp-executorch-xnnpack\"", "\"name\": \"\""), "manifest.name: expected a non-empty string, got ''");
        rejects(with("\"target\": \"executorch-xnnpack\"", "\"target\": 3"), "manifest.target: expected a non-empty string, got 3");
        rejects(with("\"format\": \"pte\"", "\"format\": \"exe\""),
                "manifest.format 'exe' is not one of ['mlpackage', 'onnx', 'pte', 'tflite']");
        rejects(with("\"quantization\": {\"scheme\": \"fp32\"}", "\"quantization\": \"fp32\""), "manifest.quantization: expected an object");
        rejects(with("\"versions\": {\"edge-sdk\": \"0.1.0\"}", "\"versions\": null"), "manifest.versions: expected an object");
        StringBuilder big = new StringBuilder(GOOD.substring(0, GOOD.length() - 2));
        big.append(", \"pad\": \"");
        while (big.length() < Manifest.MAX_MANIFEST_BYTES) big.append("xxxxxxxxxxxxxxxx");
        big.append("\"}");
        rejects(big.toString(), "(limit 4194304)");
    }

    @Test
    public void rejectsPayloadPathsOutsideTheArtifact() {
        for (String bad : new String[] {"../model.pte", "/etc/passwd", "a/../../model.pte", "..", "sub/.."}) {
            rejects(GOOD.replace("model.pte", bad), "escapes the artifact directory");
        }
        rejects(GOOD.replace("model.pte", "a\\\\b.pte"), "invalid payload path 'a\\\\b.pte'");
        rejects(GOOD.replace("\"path\": \"model.pte\"", "\"path\": \"\""), "manifest.files[0]: invalid payload path ''");
        rejects(GOOD.replace("model.pte", "a\\u0000b"), "invalid payload path");
        StringBuilder longName = new StringBuilder();
        for (int i = 0; i < 513; i++) longName.append('a');
        rejects(GOOD.replace("model.pte", longName.toString()), "invalid payload path");
        // harmless spellings pathlib accepts are accepted here too
        parse(GOOD.replace("model.pte", "sub/model.pte"));
        parse(GOOD.replace("model.pte", "./model.pte"));
        parse(GOOD.replace("model.pte", "..model.pte"));
    }

    @Test
    public void rejectsBadFileEntries() {
        rejects(with("\"files\": [{", "\"files\": [], \"x\": [{"), "manifest.files: expected a list of 1..64 payload entries");
        rejects(with("\"size\": 2659880", "\"size\": -1"), "manifest.files[0].size: invalid size -1");
        rejects(with("\"size\": 2659880", "\"size\": true"), "manifest.files[0].size: invalid size True");
        rejects(with("\"size\": 2659880", "\"size\": 2659880.0"), "invalid size 2659880.0");
        rejects(with("\"size\": 2659880", "\"size\": 1099511627777"), "invalid size 1099511627777");
        rejects(with(SHA, SHA.toUpperCase()), "manifest.files[0].sha256: expected 64 lowercase hex digits");
        rejects(with(SHA, SHA.substring(1)), "expected 64 lowercase hex digits");
        StringBuilder many = new StringBuilder();
        for (int i = 0; i < 65; i++) {
            many.append(i == 0 ? "" : ", ").append("{\"path\": \"f").append(i).append("\", \"size\": 1, \"sha256\": \"").append(SHA).append("\"}");
        }
        rejects(GOOD.replaceFirst("\"files\": \\[\\{.*\\}\\]", "\"files\": [" + many + "]"), "1..64 payload entries");
    }

    @Test
    public void rejectsBadPrograms() {
        rejects(with("\"programs\": {", "\"programs\": {}, \"p\": {"), "manifest.programs: expected an object with 1..32 programs");
        rejects(with("\"file\": \"model.pte\"", "\"file\": \"other.pte\""),
                "manifest.programs['forward'].file 'other.pte' is not listed in manifest.files");
        rejects(with("\"method\": \"forward\"", "\"method\": null"), "manifest.programs['forward'].method: expected a string");
        rejects(with("\"outputs\": [", "\"outputs\": 3, \"o\": ["), "manifest.programs['forward'].outputs: expected a list");
        rejects(with("{\"name\": \"mask\"", "{\"name\": \"x\""),
                "manifest.programs['forward'].inputs: duplicate input names ['x', 'ids', 'x']");
    }

    @Test
    public void rejectsBadTensorSpecs() {
        String w = "manifest.programs['forward'].inputs[0]";
        rejects(with("{\"name\": \"x\", ", "{\"name\": \"\", "), w + ".name: expected a non-empty string, got ''");
        rejects(with("\"dtype\": \"float32\"}", "\"dtype\": \"float128\"}"),
                w + ".dtype: 'float128' is not one of float32, float16, float64, int64, int32, int16, int8, uint8, bool");
        rejects(with("[2, 32]", "[1, 1, 1, 1, 1, 1, 1, 1, 1]"), w + ".shape: expected a list of at most 8 dims");
        rejects(with("[2, 32]", "[2, -32]"), w + ".shape: negative dim -32");
        rejects(with("[2, 32]", "[2, true]"), w + ".shape: dim True is neither an int nor a symbol");
        rejects(with("[2, 32]", "[2, 3.0]"), w + ".shape: dim 3.0 is neither an int nor a symbol");
        rejects(with("[2, 32]", "[131072, 131073]"), w + ".shape: [131072, 131073] declares 17180000256 elements (limit 17179869184)");
        parse(with("[2, 32]", "[131072, 131072]")); // exactly the limit
        String v = "manifest.programs['forward'].inputs[1].value_range";
        rejects(with("[3, 9]", "[9, 3]"), v + ": expected [min, max], got [9, 3]");
        rejects(with("[3, 9]", "[3]"), v + ": expected [min, max], got [3]");
        rejects(with("[3, 9]", "[3, NaN]"), v + ": expected [min, max], got [3, nan]");
        rejects(with("[3, 9]", "[false, 9]"), v + ": expected [min, max], got [False, 9]");
        parse(with("[3, 9]", "[2.5, 3]"));
        parse(with(", \"value_range\": [3, 9]", ", \"value_range\": null"));
        rejects(with("{\"name\": \"x\", \"shape\": [2, 32], \"dtype\": \"float32\"}", "7"), w + ": expected an object, got int");
    }
}
