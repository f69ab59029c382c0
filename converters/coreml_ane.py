"""`coreml-ane`: Core ML `.mlpackage` (ML program) for the Apple Neural Engine.

``torch.export`` -> ``coremltools.convert(convert_to="mlprogram")`` with compute units
``CPU_AND_NE`` and deployment target iOS 17 / macOS 14 (ML program opset CoreML7: fp16 I/O,
int8 and 4-bit palettized weights). Schemes:

- ``fp32``: fp32 compute. The ANE computes in fp16 only, so Core ML schedules an fp32 program
  on the CPU (or GPU); use it as the accuracy reference.
- ``fp16`` (recommended for the ANE): fp16 compute and weights; inputs and outputs stay fp32
  (Core ML casts at the edges) so the artifact's interface matches PyTorch's.
- ``int8-weight``: fp16 program with linear symmetric int8 weights
  (``linear_quantize_weights``; weights under 2048 elements stay fp16, coremltools' default).
- ``palettize4``: fp16 program with 4-bit k-means palettized weights (``palettize_weights``).

None needs calibration data. Each program becomes its own package (``model.mlpackage`` for a
single program, ``<program>.mlpackage`` for several), because an ML program package holds one
model. A package is a directory: every file in it is a payload file of the artifact (hashed
in the manifest) and the program's ``file`` is the package's own ``Manifest.json``.

Core ML I/O supports fp32/fp16/int32 only (iOS 17): int64 and smaller integer inputs are
declared int32 and bool inputs fp32; the manifest's ``coreml`` section records the Core ML
side of every input and output so the runtime casts positionally. Conversion works on Linux;
``predict`` needs macOS, so on Linux artifacts are validated structurally (spec, I/O against
the manifest, weight blobs, op histogram).
"""

from __future__ import annotations

import collections
import os
import platform
import re
import shutil
from pathlib import Path

from edgesdk.converters.registry import Converter, register_target
from edgesdk.runtime.errors import ConfigError, ConversionError

DEPLOYMENT_TARGET = "iOS17"  # = macOS14: ML program opset CoreML7
COMPUTE_UNITS = "CPU_AND_NE"
PRECISION = {"fp32": "FLOAT32", "fp16": "FLOAT16", "int8-weight": "FLOAT16", "palettize4": "FLOAT16"}
# manifest dtype -> dtype declared for Core ML I/O (None: let coremltools pick)
COREML_IO_DTYPE = {"float32": "float32", "float16": "float16", "float64": "float32", "int64": "int32",
                   "int32": "int32", "int16": "int32", "int8": "int32", "uint8": "int32", "bool": "float32"}
# manifest dtype -> Core ML ArrayDataType names the runtime can cast from/to
COMPATIBLE = {"float32": {"FLOAT32", "FLOAT16"}, "float16": {"FLOAT16", "FLOAT32"},
              "float64": {"FLOAT32", "FLOAT16", "DOUBLE"}, "int64": {"INT32"}, "int32": {"INT32"},
              "int16": {"INT32"}, "int8": {"INT32"}, "uint8": {"INT32"},
              "bool": {"FLOAT32", "FLOAT16", "INT32"}}
_ARRAY_DTYPES = {65568: "FLOAT32", 65552: "FLOAT16", 65600: "DOUBLE", 131104: "INT32", 131080: "INT8"}
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
RUN_REASON = "Core ML runs only on macOS/iOS (coremltools' predict needs macOS)"


def _fill_pool_strides(ep):
    """coremltools reads max_pool2d's stride positionally; torch leaves it out when it equals the
    kernel (e.g. ``torch.max_pool2d(x, 2)``). Spell the default out so such graphs convert."""
    import torch
    pool = torch.ops.aten.max_pool2d.default
    for node in ep.graph_module.graph.nodes:
        if node.op == "call_function" and node.target is pool and len(node.args) == 2 and "stride" not in node.kwargs:
            node.args = (*node.args, node.args[1])
    ep.graph_module.recompile()
    return ep


def _remove_temp_package(mlmodel) -> None:
    """Delete the package coremltools wrote to the temp folder for an in-memory model (~2 MB per
    program). coremltools removes it only at interpreter exit (atexit), which a pool worker never
    reaches (the pool ends its workers with SIGKILL) and a long-lived process reaches only at its
    end: every Core ML conversion of a demo left its packages behind."""
    path = getattr(mlmodel, "package_path", None)
    if getattr(mlmodel, "is_temp_package", False) and path:
        shutil.rmtree(path, ignore_errors=True)


def package_name(program: str, n_programs: int) -> str:
    if n_programs == 1:
        return "model.mlpackage"
    if not _SAFE_NAME.match(program):
        raise ConfigError(f"program name {program!r} cannot name a Core ML package; use letters, digits, "
                          "'_', '.' or '-'")
    return f"{program}.mlpackage"


def package_files(workdir: Path, package: str) -> list[str]:
    """Every file inside a package, relative to the artifact directory, sorted."""
    root = workdir / package
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for f in sorted(filenames):
            out.append(Path(dirpath, f).relative_to(workdir).as_posix())
    return out


from edgesdk.converters.artifact import fsync_path as _fsync  # noqa: E402


def array_dtype(feature) -> str:
    code = feature.type.multiArrayType.dataType
    return _ARRAY_DTYPES.get(code, f"type{code}")


def io_description(spec) -> dict:
    """Core ML inputs and outputs of a model spec: [{name, shape, dtype}]."""
    def rows(features):
        return [{"name": f.name, "shape": list(f.type.multiArrayType.shape), "dtype": array_dtype(f)}
                for f in features]
    return {"inputs": rows(spec.description.input), "outputs": rows(spec.description.output)}


def op_histogram(spec) -> dict:
    """MIL op type -> count over every function and block of an ML program."""
    hist = collections.Counter()

    def walk(block):
        for op in block.operations:
            hist[op.type] += 1
            for b in op.blocks:
                walk(b)
    for fn in spec.mlProgram.functions.values():
        for block in fn.block_specializations.values():
            walk(block)
    return dict(sorted(hist.items(), key=lambda kv: (-kv[1], kv[0])))


def blob_refs(spec) -> list[tuple[str, int]]:
    """(file name, offset) of every weight blob the program's ops reference."""
    refs = []

    def value(v):
        if v.HasField("blobFileValue"):
            refs.append((v.blobFileValue.fileName, v.blobFileValue.offset))

    def walk(block):
        for op in block.operations:
            for v in op.attributes.values():
                value(v)
            for b in op.blocks:
                walk(b)
    for fn in spec.mlProgram.functions.values():
        for block in fn.block_specializations.values():
            walk(block)
    return refs


def _tensor_types(ct, np, specs, *, outputs: bool, dynamic=None):
    types = []
    for s in specs:
        dt = COREML_IO_DTYPE.get(s.dtype)
        if outputs:
            types.append(ct.TensorType(name=s.name, dtype=getattr(np, dt)) if dt else ct.TensorType(name=s.name))
        else:
            types.append(ct.TensorType(name=s.name, shape=_shape(ct, s.shape, dynamic), dtype=getattr(np, dt)))
    return types


def _shape(ct, shape, dynamic):
    """A static shape, or Core ML flexible shape: each symbolic dim a ``RangeDim`` over its
    range with the example size as default (one symbol = one RangeDim name across inputs)."""
    if not any(isinstance(d, str) for d in shape):
        return tuple(shape)
    return ct.Shape([ct.RangeDim(lower_bound=dynamic.ranges[d][0], upper_bound=dynamic.ranges[d][1],
                                 default=dynamic.example[d], symbol=d) if isinstance(d, str) else d for d in shape])


def flexible_dims(spec) -> dict:
    """Core ML flexible inputs of a model spec: name -> [[lower, upper] per dim] (``shapeRange``)
    or [[sizes...], ...] (``enumeratedShapes``); static inputs are left out."""
    out = {}
    for f in spec.description.input:
        a = f.type.multiArrayType
        kind = a.WhichOneof("ShapeFlexibility")
        if kind == "shapeRange":
            out[f.name] = {"range": [[r.lowerBound, r.upperBound] for r in a.shapeRange.sizeRanges]}
        elif kind == "enumeratedShapes":
            out[f.name] = {"enumerated": [list(s.shape) for s in a.enumeratedShapes.shapes]}
    return out


def mil_unknown_dims(spec) -> dict:
    """The ML program's own view: input name -> dims its ``main`` function declares unknown."""
    fn = spec.mlProgram.functions.get("main")
    if fn is None:
        return {}
    return {i.name: [d for d, dim in enumerate(i.type.tensorType.dimensions) if dim.HasField("unknown")]
            for i in fn.inputs if any(dim.HasField("unknown") for dim in i.type.tensorType.dimensions)}


@register_target
class CoreMLAne(Converter):
    name = "coreml-ane"
    device = "npu"
    format = "mlpackage"
    backend = "coreml"
    description = ("Core ML ML program for the Apple Neural Engine (compute units CPU_AND_NE, iOS 17 / "
                   "macOS 14); fp16 is the ANE's precision (fp32 runs on CPU/GPU)")
    convert_packages = ("coremltools",)
    run_packages = ("coremltools",)
    install_hint = "pip install coremltools==9.0"
    quantization = ("fp32", "fp16", "int8-weight", "palettize4")
    recommended = "fp16"
    recommended_multi_program = "fp16"
    calibrated = ()
    run_label = "yes"
    dynamic_shapes = True  # Core ML flexible shapes (RangeDim); checked structurally off macOS
    # Unmeasured guess for macOS: Core ML's fp32 CPU kernels may reorder accumulations.
    default_tolerance = {"fp32": (1e-3, 1e-3)}

    @classmethod
    def run_unavailable(cls) -> str | None:
        if platform.system() != "Darwin":
            return RUN_REASON
        return super().run_unavailable()

    def export(self, programs, workdir, *, quantize, options):
        import numpy as np
        import torch

        import coremltools as ct
        if options.get("exclude"):
            raise ConfigError("coreml-ane cannot keep individual layers in float yet (auto-fallback); "
                              "use fp16 or convert without auto_fallback")
        files, entries, coreml, details = [], {}, {}, {}
        for name, prog in programs.items():
            ds = prog.dynamic.torch_shapes(prog.input_names, prog.module) if prog.dynamic else None
            ep = _fill_pool_strides(torch.export.export(prog.module, prog.example_inputs, dynamic_shapes=ds
                                                        ).run_decompositions({}))
            mlmodel = ct.convert(
                ep, convert_to="mlprogram",
                inputs=_tensor_types(ct, np, prog.input_specs(), outputs=False, dynamic=prog.dynamic),
                outputs=_tensor_types(ct, np, prog.output_specs(), outputs=True),
                compute_units=getattr(ct.ComputeUnit, COMPUTE_UNITS),
                compute_precision=getattr(ct.precision, PRECISION[quantize]),
                minimum_deployment_target=getattr(ct.target, DEPLOYMENT_TARGET))
            made = [mlmodel]
            pkg = package_name(name, len(programs))
            try:
                if quantize in ("int8-weight", "palettize4"):
                    mlmodel, details[name] = self._compress(ct, mlmodel, quantize)
                    made.append(mlmodel)
                elif quantize == "fp16":
                    details[name] = {"tool": "coremltools.convert(compute_precision=FLOAT16)", "weights": "fp16",
                                     "compute": "fp16", "io": "fp32 (cast inside the program)"}
                mlmodel.save(str(workdir / pkg))
            finally:
                for m in made:
                    _remove_temp_package(m)
            pfiles = package_files(workdir, pkg)
            for f in pfiles:
                _fsync(workdir / f)
            files += pfiles
            entries[name] = (f"{pkg}/Manifest.json", name)
            coreml[name] = {"package": pkg, **io_description(mlmodel.get_spec())}
        if len(files) > 64:
            raise ConversionError(f"{len(files)} payload files exceed the manifest's limit of 64; "
                                  "export fewer programs per artifact")
        extra = {"coreml": {"deployment_target": DEPLOYMENT_TARGET, "compute_units": COMPUTE_UNITS,
                            "compute_precision": PRECISION[quantize].lower(), "programs": coreml}}
        if details:
            extra["quantization_details"] = details
        return {"files": files, "programs": entries, "extra": extra}

    @staticmethod
    def _compress(ct, mlmodel, scheme: str):
        import coremltools.optimize.coreml as cto
        if scheme == "int8-weight":
            op = cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8")
            out = cto.linear_quantize_weights(mlmodel, cto.OptimizationConfig(global_config=op))
            kind, tool = "constexpr_affine_dequantize", "coremltools.optimize.coreml.linear_quantize_weights"
            desc = "int8 linear symmetric, per-channel"
        else:
            op = cto.OpPalettizerConfig(nbits=4, mode="kmeans")
            out = cto.palettize_weights(mlmodel, cto.OptimizationConfig(global_config=op))
            kind, tool = "constexpr_lut_to_dense", "coremltools.optimize.coreml.palettize_weights"
            desc = "4-bit palette (16 fp16 values per tensor, k-means)"
        n = op_histogram(out.get_spec()).get(kind, 0)
        return out, {"tool": tool, "weights": desc, "weight_threshold": op.weight_threshold,
                     "weights_compressed": n, "compute": "fp16",
                     "note": f"weight tensors with at most {op.weight_threshold} elements stay fp16"}

    def validate(self, workdir, programs, manifest):
        import coremltools as ct
        listed = {f.path for f in manifest.files}
        info = manifest.extra.get("coreml", {}).get("programs", {})
        reports, hist_all = {}, collections.Counter()
        for name, spec in manifest.programs.items():
            pkg_rel = Path(spec.file).parent
            if pkg_rel.suffix != ".mlpackage" or Path(spec.file).name != "Manifest.json":
                raise ConversionError(f"{self.name}: program {name!r} file {spec.file!r} is not a package's "
                                      "Manifest.json")
            pkg = workdir / pkg_rel
            on_disk = set(package_files(workdir, pkg_rel.as_posix()))
            if on_disk != {f for f in listed if f.startswith(pkg_rel.as_posix() + "/")}:
                raise ConversionError(f"{self.name}: files in {pkg_rel} differ from the manifest's payload list")
            try:
                mspec = ct.utils.load_spec(str(pkg))
            except Exception as e:
                raise ConversionError(f"{self.name}: {pkg_rel} does not load as a Core ML package: {e}") from e
            if mspec.WhichOneof("Type") != "mlProgram":
                raise ConversionError(f"{self.name}: {pkg_rel} holds a {mspec.WhichOneof('Type')}, "
                                      "expected an ML program")
            io = io_description(mspec)
            recorded = info.get(name, {})
            if recorded and (recorded.get("inputs") != io["inputs"] or recorded.get("outputs") != io["outputs"]):
                raise ConversionError(f"{self.name}: {pkg_rel} I/O differs from the manifest's coreml section")
            checks = self._io_check(name, spec, io)
            flex = self._flex_check(name, spec, mspec) if spec.dims else None
            weights = pkg / "Data" / "com.apple.CoreML"
            for fname, offset in blob_refs(mspec):
                rel = fname.removeprefix("@model_path/")
                blob = weights / rel
                if not blob.is_file() or offset >= blob.stat().st_size:
                    raise ConversionError(f"{self.name}: {pkg_rel}: weight blob {fname}@{offset} is missing")
            hist = op_histogram(mspec)
            hist_all.update(hist)
            reports[name] = {"package": pkg_rel.as_posix(), "spec_version": mspec.specificationVersion,
                             "functions": list(mspec.mlProgram.functions),
                             "opsets": sorted({fn.opset for fn in mspec.mlProgram.functions.values()}),
                             "io_check": checks, "op_histogram": hist,
                             "weight_blobs": len(blob_refs(mspec)),
                             **({"flexible_shapes": flex} if flex else {})}
        return {"io_check": "passed: names, shapes and dtypes match the manifest (casts listed per program)",
                "op_histogram": dict(sorted(hist_all.items(), key=lambda kv: (-kv[1], kv[0]))),
                "compute_units": COMPUTE_UNITS, "deployment_target": DEPLOYMENT_TARGET,
                "precision": PRECISION[manifest.quantization.get("scheme", "fp32")].lower(),
                "ane_placement": "not measured: which ops the ANE takes is known only on macOS "
                                 "(MLComputePlan / Xcode's Core ML performance report)",
                "programs": reports}

    def _io_check(self, name: str, spec, io: dict) -> dict:
        casts = []
        for kind, want, got in (("input", spec.inputs, io["inputs"]), ("output", spec.outputs, io["outputs"])):
            if len(want) != len(got):
                raise ConversionError(f"{self.name}: program {name!r} has {len(got)} Core ML {kind}s, the "
                                      f"manifest declares {len(want)}")
            for w, g in zip(want, got):
                if w.name != g["name"]:
                    raise ConversionError(f"{self.name}: {kind} {w.name!r} is named {g['name']!r} in Core ML")
                if any(isinstance(d, str) for d in w.shape):
                    # flexible: Core ML lists the default (example) shape, or none for an output;
                    # the ranges are checked by _flex_check
                    static = [(d, c) for d, c in zip(w.shape, g["shape"]) if not isinstance(d, str)]
                    if g["shape"] and (len(g["shape"]) != len(w.shape) or any(d != c for d, c in static)):
                        raise ConversionError(f"{self.name}: {kind} {w.name!r}: Core ML shape {g['shape']}, "
                                              f"manifest {list(w.shape)}")
                elif list(w.shape) != list(g["shape"]):
                    raise ConversionError(f"{self.name}: {kind} {w.name!r}: Core ML shape {g['shape']}, "
                                          f"manifest {list(w.shape)}")
                if g["dtype"] not in COMPATIBLE.get(w.dtype, ()):
                    raise ConversionError(f"{self.name}: {kind} {w.name!r}: Core ML dtype {g['dtype']} cannot "
                                          f"carry the manifest's {w.dtype}")
                if g["dtype"].lower() != w.dtype:
                    casts.append(f"{kind} {w.name}: {w.dtype} <-> {g['dtype'].lower()} (runtime casts)")
        return {"passed": True, "casts": casts}

    def _flex_check(self, name: str, spec, mspec) -> dict:
        """Every symbolic input dim is a Core ML range equal to the manifest's, and unknown in
        the ML program's ``main`` signature; every static dim is fixed."""
        flex, mil = flexible_dims(mspec), mil_unknown_dims(mspec)
        for s in spec.inputs:
            syms = {d: x for d, x in enumerate(s.shape) if isinstance(x, str)}
            if not syms:
                continue
            got = flex.get(s.name, {}).get("range")
            want = [[spec.dims[x]["min"], spec.dims[x]["max"]] if isinstance(x, str) else [x, x] for x in s.shape]
            if got != want:
                raise ConversionError(f"{self.name}: program {name!r} input {s.name!r}: Core ML shape range "
                                      f"{got}, the manifest's dynamic_shapes give {want}")
            if sorted(mil.get(s.name, [])) != sorted(syms):
                raise ConversionError(f"{self.name}: program {name!r} input {s.name!r}: the ML program leaves "
                                      f"dims {mil.get(s.name, [])} unknown, expected {sorted(syms)}")
        return {"inputs": flex, "mil_unknown_dims": mil, "passed": True}
