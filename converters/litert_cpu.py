"""`litert-cpu`: `.tflite` via litert-torch, run by LiteRT (`ai_edge_litert`) with XNNPACK."""

from __future__ import annotations

import re

from converters.registry import Converter, register_target

SINGLE_SIGNATURE = "serving_default"


def _natural(names):
    return sorted(names, key=lambda s: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)])


def export_tflite(programs, path) -> dict[str, str]:
    """Write every program as a signature of one `.tflite`; returns program -> signature name."""
    import litert_torch
    items = list(programs.items())
    if len(items) == 1:
        (_, prog), = items
        model = litert_torch.convert(prog.module, prog.example_inputs)
        sigs = {items[0][0]: SINGLE_SIGNATURE}
    else:
        conv = None
        for name, prog in items:
            conv = (litert_torch if conv is None else conv).signature(name, prog.module, prog.example_inputs)
        model = conv.convert()
        sigs = {name: name for name, _ in items}
    model.export(str(path))
    return sigs


def signature_io(path, sigs: dict[str, str]) -> dict:
    """The tflite tensor names of each signature in PyTorch argument order."""
    from ai_edge_litert.interpreter import Interpreter
    listed = Interpreter(model_path=str(path)).get_signature_list()
    return {prog: {"inputs": _natural(listed[sig]["inputs"]), "outputs": _natural(listed[sig]["outputs"])}
            for prog, sig in sigs.items()}


@register_target
class LiteRtCpu(Converter):
    name = "litert-cpu"
    device = "cpu"
    format = "tflite"
    backend = "litert"
    description = "LiteRT (ai-edge-litert) with XNNPACK on CPU"
    convert_packages = ("litert_torch",)
    run_packages = ("ai_edge_litert",)
    install_hint = "pip install litert-torch ai-edge-litert"

    def export(self, programs, workdir, *, quantize, options):
        path = workdir / "model.tflite"
        sigs = export_tflite(programs, path)
        return {"files": ["model.tflite"], "programs": {p: ("model.tflite", s) for p, s in sigs.items()},
                "extra": {"litert_io": signature_io(path, sigs)}}
