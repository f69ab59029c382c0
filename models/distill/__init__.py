"""Distillation (plain PyTorch): a loss registry, feature hooks, and the trainer.

Example::

    from edgesdk.models.distill import DistillConfig, LossSpec, TensorData, distill
    cfg = DistillConfig(losses=[LossSpec("kl", 0.9, {"temperature": 2.0}), LossSpec("ce", 0.1)], steps=300)
    student = distill(teacher, student, TensorData({"x": x, "labels": y}, inputs=("x",)), cfg)
"""

from edgesdk.models.distill.hooks import AttentionHooks, FeatureHooks, capture_attention, split_heads
from edgesdk.models.distill.losses import DistillLoss, get_loss, get_loss_class, list_losses, register_loss
from edgesdk.models.distill.trainer import (
    Checkpointer, DistillConfig, LossSpec, Stage, StepLog, TeacherCache, TensorData, distill,
)

__all__ = ["DistillLoss", "get_loss", "get_loss_class", "list_losses", "register_loss",
           "AttentionHooks", "FeatureHooks", "capture_attention", "split_heads",
           "DistillConfig", "LossSpec", "Stage", "StepLog", "TensorData", "TeacherCache", "Checkpointer",
           "distill"]
