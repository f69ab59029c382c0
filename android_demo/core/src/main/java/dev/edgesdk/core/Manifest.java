package dev.edgesdk.core;

import java.io.ByteArrayOutputStream;
import java.io.File;
import java.io.FileInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.math.BigDecimal;
import java.math.BigInteger;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;

/**
 * An artifact's {@code manifest.json}: parsing and validation with the rules of
 * {@code runtime/manifest.py} ({@code parse_manifest}), rule for rule and message for message.
 *
 * <p>The manifest is untrusted input: every field is type-checked, payload paths must stay
 * inside the artifact directory, and sizes/hashes are checked (see {@link Integrity}) before a
 * native library reads a byte of the payload. Every failure is an {@link SdkException} of kind
 * {@code IntegrityError}.
 */
public final class Manifest {
    public static final String SCHEMA = "edgesdk.manifest/1";
    public static final String MANIFEST_NAME = "manifest.json";
    public static final int MAX_MANIFEST_BYTES = 4 * 1024 * 1024;
    public static final int MAX_RANK = 8;
    public static final BigInteger MAX_ELEMENTS = BigInteger.ONE.shiftLeft(34);
    public static final long MAX_FILE_SIZE = 1L << 40;
    public static final List<String> DTYPES = Collections.unmodifiableList(Arrays.asList(
            "float32", "float16", "float64", "int64", "int32", "int16", "int8", "uint8", "bool"));
    /** Sorted, as Python prints {@code sorted(set(FORMATS.values()))}. */
    public static final List<String> FORMATS = Collections.unmodifiableList(Arrays.asList(
            "mlpackage", "onnx", "pte", "tflite"));
    /** Depth limit of the JSON reader for manifests (Python's is its recursion limit). */
    public static final int MAX_DEPTH = 64;

    private static final Set<String> KNOWN = new HashSet<String>(Arrays.asList(
            "schema", "name", "target", "device", "format", "quantization", "programs",
            "files", "versions", "created_at", "verification"));

    /** Name, shape and dtype of one input or output. Shape dims are {@code Long} (static) or {@code String} (symbolic). */
    public static final class TensorSpec {
        public final String name;
        public final List<Object> shape;
        public final String dtype;
        /** {@code [min, max]} of the example inputs (numbers), or null. */
        public final Number[] valueRange;

        TensorSpec(String name, List<Object> shape, String dtype, Number[] valueRange) {
            this.name = name;
            this.shape = Collections.unmodifiableList(shape);
            this.dtype = dtype;
            this.valueRange = valueRange;
        }

        /** Static shape with symbolic dims set to 1, as {@code runtime.profile.example_inputs} does. */
        public long[] concreteShape() {
            long[] out = new long[shape.size()];
            for (int i = 0; i < out.length; i++) {
                Object d = shape.get(i);
                out[i] = d instanceof Long ? (Long) d : 1L;
            }
            return out;
        }

        static TensorSpec fromJson(Object o, String where) {
            if (!(o instanceof Map)) {
                throw SdkException.integrity(where + ": expected an object, got " + pyType(o));
            }
            Map<?, ?> d = (Map<?, ?>) o;
            Object name = d.get("name");
            if (!(name instanceof String) || ((String) name).isEmpty() || codePoints((String) name) > 256) {
                throw SdkException.integrity(where + ".name: expected a non-empty string, got " + pyRepr(name));
            }
            Object dtype = d.get("dtype");
            if (!(dtype instanceof String) || !DTYPES.contains(dtype)) {
                throw SdkException.integrity(where + ".dtype: " + pyRepr(dtype) + " is not one of " + join(DTYPES));
            }
            Object shape = d.get("shape");
            if (!(shape instanceof List) || ((List<?>) shape).size() > MAX_RANK) {
                throw SdkException.integrity(where + ".shape: expected a list of at most " + MAX_RANK
                        + " dims, got " + pyRepr(shape));
            }
            List<Object> dims = new ArrayList<Object>();
            BigInteger elements = BigInteger.ONE;
            for (Object dim : (List<?>) shape) {
                if (!(Json.isInt(dim) || dim instanceof String)) {
                    throw SdkException.integrity(where + ".shape: dim " + pyRepr(dim) + " is neither an int nor a symbol");
                }
                if (Json.isInt(dim)) {
                    BigInteger b = big(dim);
                    if (b.signum() < 0) throw SdkException.integrity(where + ".shape: negative dim " + dim);
                    elements = elements.multiply(b);
                }
                dims.add(dim);
            }
            if (elements.compareTo(MAX_ELEMENTS) > 0) {
                throw SdkException.integrity(where + ".shape: " + pyRepr(shape) + " declares " + elements
                        + " elements (limit " + MAX_ELEMENTS + ")");
            }
            for (Object dim : dims) {
                if (dim instanceof BigInteger) { // only possible beside a zero dim; no real model has one
                    throw SdkException.integrity(where + ".shape: dim " + dim + " does not fit in 64 bits");
                }
            }
            Number[] vr = null;
            Object v = d.get("value_range");
            if (v != null) {
                boolean ok = v instanceof List && ((List<?>) v).size() == 2;
                if (ok) {
                    for (Object x : (List<?>) v) {
                        ok &= Json.isNumber(x) && isFinite(x);
                    }
                }
                if (ok) {
                    List<?> l = (List<?>) v;
                    ok = decimal(l.get(0)).compareTo(decimal(l.get(1))) <= 0;
                }
                if (!ok) throw SdkException.integrity(where + ".value_range: expected [min, max], got " + pyRepr(v));
                List<?> l = (List<?>) v;
                vr = new Number[] {(Number) l.get(0), (Number) l.get(1)};
            }
            return new TensorSpec((String) name, dims, (String) dtype, vr);
        }
    }

    /** One entry point of an artifact ({@code forward}, or {@code encode}/{@code decode_step}...). */
    public static final class ProgramSpec {
        public final String name;
        public final String file;
        public final String method;
        public final List<TensorSpec> inputs;
        public final List<TensorSpec> outputs;

        ProgramSpec(String name, String file, String method, List<TensorSpec> inputs, List<TensorSpec> outputs) {
            this.name = name;
            this.file = file;
            this.method = method;
            this.inputs = Collections.unmodifiableList(inputs);
            this.outputs = Collections.unmodifiableList(outputs);
        }
    }

    /** A payload file: relative path, size in bytes, lowercase hex sha256. */
    public static final class FileEntry {
        public final String path;
        public final long size;
        public final String sha256;

        FileEntry(String path, long size, String sha256) {
            this.path = path;
            this.size = size;
            this.sha256 = sha256;
        }
    }

    public final String name;
    public final String target;
    public final String format;
    public final String device;
    public final Map<String, ProgramSpec> programs;
    public final List<FileEntry> files;
    public final Map<String, Object> quantization;
    public final Map<String, Object> versions;
    public final String createdAt;
    public final Map<String, Object> verification;
    /** Top-level keys this schema does not name (per-target information), kept as read. */
    public final Map<String, Object> extra;

    private Manifest(String name, String target, String format, String device, Map<String, ProgramSpec> programs,
                     List<FileEntry> files, Map<String, Object> quantization, Map<String, Object> versions,
                     String createdAt, Map<String, Object> verification, Map<String, Object> extra) {
        this.name = name;
        this.target = target;
        this.format = format;
        this.device = device;
        this.programs = Collections.unmodifiableMap(programs);
        this.files = Collections.unmodifiableList(files);
        this.quantization = quantization;
        this.versions = versions;
        this.createdAt = createdAt;
        this.verification = verification;
        this.extra = Collections.unmodifiableMap(extra);
    }

    /** {@code forward} if the artifact has it, else its first program. */
    public ProgramSpec defaultProgram() {
        ProgramSpec p = programs.get("forward");
        return p != null ? p : programs.values().iterator().next();
    }

    /** The program named {@code name} (null: the default), or ConfigError listing the programs. */
    public ProgramSpec program(String name) {
        if (name == null || name.isEmpty()) return defaultProgram();
        ProgramSpec p = programs.get(name);
        if (p == null) {
            throw SdkException.config("no program '" + name + "'; this artifact has " + join(programs.keySet()));
        }
        return p;
    }

    // ------------------------------------------------------------------ reading

    /** Read and validate {@code dir/manifest.json} (size checked before reading). */
    public static Manifest read(File dir) {
        File f = new File(dir, MANIFEST_NAME);
        if (!f.isFile()) {
            throw SdkException.config(dir + ": directory has no " + MANIFEST_NAME
                    + "; is it an artifact from `edgesdk convert`?");
        }
        long size = f.length();
        if (size > MAX_MANIFEST_BYTES) {
            throw SdkException.integrity(f + ": " + size + " bytes is too large for a manifest");
        }
        byte[] bytes;
        try {
            bytes = readAll(f, MAX_MANIFEST_BYTES + 1);
        } catch (IOException e) {
            throw SdkException.integrity("cannot read " + f + ": " + e.getMessage());
        }
        return parse(bytes);
    }

    /** Parse and validate manifest JSON, as {@code runtime.manifest.parse_manifest}. */
    public static Manifest parse(byte[] utf8) {
        if (utf8.length > MAX_MANIFEST_BYTES) {
            throw SdkException.integrity("manifest is " + utf8.length + " bytes (limit " + MAX_MANIFEST_BYTES + ")");
        }
        Object doc;
        try {
            doc = Json.parse(utf8, new Json.Limits(MAX_MANIFEST_BYTES, MAX_DEPTH, true));
        } catch (Json.JsonException e) {
            throw SdkException.integrity("manifest is not valid JSON: " + e.getMessage());
        }
        return fromJson(doc);
    }

    @SuppressWarnings("unchecked")
    static Manifest fromJson(Object doc) {
        if (!(doc instanceof Map)) throw SdkException.integrity("manifest: top level must be an object");
        Map<String, Object> d = (Map<String, Object>) doc;
        if (!SCHEMA.equals(d.get("schema"))) {
            throw SdkException.integrity("manifest schema " + pyRepr(d.get("schema"))
                    + " is not supported (expected '" + SCHEMA + "')");
        }
        for (String key : new String[] {"name", "target", "format"}) {
            Object v = d.get(key);
            if (!(v instanceof String) || ((String) v).isEmpty()) {
                throw SdkException.integrity("manifest." + key + ": expected a non-empty string, got " + pyRepr(v));
            }
        }
        String format = (String) d.get("format");
        if (!FORMATS.contains(format)) {
            throw SdkException.integrity("manifest.format " + pyRepr(format) + " is not one of " + pyRepr(FORMATS));
        }
        Object filesRaw = d.get("files");
        if (!(filesRaw instanceof List) || ((List<?>) filesRaw).isEmpty() || ((List<?>) filesRaw).size() > 64) {
            throw SdkException.integrity("manifest.files: expected a list of 1..64 payload entries");
        }
        List<FileEntry> files = new ArrayList<FileEntry>();
        Set<String> listed = new HashSet<String>();
        List<?> fl = (List<?>) filesRaw;
        for (int i = 0; i < fl.size(); i++) {
            String where = "manifest.files[" + i + "]";
            if (!(fl.get(i) instanceof Map)) throw SdkException.integrity(where + ": expected an object");
            Map<?, ?> f = (Map<?, ?>) fl.get(i);
            String path = safeRelpath(f.get("path"), where);
            Object size = f.get("size");
            Object sha = f.get("sha256");
            if (!Json.isInt(size) || big(size).signum() < 0 || big(size).compareTo(BigInteger.valueOf(MAX_FILE_SIZE)) > 0) {
                throw SdkException.integrity(where + ".size: invalid size " + pyRepr(size));
            }
            if (!(sha instanceof String) || !isLowerHex64((String) sha)) {
                throw SdkException.integrity(where + ".sha256: expected 64 lowercase hex digits");
            }
            files.add(new FileEntry(path, (Long) size, (String) sha));
            listed.add(path);
        }
        Object progsRaw = d.get("programs");
        if (!(progsRaw instanceof Map) || ((Map<?, ?>) progsRaw).isEmpty() || ((Map<?, ?>) progsRaw).size() > 32) {
            throw SdkException.integrity("manifest.programs: expected an object with 1..32 programs");
        }
        Map<String, ProgramSpec> programs = new LinkedHashMap<String, ProgramSpec>();
        for (Map.Entry<String, Object> e : ((Map<String, Object>) progsRaw).entrySet()) {
            String pname = e.getKey();
            String where = "manifest.programs[" + pyRepr(pname) + "]";
            if (!(e.getValue() instanceof Map)) throw SdkException.integrity(where + ": expected an object");
            Map<?, ?> p = (Map<?, ?>) e.getValue();
            String file = safeRelpath(p.get("file"), where + ".file");
            if (!listed.contains(file)) {
                throw SdkException.integrity(where + ".file " + pyRepr(file) + " is not listed in manifest.files");
            }
            Object method = p.containsKey("method") ? p.get("method") : pname;
            if (!(method instanceof String) || ((String) method).isEmpty()) {
                throw SdkException.integrity(where + ".method: expected a string");
            }
            List<List<TensorSpec>> specs = new ArrayList<List<TensorSpec>>();
            for (String kind : new String[] {"inputs", "outputs"}) {
                Object lst = p.get(kind);
                if (!(lst instanceof List) || ((List<?>) lst).size() > 256) {
                    throw SdkException.integrity(where + "." + kind + ": expected a list");
                }
                List<TensorSpec> out = new ArrayList<TensorSpec>();
                List<?> l = (List<?>) lst;
                for (int j = 0; j < l.size(); j++) {
                    out.add(TensorSpec.fromJson(l.get(j), where + "." + kind + "[" + j + "]"));
                }
                specs.add(out);
            }
            List<String> names = new ArrayList<String>();
            for (TensorSpec s : specs.get(0)) names.add(s.name);
            if (new HashSet<String>(names).size() != names.size()) {
                throw SdkException.integrity(where + ".inputs: duplicate input names " + pyRepr(names));
            }
            programs.put(pname, new ProgramSpec(pname, file, (String) method, specs.get(0), specs.get(1)));
        }
        for (String key : new String[] {"quantization", "versions", "verification"}) {
            if (d.containsKey(key) && !(d.get(key) instanceof Map)) {
                throw SdkException.integrity("manifest." + key + ": expected an object");
            }
        }
        Map<String, Object> quant;
        if (d.containsKey("quantization")) {
            quant = (Map<String, Object>) d.get("quantization");
        } else {
            quant = new LinkedHashMap<String, Object>();
            quant.put("scheme", "fp32");
        }
        Map<String, Object> extra = new LinkedHashMap<String, Object>();
        for (Map.Entry<String, Object> e : d.entrySet()) {
            if (!KNOWN.contains(e.getKey())) extra.put(e.getKey(), e.getValue());
        }
        return new Manifest(
                (String) d.get("name"), (String) d.get("target"), format,
                d.containsKey("device") ? pyStr(d.get("device")) : "cpu",
                programs, files, quant, mapOrEmpty(d.get("versions")),
                d.containsKey("created_at") ? pyStr(d.get("created_at")) : "",
                mapOrEmpty(d.get("verification")), extra);
    }

    /** A payload path must be a plain relative path inside the artifact directory ({@code _safe_relpath}). */
    static String safeRelpath(Object p, String where) {
        if (!(p instanceof String) || ((String) p).isEmpty() || codePoints((String) p) > 512
                || ((String) p).indexOf('\0') >= 0 || ((String) p).indexOf('\\') >= 0) {
            throw SdkException.integrity(where + ": invalid payload path " + pyRepr(p));
        }
        String s = (String) p;
        boolean escapes = s.startsWith("/");
        for (String part : s.split("/", -1)) {
            if (part.equals("..")) escapes = true; // "" and "." parts vanish in pathlib, as here
        }
        if (escapes) throw SdkException.integrity(where + ": payload path " + pyRepr(s) + " escapes the artifact directory");
        return s;
    }

    // ------------------------------------------------------------------ helpers (Python spellings in messages)

    private static boolean isLowerHex64(String s) {
        if (s.length() != 64) return false;
        for (int i = 0; i < 64; i++) {
            char c = s.charAt(i);
            if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
        }
        return true;
    }

    private static int codePoints(String s) {
        return s.codePointCount(0, s.length());
    }

    private static BigInteger big(Object v) {
        return v instanceof BigInteger ? (BigInteger) v : BigInteger.valueOf((Long) v);
    }

    private static BigDecimal decimal(Object v) {
        if (v instanceof Double) return new BigDecimal((Double) v);
        return new BigDecimal(big(v));
    }

    private static boolean isFinite(Object v) {
        if (v instanceof Double) return !((Double) v).isNaN() && !((Double) v).isInfinite();
        // Python's math.isfinite(int) converts to float; beyond ~1.8e308 it raises: refuse those
        return big(v).abs().bitLength() <= 1024;
    }

    @SuppressWarnings("unchecked")
    private static Map<String, Object> mapOrEmpty(Object v) {
        return v instanceof Map ? (Map<String, Object>) v : new LinkedHashMap<String, Object>();
    }

    private static String pyStr(Object v) {
        return v instanceof String ? (String) v : pyRepr(v);
    }

    static String join(Iterable<String> items) {
        StringBuilder sb = new StringBuilder();
        for (String s : items) {
            if (sb.length() > 0) sb.append(", ");
            sb.append(s);
        }
        return sb.toString();
    }

    /** Roughly Python's {@code repr} for JSON values, for error messages. */
    static String pyRepr(Object v) {
        if (v == null) return "None";
        if (v instanceof Boolean) return ((Boolean) v) ? "True" : "False";
        if (v instanceof String) {
            String s = (String) v;
            char q = (s.indexOf('\'') >= 0 && s.indexOf('"') < 0) ? '"' : '\'';
            StringBuilder sb = new StringBuilder().append(q);
            for (int i = 0; i < s.length(); i++) {
                char c = s.charAt(i);
                if (c == '\\' || c == q) sb.append('\\').append(c);
                else if (c == '\n') sb.append("\\n");
                else if (c == '\r') sb.append("\\r");
                else if (c == '\t') sb.append("\\t");
                else if (c < 0x20 || c == 0x7f) sb.append(String.format(Locale.US, "\\x%02x", (int) c));
                else sb.append(c);
            }
            return sb.append(q).toString();
        }
        if (v instanceof Double) {
            double d = (Double) v;
            if (Double.isNaN(d)) return "nan";
            if (Double.isInfinite(d)) return d > 0 ? "inf" : "-inf";
            return Json.formatDouble(d);
        }
        if (v instanceof List) {
            StringBuilder sb = new StringBuilder("[");
            for (Object o : (List<?>) v) {
                if (sb.length() > 1) sb.append(", ");
                sb.append(pyRepr(o));
            }
            return sb.append(']').toString();
        }
        if (v instanceof Map) {
            StringBuilder sb = new StringBuilder("{");
            for (Map.Entry<?, ?> e : ((Map<?, ?>) v).entrySet()) {
                if (sb.length() > 1) sb.append(", ");
                sb.append(pyRepr(e.getKey())).append(": ").append(pyRepr(e.getValue()));
            }
            return sb.append('}').toString();
        }
        return String.valueOf(v);
    }

    private static String pyType(Object v) {
        if (v == null) return "NoneType";
        if (v instanceof String) return "str";
        if (v instanceof Boolean) return "bool";
        if (v instanceof Double) return "float";
        if (Json.isInt(v)) return "int";
        if (v instanceof List) return "list";
        return v.getClass().getSimpleName();
    }

    static byte[] readAll(File f, int limit) throws IOException {
        InputStream in = new FileInputStream(f);
        try {
            ByteArrayOutputStream out = new ByteArrayOutputStream();
            byte[] buf = new byte[1 << 16];
            int n;
            while ((n = in.read(buf)) > 0) {
                out.write(buf, 0, n);
                if (out.size() > limit) throw new IOException("more than " + limit + " bytes");
            }
            return out.toByteArray();
        } finally {
            in.close();
        }
    }
}
