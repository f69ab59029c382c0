"""Which programs a model exports, with their example inputs and I/O names.

Most models export one program, ``forward``. Models with several entry points (an
encoder and a decode step; a prefill and a recurrent step) implement the protocol::

    class MyModel(nn.Module):
        def edge_programs(self) -> dict[str, tuple[nn.Module, tuple[torch.Tensor, ...]]]:
            return {"encode": (EncodeWrapper(self), (src,)),
                    "decode_step": (StepWrapper(self), (tok, pos, cache))}

Output names follow the structure the module returns: dict / ``ModelOutput`` keys
(``last_hidden_state``, ``pooler_output``), ``output_0``, ``output_1``... for a tuple, a dotted path
for nested containers (``output_1.0``, ``past.0.key``), ``output`` for a single tensor. A program
module may instead name its flattened outputs with an ``output_names`` attribute (a tuple of
strings). The structure itself goes into the manifest, so ``Session.run(..., structured=True)``
returns the same dict / nested tuples.
A model that generates text also implements ``edge_generation()``: the manifest entry described
in :mod:`runtime.generate` that wires its prefill and step programs for ``Session.generate``.

`edgesdk.convert(model, None, target)` then exports every program into one artifact: one
`.pte` with a method per program, one `.tflite` with a signature per program, or one
`.onnx` file per program, all under one manifest. A generation model whose ``edge_programs``
and ``edge_generation`` take ``prompt_lengths`` exports one prefill program per prompt length
class (`edgesdk.convert(model, None, target, prompt_lengths=[64, 256, 1024])`).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from edgesdk.converters.outputs import flatten_outputs, named_outputs  # noqa: F401  (public here too)
from edgesdk.runtime.errors import ConfigError, ConversionError, IntegrityError, SdkError
from edgesdk.runtime.generate import parse_spec as parse_generation
from edgesdk.runtime.manifest import DTYPES, ProgramSpec, TensorSpec

PROTOCOL_METHOD = "edge_programs"
GENERATION_METHOD = "edge_generation"


@runtime_checkable
class ExportablePrograms(Protocol):
    def edge_programs(self) -> dict: ...


class ProgramSet(list):
    """The programs of one model, plus its generation entry (``edge_generation()``) if any."""

    generation: dict | None = None


@dataclass
class Program:
    name: str
    module: torch.nn.Module
    example_inputs: tuple
    input_names: list[str]
    output_names: list[str]
    reference: list[torch.Tensor]  # PyTorch outputs on the example inputs, flattened
    structure: object = None       # output skeleton: names in nested lists / dicts (see `structure_of`)
    dynamic: object = None         # converters.shapes.DynamicShapes, or None for static shapes

    def input_specs(self) -> tuple[TensorSpec, ...]:
        specs = tuple(_spec(n, t) for n, t in zip(self.input_names, self.example_inputs))
        return self.dynamic.symbolic_inputs(specs) if self.dynamic else specs

    def output_specs(self) -> tuple[TensorSpec, ...]:
        specs = tuple(TensorSpec(n, tuple(t.shape), _dtype_name(t)) for n, t in zip(self.output_names, self.reference))
        return self.dynamic.symbolic_outputs(specs) if self.dynamic else specs


def _dtype_name(t: torch.Tensor) -> str:
    name = str(t.dtype).removeprefix("torch.")
    if name not in DTYPES:
        raise ConfigError(f"tensor dtype {t.dtype} is not supported (supported: {', '.join(DTYPES)})")
    return name


def _spec(name: str, t: torch.Tensor) -> TensorSpec:
    dtype = _dtype_name(t)
    vr = None
    if dtype not in ("float32", "float16", "float64", "bool") and t.numel():
        vr = (int(t.min()), int(t.max()))
    return TensorSpec(name, tuple(t.shape), dtype, vr)


def set_mode(module: torch.nn.Module, training: bool) -> None:
    """eval()/train(), tolerating modules from `ExportedProgram.module()` that refuse both."""
    try:
        module.train(training)
    except NotImplementedError:
        pass


def structure_of(out, names: list[str]):
    """The output's skeleton with each tensor replaced by its output name: a string, a list
    (tuple/list) or a dict (dict / ModelOutput), as `Session.run(..., structured=True)` rebuilds it."""
    it = iter(names)

    def walk(o):
        if isinstance(o, torch.Tensor):
            return next(it)
        if isinstance(o, (tuple, list)):
            return [walk(x) for x in o]
        return {str(k): walk(o[k]) for k in o}
    return walk(out)


def _input_names(module: torch.nn.Module, n: int) -> list[str]:
    declared = getattr(module, "input_names", None)  # a forward(*args) names its inputs this way
    if isinstance(declared, (tuple, list)) and len(declared) == n and len(set(declared)) == n:
        return list(declared)
    try:
        params = list(inspect.signature(module.forward).parameters.values())
    except (TypeError, ValueError):
        params = []
    names = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(names) >= n and len(set(names[:n])) == n:
        return names[:n]
    return [f"input_{i}" for i in range(n)]


def _output_names(module: torch.nn.Module, out, program: str) -> list[str]:
    """``module.output_names`` (one per flattened output) when declared, else the names the
    output's structure gives (`named_outputs`)."""
    declared = getattr(module, "output_names", None)
    named = named_outputs(out)
    n = len(named)
    if declared is None:
        names = [nm for nm, _ in named]
        if n == 1 and not isinstance(out, dict):
            return ["output"]  # a lone tensor, also inside a 1-tuple
        return names if len(set(names)) == n else [f"output_{i}" for i in range(n)]
    names = list(declared) if isinstance(declared, (tuple, list)) else None
    if (names is None or len(names) != n or len(set(names)) != n
            or not all(isinstance(x, str) and x for x in names)):
        raise ConfigError(f"program {program!r}: output_names must be {n} distinct non-empty strings "
                          f"(one per output), got {declared!r}")
    return names


class KeywordInputs(torch.nn.Module):
    """Presents a module that takes keyword inputs (``model(input_ids=..., attention_mask=...)``)
    as one taking them positionally, which is what exporters and runtimes need."""

    def __init__(self, module: torch.nn.Module, positional: int, keywords: list[str]):
        super().__init__()
        self.module, self.positional, self.keywords = module, positional, list(keywords)

    def forward(self, *args):
        return self.module(*args[:self.positional], **dict(zip(self.keywords, args[self.positional:])))


def with_keywords(model: torch.nn.Module, example_inputs, example_kwargs) -> tuple:
    """(module, inputs, input names) for a model called with ``example_kwargs`` too."""
    if not isinstance(example_kwargs, dict) or not all(isinstance(k, str) for k in example_kwargs):
        raise ConfigError(f"example_kwargs must map keyword names to tensors, e.g. "
                          f"{{'attention_mask': mask}}, got {type(example_kwargs).__name__}")
    args = () if example_inputs is None else example_inputs
    args = (args,) if isinstance(args, torch.Tensor) else tuple(args)
    names = _input_names(model, len(args)) + list(example_kwargs)
    if len(set(names)) != len(names):
        raise ConfigError(f"example_kwargs repeat a positional input: inputs would be named {names}")
    wrapper = KeywordInputs(model, len(args), list(example_kwargs))
    wrapper.train(getattr(model, "training", False))
    return wrapper, args + tuple(example_kwargs.values()), names


def _check_inputs(example_inputs, where: str) -> tuple:
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    if not isinstance(example_inputs, (tuple, list)) or not example_inputs:
        raise ConfigError(f"{where}: example_inputs must be a non-empty tuple of tensors, got "
                          f"{type(example_inputs).__name__}")
    for i, t in enumerate(example_inputs):
        if not isinstance(t, torch.Tensor):
            raise ConfigError(f"{where}: example input {i} is a {type(t).__name__}, expected a torch.Tensor")
    return tuple(example_inputs)


def _call_with_lengths(model, method: str, prompt_lengths):
    """``model.<method>()``, or ``model.<method>(prompt_lengths=...)`` when classes are asked for."""
    fn = getattr(model, method)
    if prompt_lengths is None:
        return fn()
    try:
        takes = "prompt_lengths" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        takes = False
    if not takes:
        raise ConfigError(f"prompt_lengths={prompt_lengths!r}: {type(model).__name__}.{method}() takes no "
                          f"prompt_lengths argument; give it one (and return one prefill program per class) "
                          f"or drop prompt_lengths")
    try:
        return fn(prompt_lengths=prompt_lengths)
    except ValueError as e:
        raise ConfigError(f"prompt_lengths={prompt_lengths!r}: {e}") from None


def collect(model: torch.nn.Module, example_inputs, example_kwargs=None, dynamic_shapes=None,
            prompt_lengths=None) -> ProgramSet:
    """Resolve the programs to export and compute their PyTorch reference outputs.

    ``example_kwargs`` (keyword inputs) become inputs after the positional ones;
    ``dynamic_shapes`` (see `converters.shapes`) applies to a single-program model;
    ``prompt_lengths``: the prompt length classes of a generation model (passed to its
    ``edge_programs`` and ``edge_generation``); None uses the model's own default.
    """
    from edgesdk.converters import shapes
    if not isinstance(model, torch.nn.Module):
        raise ConfigError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if prompt_lengths is not None and example_inputs is not None:
        raise ConfigError("prompt_lengths applies to models that declare their programs (edge_programs()); "
                          "pass example_inputs=None, or drop prompt_lengths")
    names = None
    if example_kwargs:
        model, example_inputs, names = with_keywords(model, example_inputs, example_kwargs)
    if example_inputs is None:
        if not isinstance(model, ExportablePrograms):
            raise ConfigError("example_inputs is required (a tuple of tensors) unless the model "
                              f"implements {PROTOCOL_METHOD}()")
        entries = _call_with_lengths(model, PROTOCOL_METHOD, prompt_lengths)
        if not isinstance(entries, dict) or not entries:
            raise ConfigError(f"{type(model).__name__}.{PROTOCOL_METHOD}() must return a non-empty dict")
    else:
        entries = {"forward": (model, example_inputs)}
    programs = ProgramSet()
    for name, entry in entries.items():
        if not isinstance(entry, tuple) or len(entry) != 2 or not isinstance(entry[0], torch.nn.Module):
            raise ConfigError(f"program {name!r}: expected (nn.Module, example_inputs)")
        module, inputs = entry[0], _check_inputs(entry[1], f"program {name!r}")
        set_mode(module, False)
        in_names = names or _input_names(module, len(inputs))
        dyn = shapes.parse(dynamic_shapes, in_names, inputs) if dynamic_shapes and name == "forward" else None
        if dynamic_shapes and example_inputs is None:
            raise ConfigError(f"dynamic_shapes apply to single-program models; {type(model).__name__} exports "
                              f"{', '.join(entries)} with {PROTOCOL_METHOD}(): {shapes.SHAPE_CLASSES_HINT}")
        if dyn is not None:
            inputs = shapes.traceable(dyn, in_names, inputs)
        try:
            with torch.no_grad():
                out = module(*inputs)
            ref = [t.detach().clone() for t in flatten_outputs(out)]
        except SdkError:
            raise
        except Exception as e:
            raise ConfigError(f"program {name!r}: the model fails on its example inputs: {e}") from None
        outs = _output_names(module, out, name)
        prog = Program(name, module, inputs, in_names, outs, ref, structure_of(out, outs), dyn)
        if dyn is not None:
            dyn.probe_outputs(module, prog.input_specs(), outs, _generated)
        programs.append(prog)
    if example_inputs is None and hasattr(model, GENERATION_METHOD):
        programs.generation = _generation(model, programs, prompt_lengths)
    elif prompt_lengths is not None:
        raise ConfigError(f"prompt_lengths: {type(model).__name__} declares no {GENERATION_METHOD}(), so it has "
                          f"no prompt to classify; drop prompt_lengths")
    return programs


def _generated(specs, seed: int = 7) -> tuple:
    """Random tensors for concrete specs (ints inside the example's value range)."""
    from edgesdk.runtime.profile import example_inputs as _gen
    return tuple(torch.from_numpy(a) for a in _gen(list(specs), seed=seed))


def _generation(model, programs: list[Program], prompt_lengths=None) -> dict:
    """``model.edge_generation()``, checked against the programs as the runtime will check it."""
    try:
        entry = _call_with_lengths(model, GENERATION_METHOD, prompt_lengths)
        specs = {p.name: ProgramSpec(p.name, "", None, p.input_specs(), p.output_specs()) for p in programs}
        return parse_generation(entry, specs).to_dict()
    except IntegrityError as e:
        raise ConfigError(f"{type(model).__name__}.{GENERATION_METHOD}(): "
                          f"{str(e).removeprefix('manifest ')}") from None


class TorchBinding:
    """One program run in PyTorch behind the runtime's binding interface (``spec``, ``run``)."""

    def __init__(self, prog: Program):
        self.spec = ProgramSpec(prog.name, "", None, prog.input_specs(), prog.output_specs())
        self._module, self._names = prog.module, prog.input_names
        self.pool: list = []  # bound copies with their state buffers (runtime.state)

    def run(self, inputs) -> list:
        arrays = [inputs[n] for n in self._names] if isinstance(inputs, dict) else list(inputs)
        with torch.no_grad():
            out = self._module(*[torch.from_numpy(np.ascontiguousarray(a)) for a in arrays])
        return [t.detach().cpu().numpy() for t in flatten_outputs(out)]


class TorchPrograms:
    """A model's programs run in PyTorch through the runtime's own generation loop: the
    reference that `Session.generate` / `Session.score` on an artifact are compared with.

    >>> ref = TorchPrograms(model)            # model implements edge_programs + edge_generation
    >>> ref = TorchPrograms(model, prompt_lengths=[16, 64])   # the classes an artifact was exported with
    >>> ref.generate([1, 2, 3], 16).tokens    # same loop, same sampling as runtime.load(...).generate
    """

    def __init__(self, model: torch.nn.Module, prompt_lengths=None):
        programs = collect(model, None, prompt_lengths=prompt_lengths)
        if programs.generation is None:
            raise ConfigError(f"{type(model).__name__} declares no {GENERATION_METHOD}()")
        self.path = f"<PyTorch {type(model).__name__}>"
        self._programs = {p.name: TorchBinding(p) for p in programs}
        self.generation = parse_generation(programs.generation, {n: b.spec for n, b in self._programs.items()})

    def program(self, name: str) -> TorchBinding:
        return self._programs[name]

    def generate(self, prompt, max_new_tokens: int = 32, **kw):
        from edgesdk.runtime.generate import generate
        return generate(self, prompt, max_new_tokens, **kw)

    def score(self, prompt, continuation) -> dict:
        from edgesdk.runtime.generate import score
        return score(self, prompt, continuation)


_TorchBinding = TorchBinding  # the earlier name, while other branches still import it
