package dev.edgesdk.core;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;

import java.nio.charset.StandardCharsets;
import java.util.List;
import org.junit.Test;

public class InputsTest {

    @Test
    public void matchTheSpecs() {
        Manifest m = Manifest.parse(TestSupport.manifestJson("model.pte", 1, ManifestTest.SHA, "pte", "executorch-xnnpack")
                .getBytes(StandardCharsets.UTF_8));
        List<Inputs.Tensor> in = Inputs.generate(m.defaultProgram().inputs, 0);
        assertEquals(3, in.size());
        Inputs.Tensor x = in.get(0), ids = in.get(1), mask = in.get(2);
        assertEquals(64, x.elements());
        assertEquals(64 * 4, x.data.capacity());
        assertEquals(5, ids.elements());                      // symbolic "batch" -> 1
        for (int i = 0; i < 5; i++) {
            long v = ids.data.getLong(i * 8);
            assertTrue("id " + v + " outside [3, 9]", v >= 3 && v <= 9);
        }
        for (int i = 0; i < 5; i++) assertEquals(1, mask.data.get(i));
        boolean nonZero = false;
        for (int i = 0; i < 64; i++) nonZero |= x.data.getFloat(i * 4) != 0f;
        assertTrue(nonZero);
        // deterministic for a seed
        assertEquals(x.data.getFloat(0), Inputs.generate(m.defaultProgram().inputs, 0).get(0).data.getFloat(0), 0f);
    }

    @Test
    public void halfPrecisionBits() {
        assertEquals(0x3c00, Inputs.toHalf(1.0f) & 0xffff);
        assertEquals(0xc000, Inputs.toHalf(-2.0f) & 0xffff);
        assertEquals(0x3555, Inputs.toHalf(1f / 3f) & 0xffff);
        assertEquals(0x7bff, Inputs.toHalf(65504f) & 0xffff);
        assertEquals(0x7c00, Inputs.toHalf(1e6f) & 0xffff);
        assertEquals(0x0001, Inputs.toHalf(5.9604645e-8f) & 0xffff);  // smallest subnormal
        assertEquals(0x0000, Inputs.toHalf(1e-9f) & 0xffff);
    }
}
