package dev.edgesdk.core;

import java.math.BigDecimal;
import java.math.BigInteger;
import java.math.MathContext;
import java.math.RoundingMode;
import java.nio.ByteBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CharsetDecoder;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * A small, strict JSON reader and writer with no dependencies (Android and the plain JVM).
 *
 * <p>Reading follows Python's {@code json.loads}, which reads the same files on the other side:
 * objects become {@link LinkedHashMap} (a repeated key keeps its first position and its last
 * value), arrays {@link ArrayList}, integers {@link Long} (or {@link BigInteger} past 64 bits),
 * other numbers {@link Double}, and {@code NaN}/{@code Infinity}/{@code -Infinity} are read
 * as doubles unless {@link Limits#allowNonFinite} is off. Raw control characters in strings,
 * trailing commas, comments, single quotes and trailing data are errors. Limits bound the
 * input size, the nesting depth and integer literals (4300 digits, Python's own limit).
 *
 * <p>Writing produces exactly what Python's {@code json.dumps(obj, indent=...)} produces
 * (ASCII only, {@code ", "}/{@code ": "} separators without indent, floats spelled as Python's
 * {@code repr}), so a report written here is byte-identical to one written by
 * {@code ProfileReport.to_json()}. Non-finite doubles are refused (as with {@code allow_nan=False}).
 */
public final class Json {
    private Json() {}

    /** Bounds on untrusted input. */
    public static final class Limits {
        public final int maxBytes;
        public final int maxDepth;
        public final boolean allowNonFinite;

        public Limits(int maxBytes, int maxDepth, boolean allowNonFinite) {
            if (maxBytes < 1 || maxDepth < 1) throw new IllegalArgumentException("limits must be positive");
            this.maxBytes = maxBytes;
            this.maxDepth = maxDepth;
            this.allowNonFinite = allowNonFinite;
        }
    }

    /** 16 MiB, depth 64, NaN/Infinity accepted (as Python's json.loads does). */
    public static final Limits DEFAULT_LIMITS = new Limits(16 << 20, 64, true);
    static final int MAX_INT_DIGITS = 4300;

    /** A malformed document, or one over the limits. */
    public static final class JsonException extends RuntimeException {
        private static final long serialVersionUID = 1L;

        public JsonException(String message) {
            super(message);
        }
    }

    // ------------------------------------------------------------------ reading

    public static Object parse(String text) {
        return parse(text, DEFAULT_LIMITS);
    }

    public static Object parse(byte[] utf8, Limits limits) {
        if (utf8.length > limits.maxBytes) {
            throw new JsonException("document is " + utf8.length + " bytes (limit " + limits.maxBytes + ")");
        }
        CharsetDecoder dec = StandardCharsets.UTF_8.newDecoder()
                .onMalformedInput(CodingErrorAction.REPORT)
                .onUnmappableCharacter(CodingErrorAction.REPORT);
        String text;
        try {
            text = dec.decode(ByteBuffer.wrap(utf8)).toString();
        } catch (CharacterCodingException e) {
            throw new JsonException("document is not valid UTF-8");
        }
        return parse(text, limits);
    }

    public static Object parse(String text, Limits limits) {
        if (text.length() > limits.maxBytes) {
            throw new JsonException("document is " + text.length() + " characters (limit " + limits.maxBytes + ")");
        }
        Reader r = new Reader(text, limits);
        if (text.startsWith("\ufeff")) throw r.error("Unexpected UTF-8 BOM");
        r.skipWs();
        Object v = r.value(0);
        r.skipWs();
        if (r.pos != text.length()) throw r.error("Extra data");
        return v;
    }

    private static final class Reader {
        final String s;
        final Limits limits;
        int pos;

        Reader(String s, Limits limits) {
            this.s = s;
            this.limits = limits;
        }

        JsonException error(String what) {
            int line = 1, col = 1;
            for (int i = 0; i < pos && i < s.length(); i++) {
                if (s.charAt(i) == '\n') {
                    line++;
                    col = 1;
                } else {
                    col++;
                }
            }
            return new JsonException(what + ": line " + line + " column " + col + " (char " + pos + ")");
        }

        void skipWs() {
            while (pos < s.length()) {
                char c = s.charAt(pos);
                if (c == ' ' || c == '\t' || c == '\n' || c == '\r') pos++;
                else break;
            }
        }

        Object value(int depth) {
            if (pos >= s.length()) throw error("Expecting value");
            char c = s.charAt(pos);
            switch (c) {
                case '{': return object(depth + 1);
                case '[': return array(depth + 1);
                case '"': return string();
                case 't': return literal("true", Boolean.TRUE);
                case 'f': return literal("false", Boolean.FALSE);
                case 'n': return literal("null", null);
                case 'N': return nonFinite("NaN", Double.NaN);
                case 'I': return nonFinite("Infinity", Double.POSITIVE_INFINITY);
                default:
                    if (c == '-' && s.startsWith("-Infinity", pos)) return nonFinite("-Infinity", Double.NEGATIVE_INFINITY);
                    if (c == '-' || (c >= '0' && c <= '9')) return number();
                    throw error("Expecting value");
            }
        }

        Object literal(String word, Object v) {
            if (!s.startsWith(word, pos)) throw error("Expecting value");
            pos += word.length();
            return v;
        }

        Object nonFinite(String word, double v) {
            if (!s.startsWith(word, pos)) throw error("Expecting value");
            if (!limits.allowNonFinite) throw error("Non-finite number " + word + " is not allowed");
            pos += word.length();
            return v;
        }

        void enter(int depth) {
            if (depth > limits.maxDepth) throw error("Nesting deeper than " + limits.maxDepth + " levels");
        }

        Map<String, Object> object(int depth) {
            enter(depth);
            pos++; // {
            Map<String, Object> m = new LinkedHashMap<String, Object>();
            skipWs();
            if (pos < s.length() && s.charAt(pos) == '}') {
                pos++;
                return m;
            }
            while (true) {
                skipWs();
                if (pos >= s.length() || s.charAt(pos) != '"') {
                    throw error("Expecting property name enclosed in double quotes");
                }
                String key = string();
                skipWs();
                if (pos >= s.length() || s.charAt(pos) != ':') throw error("Expecting ':' delimiter");
                pos++;
                skipWs();
                m.put(key, value(depth));
                skipWs();
                if (pos >= s.length()) throw error("Expecting ',' delimiter");
                char c = s.charAt(pos++);
                if (c == '}') return m;
                if (c != ',') {
                    pos--;
                    throw error("Expecting ',' delimiter");
                }
            }
        }

        List<Object> array(int depth) {
            enter(depth);
            pos++; // [
            List<Object> a = new ArrayList<Object>();
            skipWs();
            if (pos < s.length() && s.charAt(pos) == ']') {
                pos++;
                return a;
            }
            while (true) {
                skipWs();
                a.add(value(depth));
                skipWs();
                if (pos >= s.length()) throw error("Expecting ',' delimiter");
                char c = s.charAt(pos++);
                if (c == ']') return a;
                if (c != ',') {
                    pos--;
                    throw error("Expecting ',' delimiter");
                }
            }
        }

        String string() {
            int start = pos;
            pos++; // opening quote
            StringBuilder sb = new StringBuilder();
            while (true) {
                if (pos >= s.length()) {
                    pos = start;
                    throw error("Unterminated string starting at");
                }
                char c = s.charAt(pos++);
                if (c == '"') return sb.toString();
                if (c < 0x20) {
                    pos--;
                    throw error("Invalid control character at");
                }
                if (c != '\\') {
                    sb.append(c);
                    continue;
                }
                if (pos >= s.length()) {
                    pos = start;
                    throw error("Unterminated string starting at");
                }
                char e = s.charAt(pos++);
                switch (e) {
                    case '"': sb.append('"'); break;
                    case '\\': sb.append('\\'); break;
                    case '/': sb.append('/'); break;
                    case 'b': sb.append('\b'); break;
                    case 'f': sb.append('\f'); break;
                    case 'n': sb.append('\n'); break;
                    case 'r': sb.append('\r'); break;
                    case 't': sb.append('\t'); break;
                    case 'u': {
                        if (pos + 4 > s.length()) {
                            pos--;
                            throw error("Invalid \\uXXXX escape");
                        }
                        int cp = 0;
                        for (int i = 0; i < 4; i++) {
                            int d = Character.digit(s.charAt(pos + i), 16);
                            if (d < 0) {
                                pos--;
                                throw error("Invalid \\uXXXX escape");
                            }
                            cp = cp * 16 + d;
                        }
                        pos += 4;
                        sb.append((char) cp);
                        break;
                    }
                    default:
                        pos -= 2;
                        throw error("Invalid \\escape");
                }
            }
        }

        Object number() {
            int start = pos;
            if (s.charAt(pos) == '-') pos++;
            if (pos >= s.length()) throw error("Expecting value");
            char c = s.charAt(pos);
            if (c == '0') {
                pos++;
            } else if (c >= '1' && c <= '9') {
                while (pos < s.length() && isDigit(s.charAt(pos))) pos++;
            } else {
                pos = start;
                throw error("Expecting value");
            }
            boolean integral = true;
            if (pos < s.length() && s.charAt(pos) == '.' && pos + 1 < s.length() && isDigit(s.charAt(pos + 1))) {
                integral = false;
                pos++;
                while (pos < s.length() && isDigit(s.charAt(pos))) pos++;
            }
            if (pos < s.length() && (s.charAt(pos) == 'e' || s.charAt(pos) == 'E')) {
                int save = pos;
                pos++;
                if (pos < s.length() && (s.charAt(pos) == '+' || s.charAt(pos) == '-')) pos++;
                if (pos < s.length() && isDigit(s.charAt(pos))) {
                    integral = false;
                    while (pos < s.length() && isDigit(s.charAt(pos))) pos++;
                } else {
                    pos = save; // "1e" is the number 1 followed by garbage, as in Python
                }
            }
            String lit = s.substring(start, pos);
            if (!integral) return Double.parseDouble(lit);
            int digits = lit.startsWith("-") ? lit.length() - 1 : lit.length();
            if (digits > MAX_INT_DIGITS) {
                pos = start;
                throw error("Integer literal longer than " + MAX_INT_DIGITS + " digits");
            }
            if (digits <= 18) return Long.parseLong(lit);
            BigInteger b = new BigInteger(lit);
            return b.bitLength() < 64 ? (Object) Long.valueOf(b.longValue()) : b;
        }

        static boolean isDigit(char c) {
            return c >= '0' && c <= '9';
        }
    }

    // ------------------------------------------------------------------ writing

    /** {@code json.dumps(value, indent=indent)}; {@code indent < 0} means Python's {@code indent=None}. */
    public static String write(Object value, int indent) {
        StringBuilder sb = new StringBuilder();
        write(sb, value, indent, 0);
        return sb.toString();
    }

    private static void newline(StringBuilder sb, int indent, int level) {
        sb.append('\n');
        for (int i = 0; i < indent * level; i++) sb.append(' ');
    }

    @SuppressWarnings("unchecked")
    private static void write(StringBuilder sb, Object v, int indent, int level) {
        if (v == null) {
            sb.append("null");
        } else if (v instanceof String) {
            quote(sb, (String) v);
        } else if (v instanceof Boolean) {
            sb.append(((Boolean) v) ? "true" : "false");
        } else if (v instanceof Double || v instanceof Float) {
            sb.append(formatDouble(((Number) v).doubleValue()));
        } else if (v instanceof Long || v instanceof Integer || v instanceof Short || v instanceof Byte
                || v instanceof BigInteger) {
            sb.append(v.toString());
        } else if (v instanceof Map) {
            Map<Object, Object> m = (Map<Object, Object>) v;
            if (m.isEmpty()) {
                sb.append("{}");
                return;
            }
            sb.append('{');
            boolean first = true;
            for (Map.Entry<Object, Object> e : m.entrySet()) {
                if (!(e.getKey() instanceof String)) throw new IllegalArgumentException("JSON keys must be strings");
                if (!first) sb.append(indent < 0 ? ", " : ",");
                first = false;
                if (indent >= 0) newline(sb, indent, level + 1);
                quote(sb, (String) e.getKey());
                sb.append(": ");
                write(sb, e.getValue(), indent, level + 1);
            }
            if (indent >= 0) newline(sb, indent, level);
            sb.append('}');
        } else if (v instanceof List) {
            List<Object> a = (List<Object>) v;
            if (a.isEmpty()) {
                sb.append("[]");
                return;
            }
            sb.append('[');
            for (int i = 0; i < a.size(); i++) {
                if (i > 0) sb.append(indent < 0 ? ", " : ",");
                if (indent >= 0) newline(sb, indent, level + 1);
                write(sb, a.get(i), indent, level + 1);
            }
            if (indent >= 0) newline(sb, indent, level);
            sb.append(']');
        } else if (v instanceof double[]) {
            List<Object> a = new ArrayList<Object>();
            for (double d : (double[]) v) a.add(d);
            write(sb, a, indent, level);
        } else {
            throw new IllegalArgumentException("cannot write " + v.getClass().getName() + " as JSON");
        }
    }

    private static final char[] HEX = "0123456789abcdef".toCharArray();

    /** A JSON string literal, escaped as Python's {@code json.dumps} does with {@code ensure_ascii=True}. */
    public static void quote(StringBuilder sb, String s) {
        sb.append('"');
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            switch (c) {
                case '"': sb.append("\\\""); break;
                case '\\': sb.append("\\\\"); break;
                case '\n': sb.append("\\n"); break;
                case '\r': sb.append("\\r"); break;
                case '\t': sb.append("\\t"); break;
                case '\b': sb.append("\\b"); break;
                case '\f': sb.append("\\f"); break;
                default:
                    if (c >= 0x20 && c <= 0x7e) {
                        sb.append(c);
                    } else {
                        sb.append("\\u").append(HEX[(c >> 12) & 15]).append(HEX[(c >> 8) & 15])
                                .append(HEX[(c >> 4) & 15]).append(HEX[c & 15]);
                    }
            }
        }
        sb.append('"');
    }

    /**
     * Python's {@code repr(float)}: the shortest decimal that reads back as the same double
     * (the nearest such decimal when several have that length), fixed notation for decimal
     * exponents in (-4, 16], otherwise {@code 1.5e-05} style.
     */
    public static String formatDouble(double d) {
        if (Double.isNaN(d) || Double.isInfinite(d)) {
            throw new IllegalArgumentException("JSON has no spelling for " + d + " (write null instead)");
        }
        if (d == 0.0) return (1.0 / d < 0) ? "-0.0" : "0.0";
        BigDecimal exact = new BigDecimal(d);
        BigDecimal best = null;
        for (int p = 1; p <= 17 && best == null; p++) {
            BigDecimal lo = exact.round(new MathContext(p, RoundingMode.FLOOR));
            BigDecimal hi = exact.round(new MathContext(p, RoundingMode.CEILING));
            boolean loOk = Double.parseDouble(lo.toString()) == d;
            boolean hiOk = Double.parseDouble(hi.toString()) == d;
            if (loOk && hiOk) {
                int cmp = exact.subtract(lo).compareTo(hi.subtract(exact));
                if (cmp < 0) best = lo;
                else if (cmp > 0) best = hi;
                else best = lo.unscaledValue().testBit(0) ? hi : lo;
            } else if (loOk) {
                best = lo;
            } else if (hiOk) {
                best = hi;
            }
        }
        if (best == null) best = exact.round(new MathContext(17, RoundingMode.HALF_EVEN));
        best = best.stripTrailingZeros();
        String digits = best.unscaledValue().abs().toString();
        int decpt = digits.length() - best.scale(); // value = 0.<digits> * 10^decpt
        StringBuilder sb = new StringBuilder();
        if (d < 0) sb.append('-');
        if (decpt > -4 && decpt <= 16) {
            if (decpt <= 0) {
                sb.append("0.");
                for (int i = 0; i < -decpt; i++) sb.append('0');
                sb.append(digits);
            } else if (decpt >= digits.length()) {
                sb.append(digits);
                for (int i = digits.length(); i < decpt; i++) sb.append('0');
                sb.append(".0");
            } else {
                sb.append(digits, 0, decpt).append('.').append(digits, decpt, digits.length());
            }
        } else {
            sb.append(digits.charAt(0));
            if (digits.length() > 1) sb.append('.').append(digits, 1, digits.length());
            int e = decpt - 1;
            sb.append('e').append(e < 0 ? '-' : '+');
            int ae = Math.abs(e);
            if (ae < 10) sb.append('0');
            sb.append(ae);
        }
        return sb.toString();
    }

    // ------------------------------------------------------------------ typed access

    /** Python's {@code isinstance(v, int) and not isinstance(v, bool)}. */
    public static boolean isInt(Object v) {
        return v instanceof Long || v instanceof BigInteger;
    }

    /** Python's {@code isinstance(v, (int, float)) and not isinstance(v, bool)}. */
    public static boolean isNumber(Object v) {
        return isInt(v) || v instanceof Double;
    }

    public static double toDouble(Object v) {
        if (v instanceof Number) return ((Number) v).doubleValue();
        throw new IllegalArgumentException("not a number: " + v);
    }
}
