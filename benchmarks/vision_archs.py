"""Three public vision architectures in plain PyTorch, with their published configurations.

torchvision is not installed in this environment (the registry's wheel is a CUDA build that does
not load beside the CPU torch, see DESIGN.md), so the benchmarks build these themselves from the
papers' tables. Random weights; `calibrate_batchnorm` runs a few random batches in training mode
so BatchNorm statistics match the activations (otherwise random-init stacks drive the logits
towards zero and quantization gates compare noise).

- ResNet-18: He et al., "Deep Residual Learning for Image Recognition" (2016), Table 1: BasicBlocks
  [2, 2, 2, 2] at widths 64/128/256/512.
- MobileNetV2 (width 1.0): Sandler et al., "MobileNetV2: Inverted Residuals and Linear
  Bottlenecks" (2018), Table 2 (t, c, n, s).
- MobileNetV3-Small: Howard et al., "Searching for MobileNetV3" (2019), Table 2, with
  squeeze-and-excite to 1/4 of the expansion and hard-swish.

Example::

    from benchmarks.vision_archs import build
    model, x = build("mobilenet_v2")          # eval mode, (1, 3, 224, 224) example input
"""

from __future__ import annotations

import torch
from torch import nn


def _div8(v: float) -> int:
    """Round channels to a multiple of 8, never below 90% of v (the MobileNet convention)."""
    n = max(8, int(v + 4) // 8 * 8)
    return n + 8 if n < 0.9 * v else n


def _cbn(cin, cout, k, s=1, groups=1, act=nn.ReLU):
    layers = [nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


# ----------------------------------------------------------------------------- ResNet-18

class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = _cbn(cin, cout, 3, stride)
        self.conv2 = _cbn(cout, cout, 3, act=None)
        self.down = None if stride == 1 and cin == cout else _cbn(cin, cout, 1, stride, act=None)
        self.relu = nn.ReLU()

    def forward(self, x):
        idt = x if self.down is None else self.down(x)
        return self.relu(self.conv2(self.conv1(x)) + idt)


class ResNet18(nn.Module):
    def __init__(self, classes=1000):
        super().__init__()
        self.stem = nn.Sequential(_cbn(3, 64, 7, 2), nn.MaxPool2d(3, 2, 1))
        blocks, cin = [], 64
        for i, w in enumerate((64, 128, 256, 512)):
            for j in range(2):
                blocks.append(BasicBlock(cin, w, 2 if (j == 0 and i > 0) else 1))
                cin = w
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(512, classes)

    def forward(self, image):  # (B, 3, H, W) -> (B, classes)
        return self.fc(self.blocks(self.stem(image)).mean((2, 3)))


# ----------------------------------------------------------------------------- MobileNetV2

class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, expand, k=3, se=False, act=nn.ReLU6):
        super().__init__()
        hid = _div8(cin * expand) if isinstance(expand, float) else expand
        layers = [] if hid == cin else [_cbn(cin, hid, 1, act=act)]
        layers.append(_cbn(hid, hid, k, stride, groups=hid, act=act))
        if se:
            layers.append(SqueezeExcite(hid))
        layers.append(_cbn(hid, cout, 1, act=None))
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.body(x)
        return x + y if self.residual else y


class MobileNetV2(nn.Module):
    SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                (6, 320, 1, 1))  # (t: expansion, c: channels, n: repeats, s: first stride)

    def __init__(self, classes=1000):
        super().__init__()
        layers, cin = [_cbn(3, 32, 3, 2, act=nn.ReLU6)], 32
        for t, c, n, s in self.SETTINGS:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, float(t)))
                cin = c
        layers.append(_cbn(cin, 1280, 1, act=nn.ReLU6))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, classes))

    def forward(self, image):  # (B, 3, H, W) -> (B, classes)
        return self.classifier(self.features(image).mean((2, 3)))


# ----------------------------------------------------------------------------- MobileNetV3-Small

class SqueezeExcite(nn.Module):
    def __init__(self, c):
        super().__init__()
        r = _div8(c / 4)
        self.fc1, self.fc2 = nn.Conv2d(c, r, 1), nn.Conv2d(r, c, 1)
        self.relu, self.gate = nn.ReLU(), nn.Hardsigmoid()

    def forward(self, x):
        return x * self.gate(self.fc2(self.relu(self.fc1(x.mean((2, 3), keepdim=True)))))


class MobileNetV3Small(nn.Module):
    # (kernel, expansion channels, out channels, squeeze-excite, hard-swish, stride), Table 2
    SETTINGS = ((3, 16, 16, True, False, 2), (3, 72, 24, False, False, 2), (3, 88, 24, False, False, 1),
                (5, 96, 40, True, True, 2), (5, 240, 40, True, True, 1), (5, 240, 40, True, True, 1),
                (5, 120, 48, True, True, 1), (5, 144, 48, True, True, 1), (5, 288, 96, True, True, 2),
                (5, 576, 96, True, True, 1), (5, 576, 96, True, True, 1))

    def __init__(self, classes=1000):
        super().__init__()
        layers, cin = [_cbn(3, 16, 3, 2, act=nn.Hardswish)], 16
        for k, exp, c, se, hs, s in self.SETTINGS:
            layers.append(InvertedResidual(cin, c, s, exp, k=k, se=se, act=nn.Hardswish if hs else nn.ReLU))
            cin = c
        layers.append(_cbn(cin, 576, 1, act=nn.Hardswish))
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Linear(576, 1024), nn.Hardswish(), nn.Dropout(0.2), nn.Linear(1024, classes))

    def forward(self, image):  # (B, 3, H, W) -> (B, classes)
        return self.head(self.features(image).mean((2, 3)))


ARCHS = {"resnet18": ResNet18, "mobilenet_v2": MobileNetV2, "mobilenet_v3_small": MobileNetV3Small}


def calibrate_batchnorm(model: nn.Module, shape, batches: int = 8, batch: int = 16, seed: int = 0) -> nn.Module:
    """Set BatchNorm running statistics from random images (momentum None: a true average)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        for _ in range(batches):
            model(torch.randn((batch, *shape[1:]), generator=g))
    return model.eval()


def build(name: str, resolution: int = 224, seed: int = 0) -> tuple[nn.Module, tuple[torch.Tensor]]:
    """(model in eval mode, example input (1, 3, resolution, resolution))."""
    torch.manual_seed(seed)
    model = ARCHS[name]()
    shape = (1, 3, resolution, resolution)
    calibrate_batchnorm(model, shape, seed=seed)
    return model, (torch.randn(shape, generator=torch.Generator().manual_seed(seed + 1)),)


def images(n: int, resolution: int = 224, seed: int = 1) -> list[tuple[torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn((1, 3, resolution, resolution), generator=g),) for _ in range(n)]
