"""The test suite's plug-in target, converter half: a chain of `nn.Linear` / ReLU layers written
as one ``model.toy`` file (a numpy ``.npz`` archive) that tests/plugins/backends/toy_numpy.py
runs with numpy.

It exists to prove that a target is two new files: the conftest loads tests/plugins/targets/ and
tests/plugins/backends/ through ``EDGESDK_TARGETS`` / ``EDGESDK_BACKENDS`` (`runtime.plugins`),
and every suite parametrized over ``edgesdk.targets()`` picks the target up. It declares what it takes (`unsupported`), so suites
whose model has other ops get a typed skip from the target itself.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.fx
from torch import nn
from torch.nn import functional as F

from edgesdk.converters.registry import Converter, register_target

MODULES = {nn.Linear: "linear", nn.ReLU: "relu"}
FUNCTIONS = {torch.relu: "relu", F.relu: "relu"}


def layers(module: nn.Module) -> tuple[list, list[str]]:
    """``(chain, unsupported)``: the module as a chain of Linear / ReLU steps, and what it has
    besides (op names, or "branches" where a layer does not take the previous one's output alone)."""
    if type(module) in MODULES:
        return [module], []
    try:
        graph = torch.fx.symbolic_trace(module).graph
    except Exception as e:  # data-dependent control flow and the like
        return [], [f"a forward that torch.fx cannot trace ({type(e).__name__})"]
    subs = dict(module.named_modules())
    chain, ops, branched, prev = [], set(), False, None
    for node in graph.nodes:
        if node.op == "placeholder":  # a second input counts as a branch
            branched |= prev is not None
            prev = node
            continue
        if node.op == "output":
            branched |= node.args[0] is not prev
            continue
        if node.op == "call_module" and type(subs[node.target]) in MODULES:
            step = subs[node.target]
        elif node.op == "call_function" and node.target in FUNCTIONS:
            step = nn.ReLU()
        else:
            ops.add(type(subs[node.target]).__name__ if node.op == "call_module"
                    else getattr(node.target, "__name__", str(node.target)))
            continue
        branched |= node.args[:1] != (prev,) or len(node.args) > 1 or bool(node.kwargs)
        chain.append(step)
        prev = node
    return chain, sorted(ops) + (["branches (a layer that does not take the previous one's output alone)"]
                                 if branched else [])


@register_target
class ToyNumpy(Converter):
    name = "toy-numpy"
    device = "cpu"
    format = "toy"
    backend = "toy-numpy"
    description = "Linear/ReLU chains as one .toy (npz) file, run with numpy (the test suite's plug-in target)"
    run_packages = ("numpy",)
    install_hint = "pip install numpy"

    def unsupported(self, programs):
        if len(programs) != 1:
            return f"{len(programs)} programs ({', '.join(programs)}); it takes one"
        (prog,) = programs.values()
        if len(prog.example_inputs) != 1 or prog.example_inputs[0].dtype != torch.float32:
            got = ", ".join(str(t.dtype).removeprefix("torch.") for t in prog.example_inputs)
            return f"inputs ({got}); it takes one float32 tensor"
        _, other = layers(prog.module)
        return f"{', '.join(other)}; it runs chains of nn.Linear and ReLU only" if other else None

    def export(self, programs, workdir, *, quantize, options):
        (prog,) = programs.values()
        chain, _ = layers(prog.module)
        arrays = {"ops": np.array([MODULES[type(s)] for s in chain]),
                  "input_shape": np.array(prog.example_inputs[0].shape, np.int64)}
        for i, step in enumerate(chain):
            if isinstance(step, nn.Linear):  # weight (out, in); bias (out,)
                arrays[f"w{i}"] = step.weight.detach().numpy().astype(np.float32)
                bias = step.bias if step.bias is not None else torch.zeros(step.out_features)
                arrays[f"b{i}"] = bias.detach().numpy().astype(np.float32)
        with open(workdir / "model.toy", "wb") as f:  # a file object: np.savez adds no .npz suffix
            np.savez(f, **arrays)
        return {"files": ["model.toy"], "programs": {prog.name: ("model.toy", prog.name)}, "extra": {}}
