"""Converters: export a PyTorch module for a target, verify it, hand back an `Artifact`.

One file per target backend, each registering itself with `@register_target`::

    from edgesdk import converters
    [t.name for t in converters.targets()]
    # ['coreml-ane', 'executorch-vulkan', 'executorch-xnnpack', 'litert-cpu', 'litert-gpu',
    #  'onnx-cpu', 'qnn-htp']

A converter writes its ``backend`` into the manifest; the runtime opens the artifact with the
backend registered under that name (`edgesdk.runtime.backends`). A new target is a converter
class and a runtime backend, registered from their own files and loaded by entry point or
environment variable (`edgesdk.runtime.plugins`; the test suite's tests/plugins/).

Imports `runtime` (to verify what it wrote) and nothing else of ours. Heavy exporters
(torch.onnx, ExecuTorch, litert-torch) are imported only inside the converter that needs them.
"""

from edgesdk.converters.artifact import Artifact
from edgesdk.converters.convert import convert, verify
from edgesdk.converters.programs import PROTOCOL_METHOD, ExportablePrograms
from edgesdk.converters.registry import Converter, Target, get_converter, register_target, target_names, targets

# Each backend file registers its target on import (one file per target backend).
import importlib as _importlib  # noqa: E402

BACKEND_MODULES = ("onnx_cpu", "executorch_xnnpack", "litert_cpu", "qnn_htp", "coreml_ane", "executorch_vulkan", "litert_gpu")
for _name in BACKEND_MODULES:
    _importlib.import_module(f"edgesdk.converters.{_name}")

__all__ = ["Artifact", "convert", "verify", "Converter", "Target", "targets", "target_names",
           "get_converter", "register_target", "ExportablePrograms", "PROTOCOL_METHOD"]
