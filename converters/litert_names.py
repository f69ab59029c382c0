"""Short tensor names in a `.tflite`: the converter names every tensor by its full torch scope path
(``edgesdk.models.mamba._Prefill/torch.nn.modules.normalization.LayerNorm_ln1;;...``), ~18% of a
quantized small model's file. Signatures address tensors by index, so only names are lost: the
graph inputs and outputs keep theirs.

    >>> shorten_tensor_names(Path("model.tflite"))  # doctest: +SKIP
    347012
"""

from __future__ import annotations

from pathlib import Path


def shorten_tensor_names(path: Path) -> int:
    """Rename every tensor that is not a subgraph input or output to ``t<index>`` in the `.tflite` at
    ``path`` (rewritten atomically); returns the bytes saved. Files whose buffers sit past the
    flatbuffer (the > 2 GiB layout) are left as they are (0)."""
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
    tfu.write_model(model, tmp)
    tmp.replace(path)
    return before - path.stat().st_size
