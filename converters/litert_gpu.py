"""`litert-gpu`: the `.tflite` of `litert-cpu`, run by LiteRT's GPU accelerator (WebGPU over Vulkan).

The payload is exactly what the CPU twin exports (`export_tflite`); what differs is the runtime
(`runtime.litert_gpu`) and the compute precision, recorded in the manifest as ``gpu_precision``:

- ``fp32``: ``GpuOptions(enforce_f32=True)``, fp32 compute and storage on the GPU (~1e-7 vs CPU);
- ``fp16``: the accelerator's default, fp16 compute and storage (~1e-3). The file keeps fp32
  weights: the GPU converts them when it compiles the model, as it does on a phone.

Here the GPU is Mesa's lavapipe, a CPU Vulkan driver (``make gpu-sim``): the real GPU kernels
run, but latency is a CPU's, and every profile says "software GPU (lavapipe)".
"""

from __future__ import annotations

import dataclasses
from collections import Counter

from edgesdk.converters.litert_cpu import export_tflite, signature_io
from edgesdk.converters.placement import block
from edgesdk.converters.registry import Converter, register_target
from edgesdk.runtime.errors import ConfigError, ConversionError

PRECISION_DETAILS = {
    "fp32": {"compute_precision": "float32", "how": "GpuOptions(enforce_f32=True)"},
    "fp16": {"compute_precision": "float16", "how": "LiteRT GPU accelerator default precision",
             "weights": "float32 in the file; the GPU accelerator stores them as float16 when it compiles"},
}


@register_target
class LiteRtGpu(Converter):
    name = "litert-gpu"
    device = "gpu"
    format = "tflite"
    backend = "litert-gpu"
    description = "LiteRT GPU accelerator (WebGPU over Vulkan); here on Mesa lavapipe, a software GPU"
    convert_packages = ("litert_torch",)
    run_packages = ("ai_edge_litert",)
    install_hint = "pip install litert-torch ai-edge-litert"
    quantization = ("fp32", "fp16")
    recommended = "fp16"
    recommended_multi_program = "fp16"
    run_label = "software GPU"
    # Verification tolerance (atol, rtol) where the GPU computes at lower precision: fp16 stores
    # and computes in half precision (unit roundoff 4.9e-4) and errors grow over dot products;
    # 1e-2 + 1e-2 * max|ref| is ~20x that roundoff at the output's scale (measured: <= 3.3e-3 abs,
    # 1.2e-3 relative on the test conv net and transformer block) and far below a wrong op's error.
    # fp32 (enforce_f32) keeps the SDK default 1e-4 (measured <= 6e-7).
    default_tolerance = {"fp16": (1e-2, 1e-2)}

    @classmethod
    def run_unavailable(cls) -> str | None:
        why = super().run_unavailable()
        if why:
            return why
        from edgesdk.runtime import litert_gpu
        return litert_gpu.unavailable()

    @classmethod
    def describe(cls):
        t = super().describe()
        if t.runs_here:  # a real Vulkan GPU (VK_ICD_FILENAMES) is not a software one
            from edgesdk.runtime import gpu_sim
            d = gpu_sim.active()
            if d is not None and not d.software:
                t = dataclasses.replace(t, runs="yes")
        return t

    def export(self, programs, workdir, *, quantize, options):
        if options.get("exclude"):
            raise ConfigError(
                f"{self.name} {quantize}: the GPU's compute precision applies to the whole model; layers "
                f"({', '.join(options['exclude'])}) cannot be kept in float32. Use quantize='fp32' "
                "(enforce_f32) instead of auto_fallback")
        path = workdir / "model.tflite"
        sigs = export_tflite(programs, path)
        io = signature_io(path, sigs, programs)
        extra = {"litert_io": io, "gpu_precision": quantize, "gpu": self._gpu_facts(path, quantize)}
        for key in ("device_label", "runs_label"):
            if key in extra["gpu"]:
                extra[key] = extra["gpu"][key]
        if quantize != "fp32":
            extra["quantization_details"] = {**PRECISION_DETAILS[quantize], "payload": "the fp32 .tflite"}
        return {"files": ["model.tflite"], "programs": {p: ("model.tflite", s) for p, s in sigs.items()},
                "extra": extra}

    def placement(self, extra: dict) -> dict | None:
        """What the GPU accelerator's compiler said (fully accelerated or not); no node counts."""
        gpu = extra.get("gpu")
        if not isinstance(gpu, dict) or "fully_accelerated" not in gpu:
            return None  # not compiled here: nothing known
        full = gpu["fully_accelerated"]
        why = "LiteRT's CPU fallback took some ops (the compiler does not name them)"
        return block("GPU", {"forward": {"fraction": 1.0 if full else None, "on_accelerator": None,
                                         "compute_nodes": None,
                                         "fallback": [] if full else [{"node": None, "op_type": None, "why": why}]}},
                     fully_accelerated=full)

    def _gpu_facts(self, path, precision: str) -> dict:
        """Compile on this machine's GPU accelerator (when it has one): full acceleration, labels."""
        from edgesdk.runtime import litert_gpu
        facts = dict(PRECISION_DETAILS[precision])
        why = litert_gpu.unavailable()
        if why:
            facts["compiled_here"] = False
            facts["why_not"] = why
            return facts
        facts.update(litert_gpu.inspect(path, precision), compiled_here=True)
        if facts["fully_accelerated"] is False:
            facts["note"] = "some ops run on LiteRT's CPU fallback, not on the GPU"
        return facts

    def validate(self, workdir, programs, manifest) -> dict:
        """No GPU driver here: check the payload on LiteRT's CPU runtime instead (same file)."""
        import numpy as np

        import edgesdk.runtime.litert as cpu
        from edgesdk.converters.convert import compare
        report = {"gpu": "not run (no GPU accelerator here)", "programs": {}}
        cache: dict = {}
        for name, spec in manifest.programs.items():
            prog = programs[name]
            binding = cpu.open_program(workdir / spec.file, spec, threads=1, manifest=manifest, cache=cache)
            got = binding.run([np.ascontiguousarray(t.detach().cpu().numpy()) for t in prog.example_inputs])
            rows = compare(prog.reference, got, prog.output_names)
            bad = [r for r in rows if not r["shape_ok"] or r["max_abs_err"] > 1e-4 + 1e-4 * r.get("ref_max_abs", 0)]
            if bad:
                raise ConversionError(
                    f"{self.name}: the .tflite differs from PyTorch even on LiteRT's CPU runtime: "
                    + "; ".join(f"{name}.{r['name']} max |diff| {r['max_abs_err']:.3g}" for r in bad))
            report["programs"][name] = {"cpu_max_abs_err": max((r["max_abs_err"] for r in rows), default=0.0)}
        from ai_edge_litert.interpreter import Interpreter
        files = {spec.file for spec in manifest.programs.values()}
        ops = Counter()
        for f in files:
            ops.update(op["op_name"] for op in Interpreter(model_path=str(workdir / f))._get_ops_details())
        report["ops"] = dict(sorted(ops.items()))
        report["checked"] = "the payload on LiteRT's CPU runtime vs PyTorch (fp32, 1e-4); GPU numerics not measured"
        return report
