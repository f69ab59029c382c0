"""MLP students (the simplest family).

`MLP` maps features to logits: Linear -> norm -> GELU -> dropout, repeated, then a head.
It exports cleanly to every target (no data-dependent control flow).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from models.registry import register_model


@dataclass
class MLPConfig:
    in_dim: int = 64
    hidden: int = 256
    depth: int = 2
    out_dim: int = 10
    dropout: float = 0.0
    norm: bool = True

    def __post_init__(self):
        for k in ("in_dim", "hidden", "depth", "out_dim"):
            if not isinstance(getattr(self, k), int) or getattr(self, k) < 1:
                raise ValueError(f"MLPConfig.{k} must be a positive int, got {getattr(self, k)!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"MLPConfig.dropout must be in [0, 1), got {self.dropout!r}")


class MLP(nn.Module):
    def __init__(self, cfg: MLPConfig):
        super().__init__()
        self.cfg = cfg
        layers, d = [], cfg.in_dim
        for _ in range(cfg.depth):
            layers += [nn.Linear(d, cfg.hidden), nn.LayerNorm(cfg.hidden) if cfg.norm else nn.Identity(),
                       nn.GELU(), nn.Dropout(cfg.dropout)]
            d = cfg.hidden
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(d, cfg.out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, in_dim) -> (B, out_dim)
        return self.head(self.body(x))

    def example_inputs(self, batch: int = 1) -> tuple[torch.Tensor]:
        return (torch.randn(batch, self.cfg.in_dim),)


@register_model("mlp")
def mlp(**cfg) -> MLP:
    return MLP(MLPConfig(**cfg))
