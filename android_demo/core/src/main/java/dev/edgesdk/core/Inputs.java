package dev.edgesdk.core;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;

/**
 * Inputs matching a manifest's specs, as {@code runtime.profile.example_inputs} makes them:
 * standard-normal floats, integers uniform inside the recorded {@code value_range} (0 without
 * one), all-true masks; symbolic dims are 1. Data lives in a direct, native-order buffer that
 * ONNX Runtime and ExecuTorch both take without a copy. (The random streams differ from numpy's;
 * the distributions and ranges are the same.)
 */
public final class Inputs {
    private Inputs() {}

    /** Cap on one generated input: 512 MiB. */
    public static final long MAX_BYTES = 512L << 20;

    /** One input tensor: spec name, numpy dtype name, shape and raw little/native-endian data. */
    public static final class Tensor {
        public final String name;
        public final String dtype;
        public final long[] shape;
        public final ByteBuffer data;

        Tensor(String name, String dtype, long[] shape, ByteBuffer data) {
            this.name = name;
            this.dtype = dtype;
            this.shape = shape;
            this.data = data;
        }

        public long elements() {
            return numel(shape);
        }
    }

    public static int itemSize(String dtype) {
        if ("float64".equals(dtype) || "int64".equals(dtype)) return 8;
        if ("float32".equals(dtype) || "int32".equals(dtype)) return 4;
        if ("float16".equals(dtype) || "int16".equals(dtype)) return 2;
        if ("int8".equals(dtype) || "uint8".equals(dtype) || "bool".equals(dtype)) return 1;
        throw SdkException.config("unknown dtype '" + dtype + "'");
    }

    public static long numel(long[] shape) {
        long n = 1;
        for (long d : shape) n *= d;
        return n;
    }

    public static List<Tensor> generate(List<Manifest.TensorSpec> specs, long seed) {
        Random rng = new Random(seed);
        List<Tensor> out = new ArrayList<Tensor>();
        for (Manifest.TensorSpec s : specs) {
            long[] shape = s.concreteShape();
            long n = numel(shape);
            int item = itemSize(s.dtype);
            if (n * item > MAX_BYTES) {
                throw new SdkException(SdkException.Kind.InputError, "input '" + s.name + "': " + n + " elements of "
                        + s.dtype + " exceed the " + (MAX_BYTES >> 20) + " MiB limit for generated inputs");
            }
            ByteBuffer b = ByteBuffer.allocateDirect((int) (n * item)).order(ByteOrder.nativeOrder());
            long lo = 0, hi = 0;
            if (s.valueRange != null) {
                lo = (long) Math.ceil(s.valueRange[0].doubleValue());
                hi = (long) Math.floor(s.valueRange[1].doubleValue());
                if (hi < lo) hi = lo;
            }
            for (long i = 0; i < n; i++) {
                String t = s.dtype;
                if ("float32".equals(t)) b.putFloat((float) rng.nextGaussian());
                else if ("float64".equals(t)) b.putDouble(rng.nextGaussian());
                else if ("float16".equals(t)) b.putShort(toHalf((float) rng.nextGaussian()));
                else if ("bool".equals(t)) b.put((byte) 1);
                else {
                    long v = lo + (long) Math.floor(rng.nextDouble() * (hi - lo + 1));
                    if (v > hi) v = hi;
                    if ("int64".equals(t)) b.putLong(v);
                    else if ("int32".equals(t)) b.putInt((int) v);
                    else if ("int16".equals(t)) b.putShort((short) v);
                    else b.put((byte) v); // int8, uint8
                }
            }
            b.rewind();
            out.add(new Tensor(s.name, s.dtype, shape, b));
        }
        return out;
    }

    /** IEEE binary16 bits of a float, rounded to nearest even. */
    public static short toHalf(float f) {
        int bits = Float.floatToIntBits(f);
        int sign = (bits >>> 16) & 0x8000;
        int exp = (bits >>> 23) & 0xff;
        int mant = bits & 0x7fffff;
        if (exp == 0xff) return (short) (sign | 0x7c00 | (mant != 0 ? 0x200 : 0));
        int e = exp - 127 + 15;
        if (e >= 0x1f) return (short) (sign | 0x7c00);
        if (e <= 0) {
            if (e < -10) return (short) sign;
            mant |= 0x800000;
            int shift = 14 - e;
            int half = mant >> shift;
            int rem = mant & ((1 << shift) - 1);
            int mid = 1 << (shift - 1);
            if (rem > mid || (rem == mid && (half & 1) != 0)) half++;
            return (short) (sign | half);
        }
        int half = (e << 10) | (mant >> 13);
        int rem = mant & 0x1fff;
        if (rem > 0x1000 || (rem == 0x1000 && (half & 1) != 0)) half++;
        return (short) (sign | half);
    }
}
