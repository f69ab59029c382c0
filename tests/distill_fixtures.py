"""Objects for `edgesdk distill` tests (loaded as tests/distill_fixtures.py:FUNCTION)."""

import torch
from torch import nn

from edgesdk.models.distill import TensorData


def _x():
    g = torch.Generator().manual_seed(0)
    return torch.randn(512, 16, generator=g)


def teacher():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 5)).eval()


def student():
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 5))


def data():
    x = _x()
    return TensorData({"x": x, "labels": teacher()(x).argmax(1).detach()}, inputs=("x",))


def agreement():
    x = _x()
    y = teacher()(x).argmax(1)
    return lambda s: {"agreement": float((s(x).argmax(1) == y).float().mean())}
