"""torch.fx source generation deferred until something reads it, while ExecuTorch lowers or LiteRT exports.

``GraphModule.recompile()`` writes Python source for the whole graph and compiles it into
``forward``. ExecuTorch's lowering calls it ~1,300-1,500 times for one of the demo's generation
students (its pass manager before and after every pass, every new ``GraphModule`` a pass makes):
6.8 s of a ~31 s Mamba Vulkan conversion, 10.9 s of a ~58 s XNNPACK int8-dynamic one
(benchmarks/deferred_codegen.py). The passes walk ``graph`` itself; ~130-180 of those sources are
ever made when deferred (read, or made outside the block).

Inside `deferred_recompiles()` a ``recompile()`` records the pytree specs (cheap, read directly by
export code) and marks the module stale. The real one runs on first use of what it produces:
``forward`` (a call, or merely reading the attribute, as ``inspect.signature`` does), ``code`` /
``_code`` / ``_lineno_map`` / ``_prologue_start``, the returned ``PythonCode`` (pickling reads its
globals), and, for every module still stale, when the block ends. Same graphs, same source, so the
artifacts are the same bytes (tests/test_deferred_codegen.py).

Used around ExecuTorch's lowering (`executorch_xnnpack.lower`, both ExecuTorch targets) and LiteRT's
export (`litert_cpu`: 127 recompiles, 4.2 s of a ~24 s Mamba conversion). Process-wide while active (it
patches ``torch.fx.GraphModule``), like the other lowering cuts in `converters.executorch_xnnpack`: one
conversion at a time per process, which is how conversions run.

Example::

    from edgesdk.converters.deferred_codegen import deferred_recompiles
    with deferred_recompiles() as counts:
        edge = to_edge_transform_and_lower(programs, partitioner=[XnnpackPartitioner()])
    print(counts)  # e.g. {"deferred": 1318, "generated": 120}
"""

from __future__ import annotations

import contextlib
import weakref

ENABLED = True  # switch: False generates the source at every recompile, as torch.fx does
_FIELDS = ("_code", "_lineno_map", "_prologue_start")  # what GraphModule.recompile sets on the instance
_ACTIVE = False


class _PendingForward:
    """A stale module's ``forward``: reading it generates the source, then gives the real method."""

    def __init__(self, generate):
        self.generate = generate

    def __get__(self, obj, cls=None):
        if obj is None:
            return self
        self.generate(obj)
        return type(obj).forward.__get__(obj, cls)


class _PendingCode:
    """What a deferred ``recompile()`` returns: the ``PythonCode``, made when first read."""

    __slots__ = ("_gm", "_generate")

    def __init__(self, gm, generate):
        self._gm, self._generate = gm, generate

    def __getattr__(self, name):
        return getattr(self._generate(self._gm, force=True), name)


@contextlib.contextmanager
def deferred_recompiles():
    """Defer ``GraphModule.recompile`` inside the block (see the module docstring); yields
    ``{"deferred": n, "generated": n}``. Re-entering an active block, or `ENABLED` False: a no-op."""
    global _ACTIVE
    counts = {"deferred": 0, "generated": 0}
    if _ACTIVE or not ENABLED:
        yield counts
        return
    from torch import nn
    from torch.fx import GraphModule
    from torch.fx.graph import _PyTreeCodeGen
    real, own_getattr = GraphModule.recompile, GraphModule.__dict__.get("__getattr__")
    fallback_getattr = own_getattr or nn.Module.__getattr__
    stale: weakref.WeakSet = weakref.WeakSet()
    pending = _PendingForward(lambda gm: generate(gm))

    def generate(gm, force: bool = False):
        """The real recompile of ``gm`` if it is stale (or ``force``); its PythonCode, else None."""
        if gm in stale or type(gm).__dict__.get("forward") is pending or force:
            stale.discard(gm)
            counts["generated"] += 1
            return real(gm)
        return None

    def recompile(self):
        codegen = self._graph._codegen
        if isinstance(codegen, _PyTreeCodeGen):
            self._in_spec, self._out_spec = codegen.pytree_info.in_spec, codegen.pytree_info.out_spec
        for f in _FIELDS:
            self.__dict__.pop(f, None)
        type(self).forward = pending
        stale.add(self)
        counts["deferred"] += 1
        for sub in self.children():  # the real one recompiles submodules too
            if isinstance(sub, GraphModule):
                sub.recompile()
        return _PendingCode(self, generate)

    def getattr_(self, name):
        if name in _FIELDS and self in stale:
            generate(self)
            return self.__dict__[name]
        return fallback_getattr(self, name)

    GraphModule.recompile, GraphModule.__getattr__ = recompile, getattr_
    _ACTIVE = True
    try:
        yield counts
    finally:
        GraphModule.recompile = real
        if own_getattr is None:
            del GraphModule.__getattr__
        else:
            GraphModule.__getattr__ = own_getattr
        _ACTIVE = False
        for gm in list(stale):  # nothing leaves the block without its source
            generate(gm)
