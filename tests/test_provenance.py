"""converters.provenance: shared provenance links keep the chains' content and the exported bytes."""

from __future__ import annotations

import torch
from torch import nn
from torch.fx.traceback import NodeSource

import edgesdk
from edgesdk.converters import provenance
from edgesdk.converters.provenance import shared_provenance


def _node_with_history():
    m = nn.Sequential(nn.Linear(8, 16), nn.LayerNorm(16), nn.GELU(), nn.Linear(16, 4)).eval()
    ep = torch.export.export(m, (torch.randn(2, 8),)).run_decompositions()
    for node in ep.graph.nodes:
        if node.op == "call_function" and node.meta.get("from_node"):
            return node
    raise AssertionError("no node carries provenance after run_decompositions")


def test_a_new_link_shares_the_chain_and_keeps_its_content():
    node = _node_with_history()
    init = NodeSource.__init__
    copied = NodeSource(node, "a_pass")
    with shared_provenance():
        assert NodeSource.__init__ is not init
        with shared_provenance():          # nested blocks: one patch, undone by the outer one
            shared = NodeSource(node, "a_pass")
        assert NodeSource.__init__ is not init
    assert NodeSource.__init__ is init
    assert shared.to_dict() == copied.to_dict()
    assert shared.from_node[0] is node.meta["from_node"][0]      # refers, does not copy
    assert copied.from_node[0] is not node.meta["from_node"][0]  # torch's own deep copy
    assert shared.from_node is not node.meta["from_node"]        # a list of its own
    assert node.meta["from_node"]                                # the node's chain is left as it was


def test_off_leaves_torch_as_it_is():
    with shared_provenance(enabled=False):
        assert not hasattr(NodeSource.__init__, "__wrapped__")


def test_the_pte_is_byte_for_byte_the_same(tmp_path, monkeypatch):
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(),
                      nn.Linear(8 * 8 * 8, 10)).eval()
    x = (torch.randn(1, 3, 8, 8),)
    files = {}
    for on in (True, False):
        monkeypatch.setattr(provenance, "ENABLED", on)
        art = edgesdk.convert(m, x, "executorch-xnnpack", out_dir=tmp_path / str(on), name="m")
        files[on] = (art.path / "model.pte").read_bytes()
    assert files[True] == files[False]
