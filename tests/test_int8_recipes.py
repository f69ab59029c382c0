"""Per-target int8 recipes on the shapes real architectures have: integer inputs (token ids,
positions) through every static scheme, and the tuned recipes' op choices."""

import pytest
import torch
from torch import nn

import edgesdk
from edgesdk import runtime

CPU = [t.name for t in edgesdk.targets() if t.runs_here and t.name in ("onnx-cpu", "executorch-xnnpack", "litert-cpu")]
STATIC = [(t, q) for t in CPU for q in edgesdk.converters.get_converter(t).calibrated]


class TinyTextEncoder(nn.Module):
    """Token ids -> pooled features, with the integer index math HF encoders do: positions from
    ``arange(T) + offset`` (an integer add with a Python scalar) and a mask scaled by a scalar."""

    def __init__(self, vocab=64, dim=32, offset=2):
        super().__init__()
        self.offset = offset
        self.tok = nn.Embedding(vocab, dim)
        self.pos = nn.Embedding(64, dim)
        self.ff = nn.Sequential(nn.Linear(dim, 64), nn.GELU(), nn.Linear(64, dim))
        self.head = nn.Linear(dim, 8)

    def forward(self, input_ids):  # (B, T) int64
        t = input_ids.shape[1]
        positions = torch.arange(t) * 1 + self.offset                   # (T,) int64
        h = self.tok(input_ids) + self.pos(positions)[None]              # (B, T, dim)
        h = h + self.ff(h)
        keep = (input_ids > 0).to(h.dtype).unsqueeze(-1)                 # (B, T, 1)
        return self.head((h * keep).sum(1) / keep.sum(1).clamp(min=1.0))  # (B, 8)


@pytest.mark.parametrize("target,scheme", STATIC)
def test_integer_inputs_quantize_with_every_static_scheme(tmp_path, target, scheme):
    torch.manual_seed(0)
    model = TinyTextEncoder().eval()
    ids = lambda seed: torch.randint(1, 64, (1, 12), generator=torch.Generator().manual_seed(seed))  # noqa: E731
    cal = [(ids(i),) for i in range(16)]
    art = edgesdk.convert(model, (ids(100),), target, quantize=scheme, calibration=cal,
                          eval_data=[(ids(200 + i),) for i in range(8)], max_drop=None, out_dir=tmp_path)
    assert art.manifest.quantization["scheme"] == scheme
    x = ids(300)
    (got,) = runtime.load(art.path).run([x.numpy()])
    want = model(x).detach().numpy()
    cos = float((got * want).sum() / ((got ** 2).sum() ** 0.5 * (want ** 2).sum() ** 0.5))
    assert got.shape == (1, 8) and cos > 0.95, cos
