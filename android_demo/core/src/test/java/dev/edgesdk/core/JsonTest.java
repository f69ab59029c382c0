package dev.edgesdk.core;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import java.math.BigInteger;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.Test;

public class JsonTest {

    static void rejects(String doc, String fragment) {
        rejects(doc, fragment, Json.DEFAULT_LIMITS);
    }

    static void rejects(String doc, String fragment, Json.Limits limits) {
        try {
            Json.parse(doc.getBytes(StandardCharsets.UTF_8), limits);
            fail("accepted " + doc);
        } catch (Json.JsonException e) {
            assertTrue(doc + " -> " + e.getMessage(), e.getMessage().contains(fragment));
        }
    }

    @Test
    @SuppressWarnings("unchecked")
    public void readsTheTypesPythonReads() {
        Map<String, Object> m = (Map<String, Object>) Json.parse(
                "{\"i\": -12, \"f\": 1.5, \"e\": 1e3, \"big\": 123456789012345678901234567890, \"s\": \"a\\u00e9\\n\\\"\","
                        + " \"t\": true, \"n\": null, \"a\": [1, [2, {}], []], \"nan\": NaN, \"inf\": -Infinity}");
        assertEquals(-12L, m.get("i"));
        assertEquals(1.5, m.get("f"));
        assertEquals(1000.0, m.get("e"));
        assertEquals(new BigInteger("123456789012345678901234567890"), m.get("big"));
        assertEquals("a\u00e9\n\"", m.get("s"));
        assertEquals(Boolean.TRUE, m.get("t"));
        assertTrue(m.containsKey("n") && m.get("n") == null);
        assertEquals(Arrays.asList(1L, Arrays.asList(2L, new LinkedHashMap<String, Object>()), new ArrayList<Object>()), m.get("a"));
        assertTrue(Double.isNaN((Double) m.get("nan")));
        assertEquals(Double.NEGATIVE_INFINITY, m.get("inf"));
        assertEquals(Arrays.asList("i", "f", "e", "big", "s", "t", "n", "a", "nan", "inf"), new ArrayList<String>(m.keySet()));
        assertEquals(Long.MAX_VALUE, Json.parse("9223372036854775807"));
        assertEquals(new BigInteger("9223372036854775808"), Json.parse("9223372036854775808"));
    }

    @Test
    @SuppressWarnings("unchecked")
    public void repeatedKeyKeepsFirstPositionAndLastValue() {
        Map<String, Object> m = (Map<String, Object>) Json.parse("{\"a\": 1, \"b\": 2, \"a\": 3}");
        assertEquals(Arrays.asList("a", "b"), new ArrayList<String>(m.keySet()));
        assertEquals(3L, m.get("a"));
    }

    @Test
    public void rejectsWhatPythonRejects() {
        rejects("", "Expecting value");
        rejects("[1, 2,]", "Expecting value");
        rejects("{\"a\": 1,}", "Expecting property name");
        rejects("{'a': 1}", "Expecting property name");
        rejects("[1] // c", "Extra data");
        rejects("{} {}", "Extra data");
        rejects("01", "Extra data");
        rejects("[.5]", "Expecting value");
        rejects("[+1]", "Expecting value");
        rejects("[1.]", "Expecting ',' delimiter");
        rejects("\"abc", "Unterminated string");
        rejects("\"a\tb\"", "Invalid control character");
        rejects("\"\\x41\"", "Invalid \\escape");
        rejects("\"\\u12g4\"", "Invalid \\uXXXX escape");
        rejects("\ufeff{}", "Unexpected UTF-8 BOM");
        rejects("[tru]", "Expecting value");
        rejects("{\"a\" 1}", "Expecting ':' delimiter");
        rejects("-", "Expecting value");
    }

    @Test
    public void enforcesLimits() {
        StringBuilder deep = new StringBuilder();
        for (int i = 0; i < 65; i++) deep.append('[');
        for (int i = 0; i < 65; i++) deep.append(']');
        rejects(deep.toString(), "Nesting deeper than 64");
        Json.parse(deep.substring(1, deep.length() - 1)); // 64 levels are fine
        rejects("[1, 2, 3]", "limit 4", new Json.Limits(4, 8, true));
        rejects("[NaN]", "Non-finite", new Json.Limits(100, 8, false));
        StringBuilder digits = new StringBuilder("1");
        for (int i = 0; i < Json.MAX_INT_DIGITS; i++) digits.append('0');
        rejects(digits.toString(), "4300 digits");
        try {
            Json.parse(new byte[] {'"', (byte) 0xff, '"'}, Json.DEFAULT_LIMITS);
            fail("accepted invalid UTF-8");
        } catch (Json.JsonException e) {
            assertTrue(e.getMessage().contains("UTF-8"));
        }
    }

    @Test
    public void writesWhatPythonJsonDumpsWrites() {
        Map<String, Object> m = new LinkedHashMap<String, Object>();
        m.put("a", Arrays.asList(1L, 2.5, "x"));
        m.put("b", new LinkedHashMap<String, Object>());
        m.put("c", new ArrayList<Object>());
        m.put("d", null);
        m.put("e", Boolean.FALSE);
        m.put("s", "\u00e9\u007f\"\\\b\f\n\r\t\u0001\ud83d\ude80/");
        // json.dumps(m, indent=2) and json.dumps(m)
        assertEquals("{\n  \"a\": [\n    1,\n    2.5,\n    \"x\"\n  ],\n  \"b\": {},\n  \"c\": [],\n  \"d\": null,\n"
                + "  \"e\": false,\n  \"s\": \"\\u00e9\\u007f\\\"\\\\\\b\\f\\n\\r\\t\\u0001\\ud83d\\ude80/\"\n}", Json.write(m, 2));
        assertEquals("{\"a\": [1, 2.5, \"x\"], \"b\": {}, \"c\": [], \"d\": null, \"e\": false, "
                + "\"s\": \"\\u00e9\\u007f\\\"\\\\\\b\\f\\n\\r\\t\\u0001\\ud83d\\ude80/\"}", Json.write(m, -1));
        List<Object> l = new ArrayList<Object>();
        l.add(Double.NaN);
        try {
            Json.write(l, 2);
            fail("wrote NaN");
        } catch (IllegalArgumentException expected) {
            // JSON has no NaN: the report writer turns it into null first
        }
    }

    @Test
    public void doublesAreSpelledAsPythonRepr() {
        String[][] cases = {
            {"0.1", "0.1"}, {"1e16", "1e+16"}, {"1e15", "1000000000000000.0"}, {"1e-05", "1e-05"},
            {"0.0001", "0.0001"}, {"5.0", "5.0"}, {"-0.0", "-0.0"}, {"1.5e-300", "1.5e-300"},
            {"4.9e-324", "5e-324"}, {"1.7976931348623157e308", "1.7976931348623157e+308"},
            {"3.0000000000000004", "3.0000000000000004"}, {"123456789.125", "123456789.125"},
            {"1.3156445000000005", "1.3156445000000005"}, {"2e-7", "2e-07"}, {"100.0", "100.0"},
        };
        for (String[] c : cases) assertEquals(c[0], c[1], Json.formatDouble(Double.parseDouble(c[0])));
        java.util.Random r = new java.util.Random(7);
        for (int i = 0; i < 20000; i++) {
            double d = Double.longBitsToDouble(r.nextLong());
            if (Double.isNaN(d) || Double.isInfinite(d)) continue;
            assertEquals(d, Double.parseDouble(Json.formatDouble(d)), 0.0); // always reads back exactly
        }
    }
}
