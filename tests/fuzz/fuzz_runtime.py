"""atheris harness: the manifest parser and input validation must only ever raise our typed errors.

    .venv/bin/python tests/fuzz/fuzz_runtime.py -runs=3000 -seed=1        # bounded (make test)
    make fuzz                                                              # longer run
Crashers atheris finds (crash-* files) become regression inputs in tests/fuzz/regressions/.
"""

import copy
import json
import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

with atheris.instrument_imports(include=["runtime"]):
    import numpy as np

    from edgesdk.runtime.errors import IntegrityError, InputError
    from edgesdk.runtime.manifest import ProgramSpec, TensorSpec, parse_manifest
    from edgesdk.runtime.session import _Binding

TEMPLATE = {
    "schema": "edgesdk.manifest/1", "name": "m", "target": "onnx-cpu", "format": "onnx",
    "programs": {"forward": {"file": "model.onnx", "method": "forward",
                             "inputs": [{"name": "x", "shape": [2, 3], "dtype": "float32"}],
                             "outputs": [{"name": "y", "shape": [2], "dtype": "float32"}]}},
    "files": [{"path": "model.onnx", "size": 10, "sha256": "0" * 64}],
}
VALUES = [None, True, 0, -1, 2**63, 1.5, float("nan"), "", "..", "../x", "/abs", "a\x00b", [], {}, [1, "a"],
          {"k": 1}, "float32", "complex64", [-1], [2**40, 2**40], "0" * 64]
SPEC = ProgramSpec("forward", "m.onnx", "forward",
                   (TensorSpec("x", (2, 3), "float32"), TensorSpec("ids", ("batch", 4), "int64")),
                   (TensorSpec("y", (2,), "float32"),))
DTYPES = ["float32", "float64", "int64", "int32", "bool", "float16", ">f4", "uint8"]


class Echo:
    thread_safe = True

    def run(self, arrays):
        return arrays


BINDING = _Binding(SPEC, Echo(), "reject")


def _mutate(fdp, node, depth=0):
    if isinstance(node, dict) and node and depth < 6:
        key = list(node)[fdp.ConsumeIntInRange(0, len(node) - 1)]
        if fdp.ConsumeBool():
            node[key] = copy.deepcopy(VALUES[fdp.ConsumeIntInRange(0, len(VALUES) - 1)])
        else:
            _mutate(fdp, node[key], depth + 1)
    elif isinstance(node, list) and node and depth < 6:
        i = fdp.ConsumeIntInRange(0, len(node) - 1)
        if fdp.ConsumeBool():
            node[i] = copy.deepcopy(VALUES[fdp.ConsumeIntInRange(0, len(VALUES) - 1)])
        else:
            _mutate(fdp, node[i], depth + 1)


def one_input(data: bytes):
    fdp = atheris.FuzzedDataProvider(data)
    mode = fdp.ConsumeIntInRange(0, 2)
    try:
        if mode == 0:
            parse_manifest(fdp.ConsumeBytes(fdp.remaining_bytes()))
        elif mode == 1:
            m = json.loads(json.dumps(TEMPLATE))
            for _ in range(fdp.ConsumeIntInRange(1, 4)):
                _mutate(fdp, m)
            parse_manifest(json.dumps(m, allow_nan=True))
        else:
            arrays = []
            for _ in range(fdp.ConsumeIntInRange(0, 3)):
                dtype = np.dtype(DTYPES[fdp.ConsumeIntInRange(0, len(DTYPES) - 1)])
                shape = tuple(fdp.ConsumeIntInRange(0, 5) for _ in range(fdp.ConsumeIntInRange(0, 3)))
                n = int(np.prod(shape)) if shape else 1
                raw = fdp.ConsumeBytes(n * dtype.itemsize)
                raw = raw + b"\x00" * (n * dtype.itemsize - len(raw))
                arrays.append(np.frombuffer(raw, dtype=dtype).reshape(shape))
            if fdp.ConsumeBool() and len(arrays) == 2:
                BINDING.run({"x": arrays[0], "ids": arrays[1]})
            else:
                BINDING.run(arrays)
    except (IntegrityError, InputError):
        pass


if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
