"""`edgesdk.distill`: the distillation trainer with progress display and the quantization-aware option.

Example::

    import edgesdk
    from edgesdk.models.distill import DistillConfig, LossSpec, TensorData
    cfg = DistillConfig(losses=[LossSpec("kl", 1.0, {"temperature": 2.0})], steps=300, lr=3e-3)
    student = edgesdk.distill(teacher, student, TensorData({"x": x}, inputs=("x",)), cfg)

With ``config.quantize_aware="int8"`` the student trains through fake-quantized weights and
activations (pt2e QAT, XNNPACK scheme) and comes back as an int8 quantize/dequantize graph:
``edgesdk.convert(student, example, "executorch-xnnpack", quantize="int8-qat")`` exports it with no
calibration step.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from edgesdk.models.distill.trainer import DistillConfig, StepLog
from edgesdk.models.distill.trainer import distill as _train
from edgesdk.progress import Progress


def _printer(progress: Progress, total: int, every: int):
    bar = progress.bar("distill")

    def on_step(log: StepLog) -> None:
        bar(log.step, total)
        if log.metrics or log.step % every == 0 or log.step == total:
            metrics = " ".join(f"{k} {v:.4g}" for k, v in log.metrics.items())
            progress.stage(f"step {log.step}/{total} [{log.stage}] loss {log.loss:.4f} lr {log.lr:.2e} {metrics}".rstrip())
    return on_step


def distill(teacher: torch.nn.Module, student: torch.nn.Module, data, config: DistillConfig, *,
            eval_fn=None, progress: Progress | bool | None = None) -> torch.nn.Module:
    """Distil ``teacher`` into ``student``; see `models.distill.trainer.distill` for the contract."""
    if progress is None or progress is True:
        progress = Progress(config.progress and int(os.environ.get("RANK", "0")) == 0)
    elif progress is False:
        progress = Progress(False)
    on_step = _printer(progress, config.total_steps, max(1, config.total_steps // 20))
    if config.quantize_aware == "int8":
        from edgesdk.converters.qat import convert_qat, prepare_qat
        example = tuple(data.sample(0, config.batch_size, config.seed)[k] for k in data.inputs)
        if config.student_features:
            raise ValueError("quantize_aware training runs on the exported graph: student_features hooks "
                             "by module name are not available; drop them or train in float first")
        progress.stage("preparing the student for quantization-aware training (int8, XNNPACK scheme)")
        qat = prepare_qat(student, example)
        trained = _train(teacher, qat, data, config, eval_fn=eval_fn, on_step=on_step)
        int8 = convert_qat(trained)
        int8.distill_history = trained.distill_history
        return int8
    return _train(teacher, student, data, config, eval_fn=eval_fn, on_step=on_step)


def save_student(student: torch.nn.Module, out_dir: str | Path, config: DistillConfig) -> Path:
    """Write the trained student (safetensors), its loss history and the config."""
    from safetensors.torch import save_file
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "student.safetensors.tmp"
    save_file({k: v.detach().contiguous() for k, v in student.state_dict().items()}, str(tmp))
    os.replace(tmp, out / "student.safetensors")
    (out / "history.json").write_text(json.dumps(getattr(student, "distill_history", [])))
    (out / "config.json").write_text(json.dumps(config.to_dict(), indent=2, default=str))
    return out / "student.safetensors"
