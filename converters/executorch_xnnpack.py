"""`executorch-xnnpack`: `.pte` lowered to ExecuTorch's XNNPACK delegate (mobile CPU)."""

from __future__ import annotations

import torch

from converters.registry import Converter, register_target


def delegation_report(edge, method: str) -> dict:
    """Which ops the partitioner delegated and which stayed on portable kernels."""
    from executorch.devtools.backend_debug import get_delegation_info
    info = get_delegation_info(edge.exported_program(method).graph_module)
    not_delegated = {op: b.non_delegated for op, b in info.delegation_by_operator.items() if b.non_delegated}
    total = info.num_delegated_nodes + info.num_non_delegated_nodes
    return {"delegated_subgraphs": info.num_delegated_subgraphs, "delegated_nodes": info.num_delegated_nodes,
            "non_delegated_nodes": info.num_non_delegated_nodes,
            "delegated_fraction": info.num_delegated_nodes / total if total else 0.0,
            "not_delegated_ops": not_delegated}


def lower(programs, partitioners) -> tuple[bytes, dict]:
    """torch.export every program, lower with the given partitioners, return (pte bytes, report)."""
    from executorch.exir import to_edge_transform_and_lower
    eps = {name: torch.export.export(p.module, p.example_inputs) for name, p in programs.items()}
    edge = to_edge_transform_and_lower(eps, partitioner=partitioners)
    report = {name: delegation_report(edge, name) for name in eps}
    return edge.to_executorch().buffer, report


@register_target
class ExecuTorchXnnpack(Converter):
    name = "executorch-xnnpack"
    device = "cpu"
    format = "pte"
    backend = "executorch"
    description = "ExecuTorch with the XNNPACK delegate (mobile/embedded CPU)"
    convert_packages = ("executorch",)
    run_packages = ("executorch",)
    install_hint = "pip install executorch==1.5.1"

    def export(self, programs, workdir, *, quantize, options):
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        buffer, report = lower(programs, [XnnpackPartitioner()])
        (workdir / "model.pte").write_bytes(buffer)
        return {"files": ["model.pte"], "programs": {n: ("model.pte", n) for n in programs},
                "extra": {"partition": report}}
