"""The tensors of a model's (nested) output, named and in the order exporters flatten them.

Example::

    import torch
    from edgesdk.converters.outputs import named_outputs
    named_outputs({"logits": torch.zeros(1), "aux": (torch.zeros(1), torch.zeros(2))})
    # [('logits', tensor), ('aux.0', tensor), ('aux.1', tensor)]
"""

from __future__ import annotations

import torch

from edgesdk.runtime.errors import ConversionError


def flatten_outputs(out) -> list[torch.Tensor]:
    """Tensors of a (nested) tuple/list/dict output, in the order exporters flatten them."""
    return [t for _, t in named_outputs(out)]


def named_outputs(out, path: str = "") -> list[tuple[str, torch.Tensor]]:
    """(name, tensor) of every tensor in a (nested) output, in the order exporters flatten them.

    dict / ``ModelOutput`` keys name their values; tuple and list items are numbered
    (``output_i`` at the top, ``.i`` below it); a lone tensor is ``output``.
    """
    if isinstance(out, torch.Tensor):
        return [(path or "output", out)]
    if isinstance(out, (tuple, list)):
        return [item for i, o in enumerate(out)
                for item in named_outputs(o, f"{path}.{i}" if path else f"output_{i}")]
    if isinstance(out, dict):  # ModelOutput is an OrderedDict that leaves out None fields
        return [item for k in out for item in named_outputs(out[k], f"{path}.{k}" if path else str(k))]
    raise ConversionError(f"model output {path or ''} of type {type(out).__name__} is not a tensor, tuple, "
                          "list or dict".replace("  ", " "))
