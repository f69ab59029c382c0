"""`executorch-vulkan`: `.pte` lowered to ExecuTorch's Vulkan delegate (mobile GPU).

``torch.export`` -> ``to_edge_transform_and_lower(partitioner=[VulkanPartitioner(...)])``, the
same path as `executorch-xnnpack` (`lower()` / `delegation_report()` are shared). Schemes:

- ``fp32``: fp32 tensors on the GPU.
- ``fp16``: ``VulkanPartitioner({"force_fp16": True})``: weights are stored and tensors computed
  in fp16 on the GPU (fp32 constants are clamped to the fp16 range first); the method's inputs and
  outputs stay fp32 (converted when staged to and from the GPU), so the interface is unchanged.

The partition report lists, per method, the ops left on ExecuTorch's portable CPU kernels and
the partitioner's reason for each (it logs "[Vulkan Partitioner] Due to [reason], skipping op";
we capture those records). ``getitem`` nodes that unpack a delegate's outputs are not work.

The ExecuTorch pip runtime registers no VulkanBackend, so these artifacts are validated
structurally here (program and method metadata, delegate ids, instructions); they run with
the ExecuTorch Android library built with Vulkan (android_demo/).

Options: ``vulkan_options={...}`` adds VulkanPartitioner compile options (for example
``{"small_texture_limits": True}`` for GPUs limited to 2048-texel 3D textures).
"""

from __future__ import annotations

import collections
import contextlib
import functools
import logging
import re

from edgesdk.converters.executorch_xnnpack import ExecuTorchXnnpack, lower
from edgesdk.converters.registry import Converter, register_target
from edgesdk.runtime.errors import ConfigError, ConversionError, IntegrityError

COMPILE_OPTIONS = {"fp32": {}, "fp16": {"force_fp16": True}}
_SKIP = re.compile(r"\[Vulkan Partitioner\] Due to \[(?P<reason>.*?)\], skipping (?P<node>.*)$", re.S)
_OP = re.compile(r"=\s*(?P<op>[A-Za-z_][\w.]*)\(")


class _SkipLog(logging.Handler):
    """Collects the Vulkan partitioner's per-node skip reasons (it logs them on the root logger)."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.skips: list[tuple[str, str, str]] = []  # (op, reason, node description)

    def emit(self, record):
        if not (isinstance(record.msg, str) and record.msg.startswith("[Vulkan Partitioner] Due to")):
            return
        try:
            m = _SKIP.match(record.getMessage())
        except Exception:  # a record with bad formatting args
            return
        if m:
            node = m.group("node").strip()
            op = _OP.search(node)
            self.skips.append((op.group("op") if op else node.split("(")[0], m.group("reason"), node))


def _build_pattern_library_once() -> None:
    """Make Vulkan's fusion pattern graphs build once per process instead of once per partition.

    ExecuTorch 1.5.1 registers its RoPE pattern builders (``patterns/rope.py``, ``rope_hf.py``) in
    the pattern registry *before* their ``lru_cache`` wraps them, so the registry holds the uncached
    functions: the partitioner and the ``FusePatternsPass`` of every partition's preprocessing
    re-run two ``torch.export`` + ``to_edge`` each time. Measured on the trained Mamba student's
    fp16 lowering (cProfile, 2026-12-02): 98 of 127 s of Vulkan's preprocessing was that pass, 75 s of
    it in 20 ``get_hf_rope_graphs`` calls (the profiler inflates it; without it the whole conversion went
    64.6 -> 52.4 s, same `.pte` bytes). The graphs are only read (``SubgraphMatcher`` patterns),
    so one build serves every call. The builders draw their example inputs from torch's global RNG;
    they run under ``fork_rng`` so the caller's random stream is the same whether or not they ran.
    """
    from executorch.backends.vulkan.patterns.pattern_registry import fusable_patterns
    for entry in fusable_patterns.values():
        fn = entry.get_graphs_fn
        if fn is None or getattr(fn, "_edgesdk_once", False):
            continue

        @functools.cache
        def once(fn=fn):
            import torch
            with torch.random.fork_rng(devices=[]):
                return fn()
        once._edgesdk_once = True
        entry.get_graphs_fn = once


@contextlib.contextmanager
def _capture_partitioner_log():
    """Lower the root logger to INFO for our handler only: other handlers keep seeing what they saw."""
    root = logging.getLogger()
    saved, level, handler = root.level, root.getEffectiveLevel(), _SkipLog()
    others = [(h, h.level) for h in root.handlers]
    for h, hl in others:
        h.setLevel(max(hl, level))
    root.addHandler(handler)
    root.setLevel(logging.INFO)  # the skip records are INFO
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(saved)
        for h, hl in others:
            h.setLevel(hl)


def _node_key(op: str) -> str:
    """`aten.mul.Scalar` -> `aten_mul_scalar`, the op type `get_delegation_info` reports."""
    return op.replace(".", "_").lower()


def attach_reasons(report: dict, skips) -> None:
    """Add the partitioner's reasons to each method's not-delegated ops."""
    by_key = collections.defaultdict(collections.Counter)
    example = {}
    for op, reason, node in skips:
        by_key[_node_key(op)][reason] += 1
        example.setdefault((_node_key(op), reason), (op, node))
    for method in report.values():
        rows = []
        for key, count in sorted(method["not_delegated_ops"].items()):
            if key == "getitem":
                rows.append({"op": key, "count": count,
                             "reason": "unpacks a delegate's outputs (not compute; always outside)"})
                continue
            reasons = by_key.get(key)
            if not reasons:
                rows.append({"op": key, "count": count, "reason": "not reported by the partitioner"})
                continue
            for reason, n in reasons.most_common():
                op, node = example[(key, reason)]
                rows.append({"op": op, "count": count if len(reasons) == 1 else n, "reason": reason,
                             "example": node[:300]})
        method["not_delegated"] = rows
        compute = {k: v for k, v in method["not_delegated_ops"].items() if k != "getitem"}
        method["compute_ops_not_delegated"] = sum(compute.values())
        work = method["delegated_nodes"] + method["compute_ops_not_delegated"]
        method["compute_delegated_fraction"] = method["delegated_nodes"] / work if work else 0.0
        if method["delegated_nodes"] == 0:
            method["warning"] = "nothing was delegated to Vulkan: the whole method runs on portable CPU kernels"


@register_target
class ExecuTorchVulkan(Converter):
    options = {"vulkan_options": "extra VulkanPartitioner compile options (a dict)"}
    name = "executorch-vulkan"
    device = "gpu"
    format = "pte"
    backend = "executorch-vulkan"
    description = "ExecuTorch with the Vulkan delegate (mobile GPU; fp16 via force_fp16)"
    convert_packages = ("executorch",)
    run_packages = ("executorch",)
    install_hint = "pip install executorch==1.5.1"
    quantization = ("fp32", "fp16")
    recommended = "fp16"
    recommended_multi_program = "fp16"
    calibrated = ()

    placement = ExecuTorchXnnpack.placement  # the same partition report, the Vulkan delegate's share

    @classmethod
    def run_unavailable(cls) -> str | None:
        why = super().run_unavailable()
        if why:
            return why
        from edgesdk.runtime import vulkan
        return vulkan.unavailable()

    def export(self, programs, workdir, *, quantize, options):
        if options.get("exclude"):
            raise ConfigError("executorch-vulkan cannot keep individual layers out of the delegate by name yet")
        extra_opts = options.get("vulkan_options") or {}
        if not isinstance(extra_opts, dict):
            raise ConfigError(f"vulkan_options must be a dict of VulkanPartitioner compile options, got "
                              f"{type(extra_opts).__name__}")
        root = logging.getLogger()
        level = root.level
        from executorch.backends.vulkan.partitioner.vulkan_partitioner import VulkanPartitioner
        root.setLevel(level)  # importing the partitioner sets the root logger to INFO; undo it
        _build_pattern_library_once()
        compile_options = {**COMPILE_OPTIONS[quantize], **extra_opts}
        with _capture_partitioner_log() as log:
            buffer, report = lower(programs, [VulkanPartitioner(compile_options)])
        attach_reasons(report, log.skips)
        (workdir / "model.pte").write_bytes(buffer)
        extra = {"partition": report, "vulkan": {"compile_options": {k: v for k, v in compile_options.items()
                                                                    if isinstance(v, (bool, int, str))}}}
        if quantize == "fp16":
            extra["quantization_details"] = {
                n: {"tool": "VulkanPartitioner(force_fp16=True)", "weights": "fp16 (clamped to the fp16 range)",
                    "compute": "fp16 on the GPU", "io": "fp32 (converted at staging)"} for n in programs}
        return {"files": ["model.pte"], "programs": {n: ("model.pte", n) for n in programs}, "extra": extra}

    def validate(self, workdir, programs, manifest):
        """Load the program (not its methods: their Vulkan delegate cannot initialise here) and check it."""
        from executorch.exir._serialize._program import deserialize_pte_binary

        from edgesdk.runtime.executorch import load_program, tensor_specs
        report = {}
        partition = manifest.extra.get("partition", {})
        for name, spec in manifest.programs.items():
            path = workdir / spec.file
            try:
                prog = load_program(path)
            except IntegrityError as e:
                raise ConversionError(f"{self.name}: {e}") from e
            methods = [prog.get_method_name(i) for i in range(prog.num_methods())]
            if spec.method not in methods:
                raise ConversionError(f"{self.name}: {spec.file} has no method {spec.method!r} (has {methods})")
            meta = prog.method_meta(spec.method)
            ins = tensor_specs([meta.input_tensor_meta(j) for j in range(meta.num_inputs())], "input")
            outs = tensor_specs([meta.output_tensor_meta(j) for j in range(meta.num_outputs())], "output")
            for kind, got, want in (("input", ins, spec.inputs), ("output", outs, spec.outputs)):
                if len(got) != len(want):
                    raise ConversionError(f"{self.name}: method {spec.method!r} has {len(got)} {kind}s, the "
                                          f"manifest declares {len(want)}")
                for g, w in zip(got, want):
                    if tuple(g.shape) != tuple(w.shape) or g.dtype != w.dtype:
                        raise ConversionError(f"{self.name}: {kind} {w.name!r}: .pte has {g.dtype}{list(g.shape)}, "
                                              f"manifest {w.dtype}{list(w.shape)}")
            report[name] = {"method": spec.method, "io_check": "passed",
                            **{k: v for k, v in partition.get(name, {}).items() if k != "not_delegated_ops"}}
        files = {spec.file for spec in manifest.programs.values()}
        for file in files:
            pte = deserialize_pte_binary((workdir / file).read_bytes())
            pte = getattr(pte, "program", pte)
            for plan in pte.execution_plan:
                instr = collections.Counter(type(i.instr_args).__name__ for c in plan.chains for i in c.instructions)
                delegates = sorted({d.id for d in plan.delegates})
                if delegates and delegates != ["VulkanBackend"]:
                    raise ConversionError(f"{self.name}: method {plan.name!r} delegates to {delegates}")
                for r in report.values():
                    if r["method"] == plan.name:
                        r.update(delegate_ids=delegates, delegate_calls=instr.get("DelegateCall", 0),
                                 portable_kernel_calls=instr.get("KernelCall", 0),
                                 portable_operators=sorted({o.name for o in plan.operators}))
        total = sum(r.get("delegated_nodes", 0) + r.get("non_delegated_nodes", 0) for r in report.values())
        delegated = sum(r.get("delegated_nodes", 0) for r in report.values())
        work = delegated + sum(r.get("compute_ops_not_delegated", 0) for r in report.values())
        out = {"io_check": "passed: method metadata matches the manifest",
               "delegated_fraction": delegated / total if total else 0.0,
               "compute_delegated_fraction": delegated / work if work else 0.0, "methods": report,
               "compile_options": manifest.extra.get("vulkan", {}).get("compile_options", {})}
        if total and delegated == 0:
            out["warning"] = "nothing was delegated to Vulkan: the artifact would run entirely on portable CPU kernels"
        return out
