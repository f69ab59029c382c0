package dev.edgesdk.core;

import java.io.File;
import java.io.FileInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;

/**
 * Payload integrity, as {@code runtime.manifest.verify_payload}: every file listed in the
 * manifest must resolve inside the artifact directory, exist, have the listed size (checked
 * first: cheap, and catches truncated pushes) and the listed SHA-256. Runs before any backend
 * opens a payload file.
 */
public final class Integrity {
    private Integrity() {}

    public static void verify(File root, Manifest manifest) {
        File rootReal;
        try {
            rootReal = root.getCanonicalFile();
        } catch (IOException e) {
            throw SdkException.integrity("cannot resolve " + root + ": " + e.getMessage());
        }
        for (Manifest.FileEntry f : manifest.files) {
            File p = new File(root, f.path);
            File real;
            try {
                real = p.getCanonicalFile();
            } catch (IOException e) {
                throw SdkException.integrity(p + ": cannot resolve: " + e.getMessage());
            }
            if (!isInside(rootReal, real)) {
                throw SdkException.integrity(p + ": resolves outside the artifact directory " + rootReal);
            }
            if (!p.isFile()) {
                throw SdkException.integrity(p + ": payload file listed in the manifest is missing");
            }
            long size = p.length();
            if (size != f.size) {
                throw SdkException.integrity(p + ": size " + size + " bytes, manifest says " + f.size
                        + " (truncated or replaced file)");
            }
            String actual;
            try {
                actual = sha256(p);
            } catch (IOException e) {
                throw SdkException.integrity("cannot read " + p + ": " + e.getMessage());
            }
            if (!actual.equals(f.sha256)) {
                throw SdkException.integrity(p + ": sha256 " + actual + " differs from the manifest's " + f.sha256);
            }
        }
    }

    /** True when {@code child} lies strictly below {@code dir} (both canonical). */
    static boolean isInside(File dir, File child) {
        for (File q = child.getParentFile(); q != null; q = q.getParentFile()) {
            if (q.equals(dir)) return true;
        }
        return false;
    }

    /** Lowercase hex SHA-256 of a file, read in 1 MiB blocks. */
    public static String sha256(File f) throws IOException {
        MessageDigest md;
        try {
            md = MessageDigest.getInstance("SHA-256");
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException("SHA-256 is missing from this JVM", e);
        }
        InputStream in = new FileInputStream(f);
        try {
            byte[] buf = new byte[1 << 20];
            int n;
            while ((n = in.read(buf)) > 0) md.update(buf, 0, n);
        } finally {
            in.close();
        }
        return hex(md.digest());
    }

    static String hex(byte[] b) {
        char[] digits = "0123456789abcdef".toCharArray();
        StringBuilder sb = new StringBuilder(b.length * 2);
        for (byte x : b) sb.append(digits[(x >> 4) & 15]).append(digits[x & 15]);
        return sb.toString();
    }
}
