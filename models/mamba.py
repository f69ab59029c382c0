"""Mamba-2 student: an SSD language model with a chunked prefill and a constant-memory step.

The byte-level student, distilled from the attention teacher (`models.teachers.decoder`)
by MOHAWK (`models.distill.recipes.mohawk`). Same vocabulary, width, depth and pre-norm block
shape as the teacher (LayerNorm -> mixer -> residual, LayerNorm -> GELU MLP -> residual), with
each attention replaced by a Mamba-2 mixer:

    in_proj -> [z | x B C | dt]; causal depthwise conv (d_conv taps) + SiLU on x B C;
    dt = softplus(dt + dt_bias) per head; A = -exp(A_log) per head;
    y = SSD(x, dt, A, B, C) + D * x;  y = RMSNorm(y * silu(z)) (per group);  out_proj(y)

SSD for one head: ``h_t = exp(dt_t A) h_{t-1} + B_t (dt_t x_t)ᵀ`` (state (N, P)), ``y_t = C_tᵀ h_t``,
i.e. ``y = M x`` with the lower-triangular mixing matrix
``M[t, s] = (C_t · B_s) exp(Σ_{s<r<=t} dt_r A) dt_s``.

Three ways to run it, all agreeing to 1e-4 (tests/test_mamba.py):

- ``forward(tokens)`` / ``prefill(tokens, length)`` — the chunked SSD form written as pairwise
  matmuls (per chunk ``G = (C Bᵀ) ∘ L`` then ``G X``, chunk states ``(B ∘ decay)ᵀ X``, one small
  matmul across chunks). Static shapes, no Python time loop, so it exports to ONNX and ExecuTorch.
- ``step(token, conv_state, ssm_state)`` — one token, explicit state tensors of fixed size
  (``conv_state`` (n_layers, B, conv_dim, d_conv-1), ``ssm_state`` (n_layers, B, H, N, P)):
  decoding cost and memory do not grow with the context.
- ``mixing_matrix`` / ``ssd_naive`` — the materialised matrix and the plain recurrence (tests,
  MOHAWK stage 1).

Export: ``edge_programs(prompt_lengths=[P, ...])`` gives one ``prefill`` per prompt length class
(``prefill_<P>`` when there are several; default ``cfg.prompt_lengths``) and the ``step`` program,
and ``edge_generation()`` the manifest entry that `runtime` generation reads (recurrent shape: the
step returns whole new states). Prompts shorter than their class are right-padded; the ``length``
input zeroes dt (no decay, no input) at the padded positions and the conv state is gathered at the
true end, so the state is exactly that of the unpadded prompt.

Attention-to-Mamba initialisation (MaTVLM): ``Mamba.from_teacher(decoder)`` or
``models.create("mamba", teacher="decoder")`` copies x <- W_V, B <- W_K, C <- W_Q, out_proj <- W_O
(per head; needs n_heads = n_groups = teacher heads, head_dim = d_state = teacher head width),
and the MLPs, LayerNorms, token embedding and head; the conv starts as the identity.

>>> import torch
>>> from edgesdk import models
>>> m = models.create("mamba", d_model=64, n_layers=2, n_heads=2, head_dim=32, d_state=16, n_groups=2)
>>> tokens = torch.randint(0, 256, (1, 40))
>>> m(tokens).shape                                          # (B, T, vocab)
torch.Size([1, 40, 260])
>>> logits, conv, ssm = m.prefill(tokens)                    # (1, V), states
>>> logits, conv, ssm = m.step(tokens[:, -1:], conv, ssm)    # one more token, same state size
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

from edgesdk.models.data.tokenizer import ByteTokenizer
from edgesdk.models.generation import length_classes
from edgesdk.models.registry import register_model

_TOK = ByteTokenizer()


@dataclass
class MambaConfig:
    vocab_size: int = _TOK.vocab_size  # 260
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4            # SSD heads H
    head_dim: int = 32          # P; d_inner = H * P
    d_state: int = 32           # N
    n_groups: int = 4           # B/C groups (heads share B/C within a group)
    d_conv: int = 4             # causal conv taps
    chunk_size: int = 64        # SSD chunk Q (prefill pads internally to a multiple)
    mlp_ratio: int = 4
    bias: bool = True
    dt_min: float = 1e-3
    dt_max: float = 1e-1
    prompt_lengths: tuple[int, ...] = (128,)  # export: one prefill program per prompt capacity P

    def __post_init__(self):
        self.prompt_lengths = length_classes(self.prompt_lengths, "MambaConfig.prompt_lengths")
        for k in ("vocab_size", "d_model", "n_layers", "n_heads", "head_dim", "d_state", "n_groups",
                  "d_conv", "chunk_size", "mlp_ratio"):
            v = getattr(self, k)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"MambaConfig.{k} must be a positive int, got {v!r}")
        if self.n_heads % self.n_groups:
            raise ValueError(f"MambaConfig.n_heads ({self.n_heads}) must be a multiple of n_groups "
                             f"({self.n_groups}); e.g. n_groups=1 or n_groups={self.n_heads}")
        if not 0 < self.dt_min <= self.dt_max:
            raise ValueError(f"MambaConfig needs 0 < dt_min <= dt_max, got dt_min={self.dt_min!r}, "
                             f"dt_max={self.dt_max!r}")
        if self.d_conv < 2:
            raise ValueError(f"MambaConfig.d_conv must be >= 2 (the step keeps d_conv - 1 inputs), got {self.d_conv}")

    @property
    def d_inner(self) -> int:
        return self.n_heads * self.head_dim

    @property
    def conv_dim(self) -> int:
        return self.d_inner + 2 * self.n_groups * self.d_state

    def to_dict(self) -> dict:
        return asdict(self)


# ------------------------------------------------------------------------------------------ SSD

# The graph is written for the delegates (XNNPACK, Vulkan): tensors of rank <= 4, batched matmuls
# as explicit 3-D ``bmm``, cumulative sums as a matmul with a constant triangle, views instead of
# ``None``-indexing / ``expand`` / ``split`` / ``select``: ops that ExecuTorch's XNNPACK partitioner
# does not take split a program into many delegate calls (78 for the student before). Same maths.

def _lower(n: int, like: torch.Tensor) -> torch.Tensor:
    """(n, n) ones on and below the diagonal: ``F.linear(a, lower)`` is the cumulative sum of ``a``
    over its last dim (a linear layer with a constant weight, which every delegate takes)."""
    return torch.ones(n, n, dtype=like.dtype, device=like.device).tril()


def _narrow(t: torch.Tensor, dim: int, start: int, stop: int) -> torch.Tensor:
    # a full-length slice is exported as aten.alias, which coremltools cannot convert
    return t if start == 0 and stop == t.shape[dim] else t.narrow(dim, start, stop - start)


def bmm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(..., M, K) @ (..., K, N) with equal leading dims, as one 3-D ``bmm`` (a 4/5-D ``@`` is
    exported as expand + bmm, and XNNPACK does not take ``expand``)."""
    lead = a.shape[:-2]
    out = torch.bmm(a.reshape(-1, *a.shape[-2:]), b.reshape(-1, *b.shape[-2:]))
    return out.reshape(*lead, a.shape[-2], b.shape[-1])


def segsum_exp(a: torch.Tensor, lower: torch.Tensor | None = None) -> torch.Tensor:
    """(..., T) -> (..., T, T): exp(Σ_{j<k<=i} a_k) on and below the diagonal, 0 above.
    ``lower``: `_lower(n)` for some n >= T, a constant (built here when None)."""
    T = a.shape[-1]
    lower = _lower(T, a) if lower is None else lower
    n = lower.shape[0]
    # a shorter sequence is zero-padded to the constant's size (the first T sums are unchanged)
    cs = _narrow(F.linear(F.pad(a, (0, n - T)) if n > T else a, lower), a.dim() - 1, 0, T)  # (..., T)
    causal = _narrow(_narrow(lower, 0, 0, T), 1, 0, T)                        # (T, T) 1 on/below the diagonal
    lead = cs.shape[:-1]
    diff = cs.reshape(*lead, T, 1) - cs.reshape(*lead, 1, T)                  # (..., T, T)
    # masked by multiplying with 0/1 rather than a -inf fill: the same values, but a quantizer
    # cannot scale a -inf tensor (QNN's HTP then refuses the Where node), and no Where node is left
    return torch.exp(diff * causal) * causal


def ssd_chunked(x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                chunk: int, init_state: torch.Tensor | None = None,
                lower: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunked SSD as pairwise matmuls.

    x (b, l, h, p), dt (b, l, h), A (h,), B/C (b, l, h, n), init_state (b, h, n, p) or None
    -> y (b, l, h, p) (without the D skip), final state (b, h, n, p). ``l`` is padded to a
    multiple of ``chunk`` with dt = 0 (no decay, no input), so any length works. Every tensor
    has rank <= 4 (batch and chunk folded into one dim, ``bc`` = b * c). ``lower``: `_lower(chunk)`
    as a constant (a module buffer; built here when None)."""
    b, l, h, p = x.shape
    n = B.shape[-1]
    pad = (-l) % chunk
    if pad:
        x, B, C = (F.pad(t, (0, 0, 0, 0, 0, pad)) for t in (x, B, C))
        dt = F.pad(dt, (0, 0, 0, pad))
    c = (l + pad) // chunk
    q, bc = chunk, b * c
    Lq = _lower(q, x) if lower is None else lower                             # (q, q)
    xd = (x * dt.reshape(b, l + pad, h, 1)).reshape(bc, q, h, p).permute(0, 2, 1, 3)  # (bc, h, q, p)
    a = (dt * A).reshape(bc, q, h).permute(0, 2, 1)                           # (bc, h, q)
    Bc = B.reshape(bc, q, h, n).permute(0, 2, 1, 3)                           # (bc, h, q, n)
    Cc = C.reshape(bc, q, h, n).permute(0, 2, 1, 3)                           # (bc, h, q, n)
    a_cs = F.linear(a, Lq)                                                    # (bc, h, q) cumulative sum
    # intra-chunk: G = (C Bᵀ) ∘ L, y = G X
    G = bmm(Cc, Bc.transpose(-1, -2)) * segsum_exp(a, Lq)                     # (bc, h, q, q)
    y_diag = bmm(G, xd)                                                       # (bc, h, q, p)
    # each chunk's own contribution to the state at its end
    a_end = _narrow(a_cs, 2, q - 1, q)                                        # (bc, h, 1)
    decay = torch.exp(a_end - a_cs)                                           # (bc, h, q)
    states = bmm((Bc * decay.reshape(bc, h, q, 1)).transpose(-1, -2), xd)     # (bc, h, n, p)
    states = states.reshape(b, c, h, n * p).permute(0, 2, 1, 3)               # (b, h, c, n*p)
    if init_state is None:
        states = F.pad(states, (0, 0, 1, 0))                                  # (b, h, c+1, n*p)
    else:
        states = torch.cat([init_state.reshape(b, h, 1, n * p), states], dim=2)
    # across chunks: state entering chunk z = Σ_c exp(decay from c to z) · states[c]
    ends = F.pad(a_end.reshape(b, c, h).permute(0, 2, 1), (1, 0))             # (b, h, c+1)
    states = bmm(segsum_exp(ends, Lq if c + 1 <= q else None), states)       # (b, h, c+1, n*p)
    final = _narrow(states, 2, c, c + 1).reshape(b, h, n, p)
    prev = _narrow(states, 2, 0, c).permute(0, 2, 1, 3).reshape(bc, h, n, p)  # state entering each chunk
    y_off = bmm(Cc, prev) * torch.exp(a_cs).reshape(bc, h, q, 1)              # (bc, h, q, p)
    y = (y_diag + y_off).permute(0, 2, 1, 3).reshape(b, c * q, h, p)
    return _narrow(y, 1, 0, l), final


def softplus(x: torch.Tensor) -> torch.Tensor:
    """``log(1 + exp(x))`` written as ``relu(x) + log(1 + exp(-|x|))``: no overflow, and only ops the
    delegates take (``F.softplus`` becomes a where + log1p that XNNPACK and Vulkan leave out)."""
    return F.relu(x) + torch.log(1 + torch.exp(-x.abs()))


def ssd_naive(x, dt, A, B, C, init_state=None):
    """The plain recurrence (reference for tests; a Python loop, not for export). Shapes as
    `ssd_chunked`."""
    b, l, h, p = x.shape
    n = B.shape[-1]
    s = torch.zeros(b, h, n, p, dtype=x.dtype) if init_state is None else init_state
    ys = []
    for t in range(l):
        dA = torch.exp(dt[:, t] * A)                                          # (b, h)
        s = s * dA[..., None, None] + B[:, t, :, :, None] * (dt[:, t, :, None, None] * x[:, t, :, None, :])
        ys.append((C[:, t, :, :, None] * s).sum(-2))                          # (b, h, p)
    return torch.stack(ys, 1), s


def ssd_matrix(dt, A, B, C) -> torch.Tensor:
    """The materialised mixing matrix M (b, h, l, l): ``y = M x`` per head (D skip excluded)."""
    a = (dt * A).transpose(1, 2)                                              # (b, h, l)
    CB = C.transpose(1, 2) @ B.permute(0, 2, 3, 1)                            # (b, h, l, l)
    return CB * segsum_exp(a) * dt.transpose(1, 2)[:, :, None, :]


def conv_picker(length: torch.Tensor, L: int, K: int) -> torch.Tensor:
    """(B, L+K-1, K-1) 0/1: column k selects padded position length + k (the conv state's inputs)."""
    rows = torch.arange(L + K - 1, device=length.device).reshape(1, L + K - 1, 1)
    want = length.reshape(-1, 1, 1) + torch.arange(K - 1, device=length.device).reshape(1, 1, K - 1)
    return (rows == want).float()


def stack(ts: list[torch.Tensor]) -> torch.Tensor:
    """``torch.stack(ts)`` as a concatenation of views (no unsqueeze node)."""
    return torch.cat([t.reshape(1, *t.shape) for t in ts])


# ------------------------------------------------------------------------------------------ layers

class GatedRMSNorm(nn.Module):
    """Mamba-2's ``RMSNorm(y * silu(z))`` normalised per group of channels."""

    def __init__(self, dim: int, groups: int, eps: float = 1e-5):
        super().__init__()
        self.groups, self.eps = groups, eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:     # (..., D), (..., D)
        y = y * F.silu(z)
        shp = y.shape
        # (rows, groups, D/groups, 1) with the mean over the last two dims: the 4-D innermost-dims
        # mean is the one XNNPACK delegates (global average pooling)
        g = y.reshape(-1, self.groups, shp[-1] // self.groups, 1)
        g = g * torch.rsqrt(g.pow(2).mean((-2, -1), keepdim=True) + self.eps)
        return g.reshape(shp) * self.weight


class Mamba2Mixer(nn.Module):
    def __init__(self, cfg: MambaConfig):
        super().__init__()
        self.cfg = cfg
        H, N, G = cfg.n_heads, cfg.d_state, cfg.n_groups
        self.in_proj = nn.Linear(cfg.d_model, 2 * cfg.d_inner + 2 * G * N + H, bias=cfg.bias)  # [z, x, B, C, dt]
        self.conv1d = nn.Conv1d(cfg.conv_dim, cfg.conv_dim, cfg.d_conv, groups=cfg.conv_dim, bias=True)
        dt = torch.exp(torch.rand(H) * (math.log(cfg.dt_max) - math.log(cfg.dt_min)) + math.log(cfg.dt_min))
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))        # softplus^-1(dt)
        self.A_log = nn.Parameter(torch.log(torch.empty(H).uniform_(1.0, 16.0)))
        self.D = nn.Parameter(torch.ones(H))
        self.norm = GatedRMSNorm(cfg.d_inner, G)
        self.out_proj = nn.Linear(cfg.d_inner, cfg.d_model, bias=cfg.bias)
        # the SSD's cumulative-sum triangle, a constant (not in the state dict; `Mamba` shares one)
        self.register_buffer("lower", _lower(cfg.chunk_size, self.D.detach()), persistent=False)

    @staticmethod
    def _cut(t: torch.Tensor, sizes: list[int]) -> list[torch.Tensor]:
        """``t.split(sizes, -1)`` as slices (XNNPACK takes slices, not split_with_sizes)."""
        out, at = [], 0
        for n in sizes:
            out.append(_narrow(t, t.dim() - 1, at, at + n))
            at += n
        return out

    def _split(self, zxbcdt: torch.Tensor):
        c = self.cfg
        return self._cut(zxbcdt, [c.d_inner, c.conv_dim, c.n_heads])         # z, xBC, dt

    def _heads(self, xBC: torch.Tensor):
        """(..., conv_dim) -> x (..., H, P), B (..., H, N), C (..., H, N): groups broadcast to heads."""
        c = self.cfg
        x, Bm, Cm = self._cut(xBC, [c.d_inner, c.n_groups * c.d_state, c.n_groups * c.d_state])
        lead = x.shape[:-1]
        rep = c.n_heads // c.n_groups

        def expand(t):
            if rep == 1:  # one head per group: nothing to broadcast (no expand node)
                return t.reshape(*lead, c.n_heads, c.d_state)
            t = t.reshape(*lead, c.n_groups, 1, c.d_state).expand(*lead, c.n_groups, rep, c.d_state)
            return t.reshape(*lead, c.n_heads, c.d_state)
        return x.reshape(*lead, c.n_heads, c.head_dim), expand(Bm), expand(Cm)

    def ssd_inputs(self, u: torch.Tensor, valid: torch.Tensor | None = None):
        """u (B, L, D) -> z (B, L, d_inner), xBC before the conv (B, L, conv_dim),
        x (B, L, H, P), dt (B, L, H), B/C (B, L, H, N). ``valid`` (B, L) zeroes dt where False."""
        K = self.cfg.d_conv
        z, xBC_raw, dt = self._split(self.in_proj(u))
        xBC = F.silu(self.conv1d(F.pad(xBC_raw.transpose(1, 2), (K - 1, 0))).transpose(1, 2))  # (B, L, conv_dim)
        x, Bm, Cm = self._heads(xBC)
        dt = softplus(dt + self.dt_bias)                                      # (B, L, H)
        if valid is not None:
            keep = valid.reshape(*valid.shape, 1)
            dt = dt * (keep if keep.dtype == dt.dtype else keep.to(dt.dtype))
        return z, xBC_raw, x, dt, Bm, Cm

    @property
    def A(self) -> torch.Tensor:
        return -torch.exp(self.A_log)                                         # (H,)

    def _out(self, y: torch.Tensor, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        y = y + x * self.D.reshape(-1, 1)                                     # (..., H, P)
        y = y.reshape(*y.shape[:-2], self.cfg.d_inner)
        return self.out_proj(self.norm(y, z))

    def forward(self, u: torch.Tensor, valid: torch.Tensor | None = None, length: torch.Tensor | None = None,
                return_state: bool = False, conv_pick: torch.Tensor | None = None):
        """u (B, L, D) -> (B, L, D); with ``return_state`` also the conv state (B, conv_dim, d_conv-1)
        at position ``length`` (default L) and the SSM state (B, H, N, P). ``conv_pick``
        (B, L+d_conv-1, d_conv-1): `conv_picker(length, L)`, computed once for all layers."""
        z, xBC_raw, x, dt, Bm, Cm = self.ssd_inputs(u, valid)
        y, state = ssd_chunked(x, dt, self.A, Bm, Cm, self.cfg.chunk_size, lower=self.lower)
        out = self._out(y, x, z)
        if not return_state:
            return out
        K = self.cfg.d_conv
        xp = F.pad(xBC_raw.transpose(1, 2), (K - 1, 0))                       # (B, conv_dim, L+K-1)
        if length is None:
            conv_state = _narrow(xp, 2, xp.shape[2] - (K - 1), xp.shape[2])
        else:  # the K-1 inputs before `length`: padded positions length .. length+K-2, as a 0/1 matmul
            pick = conv_picker(length, u.shape[1], K) if conv_pick is None else conv_pick
            conv_state = torch.bmm(xp, pick)                                  # (B, conv_dim, K-1)
        return out, conv_state, state

    def mixing_matrix(self, u: torch.Tensor) -> torch.Tensor:
        """u (B, L, D) -> M (B, H, L, L) with SSD(x) = M @ x per head (D skip excluded)."""
        _, _, _, dt, Bm, Cm = self.ssd_inputs(u)
        return ssd_matrix(dt, self.A, Bm, Cm)

    def step(self, u: torch.Tensor, conv_state: torch.Tensor, ssm_state: torch.Tensor):
        """One token: u (B, D), conv_state (B, conv_dim, K-1), ssm_state (B, H, N, P)
        -> y (B, D), new conv_state, new ssm_state."""
        z, xBC, dt = self._split(self.in_proj(u))
        Bn, Cd = xBC.shape
        H, N, P = self.cfg.n_heads, self.cfg.d_state, self.cfg.head_dim
        window = torch.cat([conv_state, xBC.reshape(Bn, Cd, 1)], dim=-1)      # (B, conv_dim, K)
        # rank 3 until after the SiLU: on the HTP a per-channel bias added to the rank-2 tap sum
        # (ReduceSum without keepdims) corrupted the values downstream (logits cosine 0.98)
        # the depthwise conv over the K-tap window (XNNPACK takes a conv, not a sum over the taps)
        conv = F.conv1d(window, self.conv1d.weight, self.conv1d.bias, groups=Cd)  # (B, C, 1)
        xBC = F.silu(conv).reshape(Bn, Cd)
        x, Bm, Cm = self._heads(xBC)                                          # (B, H, P), (B, H, N)
        dt = softplus(dt + self.dt_bias)                                      # (B, H)
        dA = torch.exp(dt * self.A)
        ssm_state = (ssm_state * dA.reshape(Bn, H, 1, 1)
                     + Bm.reshape(Bn, H, N, 1) * (dt.reshape(Bn, H, 1) * x).reshape(Bn, H, 1, P))
        y = bmm(Cm.reshape(Bn, H, 1, N), ssm_state).reshape(Bn, H, P)        # (B, H, P)
        return self._out(y, x, z), _narrow(window, 2, 1, window.shape[2]), ssm_state


class MambaBlock(nn.Module):
    """Pre-norm: x + mixer(ln1(x)), then x + mlp(ln2(x)) — the teacher's block with attention swapped."""

    def __init__(self, cfg: MambaConfig):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(cfg.d_model, bias=cfg.bias), nn.LayerNorm(cfg.d_model, bias=cfg.bias)
        self.mixer = Mamba2Mixer(cfg)
        hidden = cfg.mlp_ratio * cfg.d_model
        self.mlp = nn.Sequential(nn.Linear(cfg.d_model, hidden, bias=cfg.bias), nn.GELU(),
                                 nn.Linear(hidden, cfg.d_model, bias=cfg.bias))

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:  # (B, L, D)
        x = x + self.mixer(self.ln1(x), valid)
        return x + self.mlp(self.ln2(x))

    def prefill(self, x, valid=None, length=None, conv_pick=None):
        y, conv, ssm = self.mixer(self.ln1(x), valid, length, return_state=True, conv_pick=conv_pick)
        x = x + y
        return x + self.mlp(self.ln2(x)), conv, ssm

    def step(self, x, conv, ssm):                                             # x (B, D)
        y, conv, ssm = self.mixer.step(self.ln1(x), conv, ssm)
        x = x + y
        return x + self.mlp(self.ln2(x)), conv, ssm


# ------------------------------------------------------------------------------------------ model

class Mamba(nn.Module):
    """Byte-level Mamba-2 LM: ``forward(tokens (B, T) int64) -> logits (B, T, vocab)``."""

    def __init__(self, cfg: MambaConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or MambaConfig()
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(MambaBlock(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.d_model, bias=cfg.bias)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # tied, like the teacher
        for blk in self.blocks[1:]:  # one constant triangle for all layers (exported once)
            blk.mixer.lower = self.blocks[0].mixer.lower
        for name, p in self.named_parameters():
            if name.endswith(("in_proj.weight", "out_proj.weight", "mlp.0.weight", "mlp.2.weight")):
                nn.init.normal_(p, 0.0, 0.02 / (math.sqrt(2 * cfg.n_layers) if "out" in name or "mlp.2" in name else 1))
            elif name.endswith(("in_proj.bias", "out_proj.bias", "mlp.0.bias", "mlp.2.bias")):
                nn.init.zeros_(p)
        nn.init.normal_(self.wte.weight, 0.0, 0.02)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # -- full sequence (training, prefill) ---------------------------------------------------
    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.wte(tokens)                                                  # (B, T, D)
        for blk in self.blocks:
            x = blk(x)
        return self.lm_head(self.ln_f(x))                                     # (B, T, V)

    def hidden_states(self, tokens: torch.Tensor) -> list[torch.Tensor]:
        """The residual stream after the embedding and after each block: n_layers + 1 x (B, T, D)."""
        x = self.wte(tokens)
        out = [x]
        for blk in self.blocks:
            x = blk(x)
            out.append(x)
        return out

    def prefill(self, tokens: torch.Tensor, length: torch.Tensor | None = None):
        """tokens (B, P) (right-padded when ``length`` (B,) int64 < P) -> logits after the last
        real token (B, V), conv_state (n_layers, B, conv_dim, d_conv-1), ssm_state
        (n_layers, B, H, N, P)."""
        B, P = tokens.shape
        valid = pick = None
        if length is not None:  # masks from `length`, once for all layers (0/1 floats)
            pos = torch.arange(P, device=tokens.device).reshape(1, P)
            valid = (pos < length.reshape(-1, 1)).float()                     # (B, P)
            last_pick = (pos == length.reshape(-1, 1) - 1).float().reshape(B, 1, P)
            pick = conv_picker(length, P, self.cfg.d_conv)
        x = self.wte(tokens)
        convs, ssms = [], []
        for blk in self.blocks:
            x, conv, ssm = blk.prefill(x, valid, length, pick)
            convs.append(conv)
            ssms.append(ssm)
        if length is None:
            last = _narrow(x, 1, P - 1, P).reshape(B, -1)                     # (B, D)
        else:  # the row at length-1, as a 0/1 matmul (no gather)
            last = torch.bmm(last_pick, x).reshape(B, -1)
        return self.lm_head(self.ln_f(last)), stack(convs), stack(ssms)

    # -- recurrent decoding ------------------------------------------------------------------
    def init_state(self, batch: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.cfg
        return (torch.zeros(c.n_layers, batch, c.conv_dim, c.d_conv - 1),
                torch.zeros(c.n_layers, batch, c.n_heads, c.d_state, c.head_dim))

    def step(self, token: torch.Tensor, conv_state: torch.Tensor, ssm_state: torch.Tensor):
        """token (B, 1) int64, states as from `prefill` -> logits (B, V), new conv_state, new ssm_state."""
        x = self.wte(token.reshape(-1))                                       # (B, D)
        convs, ssms = [], []
        for i, blk in enumerate(self.blocks):
            conv_i = _narrow(conv_state, 0, i, i + 1).reshape(conv_state.shape[1:])
            ssm_i = _narrow(ssm_state, 0, i, i + 1).reshape(ssm_state.shape[1:])
            x, conv, ssm = blk.step(x, conv_i, ssm_i)
            convs.append(conv)
            ssms.append(ssm)
        return self.lm_head(self.ln_f(x)), stack(convs), stack(ssms)

    def state_bytes(self, batch: int = 1) -> int:
        """Bytes of decoding state per sequence (float32): independent of the context length."""
        return sum(t.numel() * 4 for t in self.init_state(batch))

    @torch.no_grad()
    def generate(self, tokens: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
        """Greedy: prefill on ``tokens`` (B, T), then one step per new token -> (B, T + new)."""
        logits, conv, ssm = self.prefill(tokens)
        out = [tokens]
        for i in range(max_new_tokens):
            nxt = logits.argmax(-1, keepdim=True)                             # (B, 1)
            out.append(nxt)
            if i + 1 < max_new_tokens:
                logits, conv, ssm = self.step(nxt, conv, ssm)
        return torch.cat(out, 1)

    # -- export protocol (converters/programs.py, runtime/generate.py) -----------------------
    def edge_programs(self, prompt_lengths: list[int] | None = None) -> dict:
        """``prefill(tokens (1, P), length (1,)) -> logits, conv_state, ssm_state`` per prompt
        length class P and ``step(token (1, 1), conv_state, ssm_state) -> logits, new_conv_state,
        new_ssm_state``."""
        Ps = length_classes(self.cfg.prompt_lengths if prompt_lengths is None else prompt_lengths)
        g = torch.Generator().manual_seed(0)
        programs = {}
        for P in Ps:
            tokens = torch.randint(0, 256, (1, P), generator=g)
            programs["prefill" if len(Ps) == 1 else f"prefill_{P}"] = (
                _Prefill(self), (tokens, torch.tensor([P], dtype=torch.long)))
        conv, ssm = self.init_state(1)
        conv, ssm = torch.randn(conv.shape, generator=g), 0.1 * torch.randn(ssm.shape, generator=g)
        programs["step"] = (_Step(self), (torch.randint(0, 256, (1, 1), generator=g), conv, ssm))
        return programs

    def edge_generation(self, prompt_lengths: list[int] | None = None) -> dict:
        """The manifest's ``generation`` entry (recurrent shape; see runtime/generate.py)."""
        Ps = length_classes(self.cfg.prompt_lengths if prompt_lengths is None else prompt_lengths)
        return {"prefill": ["prefill"] if len(Ps) == 1 else [f"prefill_{P}" for P in Ps], "step": "step",
                "prompt": "tokens", "prompt_length": "length",
                "token": "token", "position": None, "logits": "logits", "prefill_logits": "logits",
                "state": [{"input": "conv_state", "init": "conv_state", "update": "new_conv_state"},
                          {"input": "ssm_state", "init": "ssm_state", "update": "new_ssm_state"}],
                "eos": _TOK.eos_id, "pad": _TOK.pad_id, "max_position": 2 ** 31 - 1, "tokenizer": "bytes"}

    # -- attention-to-Mamba initialisation (MaTVLM) ------------------------------------------
    @classmethod
    def from_teacher(cls, teacher, **overrides) -> "Mamba":
        """A student shaped after a `Decoder` teacher, initialised from it (`init_from_attention`)."""
        tc = teacher.cfg
        d_head = tc.d_model // tc.n_heads
        cfg = MambaConfig(**{"vocab_size": tc.vocab_size, "d_model": tc.d_model, "n_layers": tc.n_layers,
                             "n_heads": tc.n_heads, "head_dim": d_head, "d_state": d_head, "n_groups": tc.n_heads,
                             "mlp_ratio": tc.mlp_ratio, "bias": tc.bias, **overrides})
        m = cls(cfg)
        init_from_attention(m, teacher)
        return m


class _Prefill(nn.Module):
    output_names = ("logits", "conv_state", "ssm_state")

    def __init__(self, model: Mamba):
        super().__init__()
        self.model = model

    def forward(self, tokens: torch.Tensor, length: torch.Tensor):
        return self.model.prefill(tokens, length)


class _Step(nn.Module):
    output_names = ("logits", "new_conv_state", "new_ssm_state")

    def __init__(self, model: Mamba):
        super().__init__()
        self.model = model

    def forward(self, token: torch.Tensor, conv_state: torch.Tensor, ssm_state: torch.Tensor):
        return self.model.step(token, conv_state, ssm_state)


# ------------------------------------------------------------------------------------------ MaTVLM init

COPIED = ("wte", "ln_f", "ln1", "ln2", "mlp", "in_proj[x,B,C]", "out_proj")


@torch.no_grad()
def init_from_attention(student: Mamba, teacher) -> dict:
    """MaTVLM: x <- W_V, B <- W_K, C <- W_Q (weights and biases of the teacher's fused qkv),
    out_proj <- W_O; MLPs, LayerNorms, token embedding (and the tied head) copied; the conv set
    to the identity (last tap 1). Other mixer parameters (z, dt, A, D, norm) keep their init.
    Returns the names of the parameters written."""
    sc, tc = student.cfg, teacher.cfg
    d_head = tc.d_model // tc.n_heads
    need = {"d_model": tc.d_model, "n_layers": tc.n_layers, "n_heads": tc.n_heads, "n_groups": tc.n_heads,
            "head_dim": d_head, "d_state": d_head, "vocab_size": tc.vocab_size, "mlp_ratio": tc.mlp_ratio}
    bad = {k: (getattr(sc, k), v) for k, v in need.items() if getattr(sc, k) != v}
    if bad:
        raise ValueError("MaTVLM init needs the student shaped like the teacher's attention; mismatched "
                         + ", ".join(f"{k}={a} (teacher needs {b})" for k, (a, b) in bad.items())
                         + "; build it with Mamba.from_teacher(teacher)")
    if sc.bias != tc.bias:
        raise ValueError(f"MambaConfig.bias={sc.bias} but the teacher has bias={tc.bias}")
    written = []

    def put(dst: torch.Tensor, src: torch.Tensor, name: str):
        dst.copy_(src)
        written.append(name)

    put(student.wte.weight, teacher.wte.weight, "wte.weight")
    for n in ("weight", "bias"):
        if getattr(teacher.ln_f, n) is not None:
            put(getattr(student.ln_f, n), getattr(teacher.ln_f, n), f"ln_f.{n}")
    D, Di, GN = tc.d_model, sc.d_inner, sc.n_groups * sc.d_state
    for i, (sb, tb) in enumerate(zip(student.blocks, teacher.blocks)):
        p = f"blocks.{i}."
        for ln in ("ln1", "ln2"):
            for n in ("weight", "bias"):
                if getattr(getattr(tb, ln), n) is not None:
                    put(getattr(getattr(sb, ln), n), getattr(getattr(tb, ln), n), f"{p}{ln}.{n}")
        for j in (0, 2):
            for n in ("weight", "bias"):
                if getattr(tb.mlp[j], n) is not None:
                    put(getattr(sb.mlp[j], n), getattr(tb.mlp[j], n), f"{p}mlp.{j}.{n}")
        Wq, Wk, Wv = tb.attn.qkv.weight.split(D, 0)                           # 3 x (D, D)
        # in_proj rows: [z (Di) | x (Di) | B (GN) | C (GN) | dt (H)]
        sl = {"x": slice(Di, 2 * Di), "B": slice(2 * Di, 2 * Di + GN), "C": slice(2 * Di + GN, 2 * Di + 2 * GN)}
        for key, W in (("x", Wv), ("B", Wk), ("C", Wq)):
            put(student.blocks[i].mixer.in_proj.weight[sl[key]], W, f"{p}mixer.in_proj.weight[{key}]")
        if tb.attn.qkv.bias is not None:
            bq, bk, bv = tb.attn.qkv.bias.split(D, 0)
            for key, b in (("x", bv), ("B", bk), ("C", bq)):
                put(sb.mixer.in_proj.bias[sl[key]], b, f"{p}mixer.in_proj.bias[{key}]")
        put(sb.mixer.out_proj.weight, tb.attn.proj.weight, f"{p}mixer.out_proj.weight")
        if tb.attn.proj.bias is not None:
            put(sb.mixer.out_proj.bias, tb.attn.proj.bias, f"{p}mixer.out_proj.bias")
        w = torch.zeros_like(sb.mixer.conv1d.weight)
        w[..., -1] = 1.0
        put(sb.mixer.conv1d.weight, w, f"{p}mixer.conv1d.weight")
        put(sb.mixer.conv1d.bias, torch.zeros_like(sb.mixer.conv1d.bias), f"{p}mixer.conv1d.bias")
    return {"written": written}


@register_model("mamba")
def mamba(teacher=None, **cfg) -> Mamba:
    """A Mamba-2 student. ``teacher`` (``"decoder"``, a `Decoder` or None): shape it after the
    teacher and initialise it from the teacher's attention (MaTVLM); None: random init."""
    if teacher is None:
        return Mamba(MambaConfig(**cfg))
    if isinstance(teacher, str):
        from edgesdk.models.teachers import load_teacher
        teacher = load_teacher(teacher)
    return Mamba.from_teacher(teacher, **cfg)
