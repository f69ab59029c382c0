"""Quantization-aware training hook (pt2e QAT with the XNNPACK quantizer).

Train through fake-quantized weights and activations, then export int8 with no calibration::

    import torch, edgesdk
    from edgesdk.converters.qat import prepare_qat, convert_qat

    qat_model = prepare_qat(student, (x,))          # a GraphModule with fake-quant observers
    opt = torch.optim.AdamW(qat_model.parameters(), 1e-3)
    for batch in data:                              # any loss: a distillation loss, CE, ...
        loss = torch.nn.functional.mse_loss(qat_model(batch), teacher(batch))
        opt.zero_grad(); loss.backward(); opt.step()
    int8_model = convert_qat(qat_model)             # q/dq graph with the learned ranges
    art = edgesdk.convert(int8_model, (x,), "executorch-xnnpack", quantize="int8-qat")

The artifact's accuracy gate compares the XNNPACK int8 kernels with the converted PyTorch
graph on held-out inputs (``eval_data=``), like every other quantized scheme.
"""

from __future__ import annotations

import torch

from edgesdk.converters.executorch_xnnpack import is_quantized_graph, xnnpack_quantizer  # noqa: F401  (public here too)
from edgesdk.runtime.errors import ConfigError


def prepare_qat(model: torch.nn.Module, example_inputs: tuple) -> torch.nn.Module:
    """Export ``model`` and insert fake-quant modules for int8 XNNPACK (per-channel weights)."""
    from torchao.quantization.pt2e import allow_exported_model_train_eval, move_exported_model_to_train
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e
    if not isinstance(example_inputs, tuple) or not all(isinstance(t, torch.Tensor) for t in example_inputs):
        raise ConfigError("example_inputs must be a tuple of tensors")
    gm = torch.export.export(model, example_inputs).module()
    prepared = prepare_qat_pt2e(gm, xnnpack_quantizer("int8-static", [], qat=True))
    move_exported_model_to_train(prepared)
    allow_exported_model_train_eval(prepared)  # trainers call .train()/.eval()
    return prepared


def convert_qat(prepared: torch.nn.Module) -> torch.nn.Module:
    """Freeze the learned quantization parameters into a quantize/dequantize graph (eval mode)."""
    from torchao.quantization.pt2e import move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e
    move_exported_model_to_eval(prepared)
    return convert_pt2e(prepared)
