"""`converters.deferred_codegen`: GraphModule source generated only when read, same artifacts."""

import inspect
import operator

import pytest
import torch
from torch import fx

from edgesdk.converters.deferred_codegen import deferred_recompiles
from edgesdk.models.mamba import Mamba, MambaConfig
from test_delegate_graphs import _FusedQkvAttention, record_counts  # a transformer layer as users write it


class _AddThenRelu(torch.nn.Module):
    def forward(self, x, y):
        return torch.relu(x + y)


def _swap(gm: fx.GraphModule, old, new) -> None:
    for n in gm.graph.nodes:
        if n.op == "call_function" and n.target is old:
            n.target = new


def test_a_deferred_recompile_generates_the_source_when_forward_code_or_its_result_is_read():
    x, y = torch.tensor([1.0, -2.0]), torch.tensor([3.0, 4.0])
    real = fx.GraphModule.recompile
    gm = fx.symbolic_trace(_AddThenRelu())
    with deferred_recompiles() as counts:
        _swap(gm, operator.add, torch.mul)
        gm.recompile()
        assert counts == {"deferred": 1, "generated": 0}
        assert "_code" not in gm.__dict__                                    # nothing generated yet
        assert list(inspect.signature(gm.forward).parameters) == ["x", "y"]  # reading forward generates it
        assert counts["generated"] == 1 and "mul" in gm.code
        assert torch.equal(gm(x, y), torch.tensor([3.0, 0.0]))               # relu(x * y)
        gm.recompile()
        assert "mul" in gm.recompile().src                                   # the returned PythonCode, on read
        assert "mul" in gm._code and torch.equal(gm(x, y), torch.tensor([3.0, 0.0]))
        _swap(gm, torch.mul, torch.sub)                                       # edited, recompiled, never read
        gm.recompile()
        assert "_code" not in gm.__dict__
    # the block's end generates what is still stale, and restores torch.fx
    assert "sub" in gm.code and torch.equal(gm(x, y), torch.tensor([0.0, 0.0]))  # relu(x - y)
    assert fx.GraphModule.recompile is real and "__getattr__" not in fx.GraphModule.__dict__
    assert counts["deferred"] == 4


def test_a_deferred_recompile_inside_another_block_is_the_outer_blocks():
    with deferred_recompiles() as outer:
        with deferred_recompiles() as inner:
            gm = fx.symbolic_trace(_AddThenRelu())
            gm.recompile()
        assert inner == {"deferred": 0, "generated": 0} and outer["deferred"] >= 1
        assert "_code" not in gm.__dict__                                    # still the outer block's
    assert "add" in gm.code


@pytest.mark.parametrize("model,partitioner", [
    ("attention", "xnnpack"), pytest.param("attention", "vulkan", marks=pytest.mark.slow),
    pytest.param("mamba", "xnnpack", marks=pytest.mark.slow),   # ~30 s
    pytest.param("mamba", "vulkan", marks=pytest.mark.slow),    # ~40 s
])
def test_deferred_recompiles_leave_the_pte_byte_identical(model, partitioner, monkeypatch):
    """A program lowered with and without deferral: the same bytes, with most of the recompiles never
    generated (the demo's Mamba conversions: ~1,300 deferred, ~130-180 generated)."""
    from executorch.backends.vulkan.partitioner.vulkan_partitioner import VulkanPartitioner
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

    from edgesdk.converters import deferred_codegen
    from edgesdk.converters import executorch_xnnpack as xnn
    from edgesdk.converters.programs import collect
    records = record_counts(monkeypatch, deferred_codegen, "deferred_recompiles")
    torch.manual_seed(0)
    if model == "mamba":
        m = Mamba(MambaConfig(d_model=32, n_layers=2, n_heads=2, head_dim=16, d_state=8, n_groups=2, chunk_size=16,
                              prompt_lengths=(40,))).eval()
        program = next(p for p in collect(m, None) if p.name.startswith("prefill"))
    else:
        program = next(iter(collect(_FusedQkvAttention().eval(), (torch.randn(1, 8, 32),))))
    pte = {}
    for defer in (True, False):
        monkeypatch.setattr(deferred_codegen, "ENABLED", defer)
        parts = [XnnpackPartitioner()] if partitioner == "xnnpack" else [VulkanPartitioner({"force_fp16": True})]
        pte[defer], _ = xnn.lower({program.name: program}, parts)
    assert records[1] == {"deferred": 0, "generated": 0}, records              # the switch turns it off
    # most recompiles deferred: alone, the Mamba prefill on Vulkan defers ~1,290 and generates ~130; after
    # other Vulkan lowerings in the same process (cached fusion patterns) it defers 418 and generates 129
    assert records[0]["deferred"] > 2 * records[0]["generated"] > 0, records
    assert pte[True] == pte[False]
