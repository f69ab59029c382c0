"""Edge SDK runtime: load an artifact, run it, profile it. Imports numpy and backends only.

Example::

    import numpy as np
    from edgesdk import runtime
    sess = runtime.load("out/mlp-onnx-cpu")          # checks sha256 of the payload first
    (y,) = sess.run([np.zeros((1, 64), np.float32)])
    rep = runtime.profile("out/mlp-onnx-cpu", warmup=10, iters=200)
    print(rep.p50_ms, rep.p99_ms)

This package never imports torch, `models`, `converters` or `sdk`, so an app can ship it
alone. Exception: opening a `.pte` loads ExecuTorch's Python bindings, which link libtorch.
"""

from edgesdk.runtime import errors
from edgesdk.runtime.errors import (
    ConfigError, ConversionError, ExecutionError, InputError, IntegrityError, SdkError,
    TargetUnavailableError, ToleranceError, UnsupportedModelError,
)
from edgesdk.runtime.manifest import Manifest, ProgramSpec, TensorSpec, parse_manifest
from edgesdk.runtime.profile import ProfileReport, example_inputs
from edgesdk.runtime.profiler import profile
from edgesdk.runtime.session import Session, default_threads, load

__all__ = [
    "load", "profile", "Session", "ProfileReport", "TensorSpec", "ProgramSpec", "Manifest",
    "parse_manifest", "example_inputs", "default_threads", "errors", "SdkError", "ConfigError",
    "InputError", "IntegrityError", "ConversionError", "ToleranceError", "TargetUnavailableError",
    "ExecutionError", "UnsupportedModelError",
]
__version__ = "0.1.0"
