"""`onnx-cpu`: ONNX via `torch.onnx.export(dynamo=True)`, run by ONNX Runtime's CPU EP."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import torch

from converters.registry import Converter, register_target

# Above this many parameter bytes the weights go to an external `.onnx.data` file
# (protobuf's 2 GiB limit); below it one self-contained file is simpler to ship and hash.
EXTERNAL_DATA_BYTES = 1 << 30


def _param_bytes(module: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in list(module.parameters()) + list(module.buffers()))


def export_onnx(program, path: Path) -> list[str]:
    """Export one program to `path`; returns the files written (model plus any external data)."""
    before = set(path.parent.iterdir())
    torch.onnx.export(
        program.module, program.example_inputs, str(path), dynamo=True,
        input_names=program.input_names, output_names=program.output_names,
        external_data=_param_bytes(program.module) > EXTERNAL_DATA_BYTES, verbose=False,
    )
    return sorted(p.name for p in set(path.parent.iterdir()) - before)


def onnx_summary(path: Path) -> dict:
    import onnx
    m = onnx.load(str(path), load_external_data=False)
    ops = Counter(n.op_type for n in m.graph.node)
    return {"opset": max((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), default=None),
            "nodes": sum(ops.values()), "op_types": dict(ops.most_common())}


@register_target
class OnnxCpu(Converter):
    name = "onnx-cpu"
    device = "cpu"
    format = "onnx"
    backend = "onnxruntime"
    description = "ONNX Runtime, CPU execution provider"
    convert_packages = ("onnx", "onnxscript")
    run_packages = ("onnxruntime",)
    install_hint = "pip install onnx onnxscript onnxruntime"

    def export(self, programs, workdir, *, quantize, options):
        files, progs, summary = [], {}, {}
        for name, prog in programs.items():
            fname = "model.onnx" if len(programs) == 1 else f"{name}.onnx"
            files += export_onnx(prog, workdir / fname)
            progs[name] = (fname, name)
            summary[name] = onnx_summary(workdir / fname)
        return {"files": files, "programs": progs, "extra": {"onnx": summary}}
