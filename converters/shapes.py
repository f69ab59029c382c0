"""Dynamic shapes: ``dynamic_shapes={"x": {0: (1, 32)}, "ids": {1: (8, 512)}}``.

Each entry names an input and, per dimension, its range ``(min, max)``, a named range
``("seq", 8, 512)`` or a ``torch.export.Dim("seq", min=8, max=512)``. Dimensions that share a
name are one symbol (the exporter needs to know that ``input_ids`` and ``attention_mask`` have the
same length); unnamed dimensions with the same range and the same example size share one too.

The exporters see ``torch.export.Dim`` objects; the manifest records every symbol's range and
example size (``programs.<name>.dims``) and names the symbolic dims in the input/output specs, so
the runtime validates sizes against the range, and the verification runs at both ends of every
range and a middle point.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch

from edgesdk.runtime.errors import ConfigError
from edgesdk.runtime.manifest import TensorSpec

_SYMBOL = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
SHAPE_CLASSES_HINT = ("export one artifact per shape class instead: call edgesdk.convert once per static shape "
                      "(e.g. batch 1, 4, 16) with example inputs of that shape")


@dataclass
class DynamicShapes:
    """The dynamic dimensions of one program."""

    ranges: dict[str, tuple[int, int]]             # symbol -> (min, max)
    example: dict[str, int]                        # symbol -> size in the example (export) inputs
    inputs: dict[str, dict[int, str]]              # input name -> {dim: symbol}
    outputs: dict[str, dict[int, str]] = field(default_factory=dict)  # output name -> {dim: symbol}

    # ---- specs
    @staticmethod
    def _symbolic(specs, dims_of) -> tuple[TensorSpec, ...]:
        out = []
        for s in specs:
            marks = dims_of.get(s.name, {})
            shape = tuple(marks.get(i, d) for i, d in enumerate(s.shape))
            out.append(TensorSpec(s.name, shape, s.dtype, s.value_range))
        return tuple(out)

    def symbolic_inputs(self, specs) -> tuple[TensorSpec, ...]:
        return self._symbolic(specs, self.inputs)

    def symbolic_outputs(self, specs) -> tuple[TensorSpec, ...]:
        return self._symbolic(specs, self.outputs)

    def manifest_dims(self) -> dict:
        return {s: {"min": lo, "max": hi, "example": self.example[s]} for s, (lo, hi) in self.ranges.items()}

    # ---- export
    def torch_shapes(self, input_names: list[str], module=None) -> tuple:
        """``dynamic_shapes`` for ``torch.export.export`` (one entry per positional input; nested
        once more for a ``forward(*args)`` module, which torch.export sees as one argument)."""
        dims = {s: torch.export.Dim(s, min=lo, max=hi) for s, (lo, hi) in self.ranges.items()}
        specs = tuple({d: dims[sym] for d, sym in self.inputs[n].items()} if n in self.inputs else None
                      for n in input_names)
        if module is not None:
            import inspect
            params = list(inspect.signature(module.forward).parameters.values())
            if params and params[0].kind is inspect.Parameter.VAR_POSITIONAL:
                return (specs,)
        return specs

    # ---- verification points
    def points(self) -> list[dict[str, int]]:
        """Sizes to verify at: every range's lower end, its upper end and a middle point."""
        lo = {s: r[0] for s, r in self.ranges.items()}
        hi = {s: r[1] for s, r in self.ranges.items()}
        mid = {s: (r[0] + r[1] + 1) // 2 for s, r in self.ranges.items()}
        out = []
        for p in (lo, mid, hi):
            if p not in out and p != self.example:
                out.append(p)
        return out

    def concrete(self, specs, point: dict[str, int]) -> list[TensorSpec]:
        """Input specs with every symbol replaced by its size at ``point``."""
        return [TensorSpec(s.name, tuple(point[d] if isinstance(d, str) else d for d in s.shape), s.dtype,
                           s.value_range) for s in specs]

    def probe_outputs(self, module, input_specs, output_names: list[str], make_inputs) -> None:
        """Mark output dims that follow a symbol: run PyTorch at two sizes and compare."""
        from edgesdk.converters.outputs import flatten_outputs
        shapes = []
        for p in self.points()[:1] + [self.example]:
            with torch.no_grad():
                out = flatten_outputs(module(*make_inputs(self.concrete(input_specs, p))))
            shapes.append(([tuple(t.shape) for t in out], p))
        (a, pa), (b, pb) = shapes
        for name, sa, sb in zip(output_names, a, b):
            marks = {}
            for i, (da, db) in enumerate(zip(sa, sb)):
                if da == db:
                    continue
                sym = next((s for s in self.ranges if pa[s] == da and pb[s] == db), None)
                marks[i] = sym or f"{name.replace('.', '_')}_d{i}"
            if marks:
                self.outputs[name] = marks


def _range(v, where: str) -> tuple[str | None, int, int]:
    if isinstance(v, torch.export.Dim) or type(v).__name__ in ("Dim", "_Dim"):
        name = getattr(v, "__name__", None)
        lo, hi = getattr(v, "min", None), getattr(v, "max", None)
        if not isinstance(hi, int) or hi > 1 << 30:
            raise ConfigError(f"{where}: torch.export.Dim {name!r} needs a finite max (e.g. Dim({name!r}, min=1, "
                              "max=32)): edge runtimes plan memory for the largest size")
        return name, int(lo or 1), int(hi)
    if isinstance(v, (tuple, list)) and len(v) == 3 and isinstance(v[0], str):
        name, lo, hi = v
    elif isinstance(v, (tuple, list)) and len(v) == 2:
        name, (lo, hi) = None, v
    else:
        raise ConfigError(f"{where}: expected (min, max), (name, min, max) or a torch.export.Dim, got {v!r}")
    if not all(isinstance(x, int) and not isinstance(x, bool) for x in (lo, hi)) or not 1 <= lo < hi:
        raise ConfigError(f"{where}: a range is two ints with 1 <= min < max, got ({lo!r}, {hi!r})")
    if name is not None and not _SYMBOL.match(name):
        raise ConfigError(f"{where}: dimension name {name!r} must be an identifier (letters, digits, _)")
    return name, lo, hi


def parse(dynamic_shapes, input_names: list[str], example_inputs: tuple) -> DynamicShapes | None:
    """Validate the user's ``dynamic_shapes`` against the program's inputs; None when empty."""
    if dynamic_shapes is None or dynamic_shapes == {}:
        return None
    if not isinstance(dynamic_shapes, dict):
        raise ConfigError(f"dynamic_shapes must map input names to {{dim: (min, max)}}, e.g. "
                          f"{{{input_names[0]!r}: {{0: (1, 32)}}}}, got {type(dynamic_shapes).__name__}")
    unknown = [k for k in dynamic_shapes if k not in input_names]
    if unknown:
        raise ConfigError(f"dynamic_shapes names unknown input(s) {unknown}; the inputs are {input_names}")
    ranges: dict[str, tuple[int, int]] = {}
    example: dict[str, int] = {}
    inputs: dict[str, dict[int, str]] = {}
    auto: dict[tuple, str] = {}
    for name, per_dim in dynamic_shapes.items():
        t = example_inputs[input_names.index(name)]
        if not isinstance(per_dim, dict) or not per_dim:
            raise ConfigError(f"dynamic_shapes[{name!r}]: expected {{dim: (min, max)}}, got {per_dim!r}")
        marks = {}
        for dim, v in per_dim.items():
            where = f"dynamic_shapes[{name!r}][{dim!r}]"
            if isinstance(dim, bool) or not isinstance(dim, int) or not -t.ndim <= dim < t.ndim:
                raise ConfigError(f"{where}: {name!r} has {t.ndim} dims ({list(t.shape)}); give a dim index "
                                  f"0..{t.ndim - 1}")
            dim %= t.ndim
            sym, lo, hi = _range(v, where)
            size = int(t.shape[dim])
            if not lo <= size <= hi:
                raise ConfigError(f"{where}: the example input has size {size} there, outside ({lo}, {hi}); "
                                  "give example inputs whose shape lies inside every range")
            if sym is None:
                sym = auto.setdefault((lo, hi, size), f"{name}_{dim}")
            if sym in ranges and (ranges[sym] != (lo, hi) or example[sym] != size):
                raise ConfigError(f"{where}: dimension {sym!r} is declared twice with different ranges or "
                                  f"example sizes ({ranges[sym]} size {example[sym]} vs ({lo}, {hi}) size {size})")
            ranges[sym], example[sym] = (lo, hi), size
            marks[dim] = sym
        inputs[name] = marks
    return DynamicShapes(ranges, example, inputs)


def traceable(ds: DynamicShapes, input_names: list[str], inputs: tuple) -> tuple:
    """The example inputs, tiled along dynamic dims whose example size is 1: exporters
    specialise a size-1 dim to a constant, so tracing needs at least 2 there."""
    out = list(inputs)
    for name, marks in ds.inputs.items():
        i = input_names.index(name)
        t = out[i]
        for dim, sym in marks.items():
            if t.shape[dim] == 1:
                n = max(2, ds.ranges[sym][0])
                t = t.index_select(dim, torch.arange(n) % t.shape[dim])
                ds.example[sym] = n
        out[i] = t
    return tuple(out)


def unsupported(target: str, device: str) -> ConfigError:
    where = "an NPU" if device == "npu" else f"{target}"
    return ConfigError(f"{target}: dynamic_shapes are not supported on {where} (the artifact's shapes are fixed "
                       f"when it is compiled); {SHAPE_CLASSES_HINT}. Targets with dynamic shapes: "
                       "onnx-cpu, executorch-xnnpack, litert-cpu, coreml-ane (Core ML flexible shapes)")
