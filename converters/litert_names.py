"""Bytes of a `.tflite` that carry no maths: long tensor names and repeated vectors.

- The converter names every tensor by its full torch scope path
  (``edgesdk.models.mamba._Prefill/torch.nn.modules.normalization.LayerNorm_ln1;;...``), ~18% of a
  quantized small model's file. Signatures address tensors by index, so only names are lost: the graph
  inputs and outputs keep theirs.
- Every per-channel int8 tensor carries its own int64 zero-point vector (all zeros, 8 bytes a channel:
  two thirds of the quantization parameters), and constants repeat across signatures. A FlatBuffer may
  point several tables at one vector, so each distinct vector is written once.

    >>> shorten_tensor_names(Path("model.tflite"))  # doctest: +SKIP
    347012
"""

from __future__ import annotations

import hashlib
from pathlib import Path


def _sharing_builder():
    """A flatbuffers Builder that writes each distinct numeric vector (dtype and bytes) once and hands
    later identical ones the first one's offset."""
    import flatbuffers

    class SharingBuilder(flatbuffers.Builder):
        def __init__(self, size):
            super().__init__(size)
            self._seen: dict[tuple, int] = {}

        def CreateNumpyVector(self, x):  # noqa: N802 (flatbuffers' name)
            key = (x.dtype.str, x.size, hashlib.sha256(x.tobytes(order="C")).digest())
            if key not in self._seen:
                self._seen[key] = super().CreateNumpyVector(x)
            return self._seen[key]

    return SharingBuilder


def write_shared(model, path: Path) -> None:
    """Write a ``ModelT`` (ai_edge_litert's object API) to ``path`` with every repeated numeric vector
    stored once (quantization zero points and scales, identical constant buffers)."""
    builder = _sharing_builder()(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")  # the TFLite schema's identifier
    path.write_bytes(builder.Output())


def shorten_tensor_names(path: Path) -> int:
    """Rename every tensor that is not a subgraph input or output to ``t<index>`` in the `.tflite` at
    ``path`` and store repeated vectors once (rewritten atomically); returns the bytes saved. Files whose
    buffers sit past the flatbuffer (the > 2 GiB layout) are left as they are (0)."""
    from ai_edge_quantizer.utils import tfl_flatbuffer_utils as tfu
    before = path.stat().st_size
    model = tfu.read_model(path)
    if any(getattr(b, "offset", 0) > 1 for b in model.buffers):
        return 0
    for sg in model.subgraphs:
        keep = set(sg.inputs) | set(sg.outputs)
        for i, t in enumerate(sg.tensors):
            if i not in keep:
                t.name = f"t{i}"
    tmp = path.with_name(path.name + ".tmp")
    write_shared(model, tmp)
    tmp.replace(path)
    return before - path.stat().st_size
