package dev.edgesdk.core;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import java.io.File;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import org.junit.Rule;
import org.junit.Test;
import org.junit.rules.TemporaryFolder;

public class IntegrityTest {
    @Rule public TemporaryFolder tmp = new TemporaryFolder();

    static void fails(File dir, String fragment) {
        try {
            Integrity.verify(dir, Manifest.read(dir));
            fail("verified a bad artifact: " + fragment);
        } catch (SdkException e) {
            assertEquals(SdkException.Kind.IntegrityError, e.kind());
            assertTrue(e.getMessage(), e.getMessage().contains(fragment));
        }
    }

    @Test
    public void sha256OfKnownInput() throws Exception {
        File f = tmp.newFile();
        TestSupport.write(f, "abc");
        assertEquals("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", Integrity.sha256(f));
    }

    @Test
    public void acceptsAnIntactArtifact() throws Exception {
        File dir = TestSupport.artifact(tmp.newFolder("a"), "payload bytes".getBytes(StandardCharsets.UTF_8));
        Integrity.verify(dir, Manifest.read(dir));
    }

    @Test
    public void sizeIsCheckedBeforeTheHash() throws Exception {
        File dir = TestSupport.artifact(tmp.newFolder("a"), "payload bytes".getBytes(StandardCharsets.UTF_8));
        TestSupport.write(new File(dir, "model.pte"), "payload".getBytes(StandardCharsets.UTF_8));
        fails(dir, "size 7 bytes, manifest says 13 (truncated or replaced file)");
    }

    @Test
    public void sameSizeDifferentBytesFailsTheHash() throws Exception {
        File dir = TestSupport.artifact(tmp.newFolder("a"), "payload bytes".getBytes(StandardCharsets.UTF_8));
        TestSupport.write(new File(dir, "model.pte"), "payload byteZ".getBytes(StandardCharsets.UTF_8));
        fails(dir, "differs from the manifest's");
    }

    @Test
    public void missingPayload() throws Exception {
        File dir = TestSupport.artifact(tmp.newFolder("a"), new byte[] {1, 2, 3});
        assertTrue(new File(dir, "model.pte").delete());
        fails(dir, "payload file listed in the manifest is missing");
    }

    @Test
    public void symlinkOutOfTheArtifactIsRefused() throws Exception {
        File outside = tmp.newFile("outside.pte");
        TestSupport.write(outside, new byte[] {1, 2, 3});
        File dir = TestSupport.artifact(tmp.newFolder("a"), new byte[] {1, 2, 3});
        File model = new File(dir, "model.pte");
        assertTrue(model.delete());
        Files.createSymbolicLink(model.toPath(), outside.toPath());
        fails(dir, "resolves outside the artifact directory");
    }

    @Test
    public void missingManifestIsAConfigError() throws Exception {
        try {
            Manifest.read(tmp.newFolder("empty"));
            fail();
        } catch (SdkException e) {
            assertEquals(SdkException.Kind.ConfigError, e.kind());
            assertTrue(e.getMessage().contains("has no manifest.json"));
        }
    }
}
