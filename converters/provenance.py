"""Node provenance at linear cost while a converter exports.

torch.fx records where each graph node came from: ``node.meta["from_node"]``, a chain of
`torch.fx.traceback.NodeSource` with one link per pass that rewrote the node. In torch 2.13 a new
``NodeSource(node)`` deep-copies the node's whole chain (``torch/fx/traceback.py``,
``NodeSource.__init__``). Every pass of a lowering therefore copies every chain that all earlier
passes made, and the cost grows with passes² × nodes. ExecuTorch runs its edge passes on each
program and then about 17 XNNPACK passes on every delegated partition; for the Mamba student's
int8-dynamic ExecuTorch lowering the copies were 22 of 128 s under cProfile (8.6 million
``deepcopy`` calls).

Inside `shared_provenance()` a new link refers to the earlier links instead of copying them. The
links are never changed once made: torch, ExecuTorch, torchao and litert-torch only read a chain
or give a node a new list, and ``NodeSource`` caches its own ``to_dict()``. The chains therefore
hold the same content and the exported files come out byte for byte the same
(``tests/test_provenance.py`` compares a `.pte`). ``benchmarks/export_provenance.py`` times
conversions with and without it, side by side.

The patch is process-wide while any block is open (reference-counted, so nested or concurrent
blocks are safe) and is skipped, leaving torch as it is, when ``NodeSource.__init__`` does not
have the signature it was written for.

Example::

    from edgesdk.converters.provenance import shared_provenance
    with shared_provenance():
        edge = to_edge_transform_and_lower(programs, partitioner=[XnnpackPartitioner()])
"""

from __future__ import annotations

import contextlib
import inspect
import threading

ENABLED = True          # benchmarks/export_provenance.py turns it off for the baseline
_PARAMS = ("self", "node", "pass_name", "action")
_lock = threading.Lock()
_open = 0
_original = None


def _applicable(cls) -> bool:
    try:
        return tuple(inspect.signature(cls.__init__).parameters) == _PARAMS
    except (TypeError, ValueError):
        return False


def _patched(original):
    def __init__(self, node, pass_name="", action=None):
        meta = getattr(node, "meta", None)
        chain = meta.get("from_node") if isinstance(meta, dict) else None
        if not isinstance(chain, list):
            return original(self, node, pass_name, action)
        meta["from_node"] = []          # the original copies an empty chain...
        try:
            original(self, node, pass_name, action)
        finally:
            meta["from_node"] = chain
        self.from_node = list(chain)    # ...and the new link refers to the node's own links
    __init__.__wrapped__ = original
    return __init__


@contextlib.contextmanager
def shared_provenance(enabled: bool | None = None):
    """Within the block, new provenance links share the earlier ones (see the module docstring)."""
    global _open, _original
    if not (ENABLED if enabled is None else enabled):
        yield
        return
    from torch.fx.traceback import NodeSource
    with _lock:
        if _open == 0:
            if not _applicable(NodeSource):
                _original = None
            else:
                _original = NodeSource.__init__
                NodeSource.__init__ = _patched(_original)
        _open += 1
    try:
        yield
    finally:
        with _lock:
            _open -= 1
            if _open == 0 and _original is not None:
                NodeSource.__init__ = _original
                _original = None
