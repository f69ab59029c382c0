"""Fine-tune the shipped byte LM into the function-name teacher.

    python -m edgesdk.models.teachers.train_funcname --steps 1200 --lr 1.5e-3 --seed 0 --threads 1

Starts from ``load_teacher("decoder")`` (the byte-level decoder-only LM in
``checkpoints/decoder.safetensors``) and trains it on ``bos body sep name eos`` sequences
(:mod:`models.data.funcname`: stdlib function bodies cut to their first 200 bytes, names up
to 40 bytes; the whole sequence fits the LM's 256-token context), with cross-entropy on the
``name eos`` positions only. Writes ``checkpoints/funcname.safetensors`` and a ``.json``
beside it (config, steps, seed, threads, exact match and character F1 of greedy names on the
held-out test pairs, and a trivial baseline: the most frequent train name for every body).

Deterministic given ``--seed`` and ``--threads`` (seeded data order, deterministic
algorithms, fixed thread count). Load the result with :func:`load_funcname_teacher`.

Also here, shared by the benchmark and the recipe: :func:`train_decoder_names` (the same
training for any `Decoder`, e.g. the equal-parameter decoder-only student) and
:func:`greedy_names` (greedy decoding with a KV cache, PyTorch only, for evaluation).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Sequence

import torch
from torch.nn import functional as F

from edgesdk.models.data import funcname as fn
from edgesdk.models.teachers.decoder import Decoder, DecoderConfig
from edgesdk.models.teachers.train_decoder import save  # same checkpoint format: safetensors + .json, atomic

CHECKPOINT = Path(__file__).resolve().parent / "checkpoints" / "funcname.safetensors"


# ------------------------------------------------------------------------------------------ decoding

def _cached_forward(model: Decoder, tokens: torch.Tensor, start: int, cache: list | None):
    """Run ``tokens`` (1, T) at positions ``start..start+T-1`` with per-layer K/V ``cache``
    (list of (k, v), each (1, H, S, Dh)); returns logits of the last position and the cache."""
    T = tokens.shape[1]
    x = model.wte(tokens) + model.wpe(model.pos[start:start + T])
    new = []
    for i, blk in enumerate(model.blocks):
        a = blk.attn
        h = blk.ln1(x)
        B, _, C = h.shape
        q, k, v = a.qkv(h).split(C, dim=2)
        q = q.view(B, T, a.n_heads, a.d_head).transpose(1, 2)
        k = k.view(B, T, a.n_heads, a.d_head).transpose(1, 2)
        v = v.view(B, T, a.n_heads, a.d_head).transpose(1, 2)
        if cache is not None:
            k, v = torch.cat([cache[i][0], k], 2), torch.cat([cache[i][1], v], 2)
        new.append((k, v))
        S = k.shape[2]
        att = (q @ k.transpose(-2, -1)) / math.sqrt(a.d_head) + a.mask[start:start + T, :S]
        y = torch.softmax(att, -1) @ v
        x = x + a.proj(y.transpose(1, 2).reshape(B, T, C))
        x = x + blk.mlp(blk.ln2(x))
    return model.lm_head(model.ln_f(x[:, -1])), new


@torch.no_grad()
def greedy_names(model: Decoder, srcs: Sequence[Sequence[int]], max_new: int = fn.MAX_NAME + 1) -> list[str]:
    """Greedy name for each body: ``bos body sep`` then tokens until eos (KV-cached, batch 1)."""
    model.eval()
    out = []
    for s in srcs:
        prompt = fn.decoder_sequence(s)
        room = model.cfg.context - len(prompt)
        logits, cache = _cached_forward(model, torch.tensor([prompt]), 0, None)
        ids = []
        for k in range(min(max_new, room)):
            nxt = int(logits.argmax(-1))
            if nxt == fn.TOK.eos_id:
                break
            ids.append(nxt)
            if k + 1 >= min(max_new, room):
                break
            logits, cache = _cached_forward(model, torch.tensor([[nxt]]), len(prompt) + k, cache)
        out.append(fn.decode_name(ids))
    return out


@torch.no_grad()
def name_nll(model: Decoder, pairs: Sequence[fn.Pair], batch_size: int = 32) -> float:
    """Mean cross-entropy (nats per token) of the gold ``name eos`` given ``bos body sep``."""
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(pairs), batch_size):
        b = fn.decoder_batch(pairs[i:i + batch_size])
        logits = model(b["tokens"])
        total += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), b["labels"].reshape(-1),
                                       ignore_index=-100, reduction="sum"))
        count += int((b["labels"] != -100).sum())
    return total / max(count, 1)


def evaluate(model: Decoder, pairs: Sequence[fn.Pair]) -> dict:
    """Exact match and character F1 of greedy names on ``pairs``."""
    preds = greedy_names(model, [s for s, _ in pairs])
    return {**fn.scores(preds, [bytes(n).decode("utf-8") for _, n in pairs]), "name_nll": name_nll(model, pairs)}


# ------------------------------------------------------------------------------------------ training

def train_decoder_names(model: Decoder, pairs: Sequence[fn.Pair], steps: int, seed: int = 0,
                        batch_size: int = 16, lr: float = 1e-3, warmup: int = 20, weight_decay: float = 0.0,
                        log_every: int = 50) -> list[float]:
    """Cross-entropy on the ``name eos`` positions of ``bos body sep name eos``; AdamW, warm-up
    then cosine to 10%. Returns the loss per step. Deterministic given seed and threads."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=weight_decay)

    def lr_at(step):
        if step < warmup:
            return lr * (step + 1) / warmup
        return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup))))

    losses, t0 = [], time.time()
    model.train()
    for step in range(steps):
        idx = torch.randint(0, len(pairs), (batch_size,), generator=g).tolist()
        b = fn.decoder_batch([pairs[i] for i in idx])
        logits = model(b["tokens"])                                          # (B, L, V)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), b["labels"].reshape(-1), ignore_index=-100)
        for grp in opt.param_groups:
            grp["lr"] = lr_at(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(float(loss.detach()))
        if log_every and (step % log_every == 0 or step == steps - 1):
            print(f"step {step:5d}  loss {losses[-1]:.3f}  lr {lr_at(step):.2e}  {time.time() - t0:.0f}s", flush=True)
    model.eval()
    return losses


def train(steps: int = 1200, seed: int = 0, batch_size: int = 16, lr: float = 1.5e-3, threads: int = 1,
          n_eval: int | None = None) -> tuple[Decoder, dict]:
    from edgesdk.models.teachers.decoder import load_decoder

    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    t0, c0 = time.time(), time.process_time()
    model = load_decoder()
    train_pairs = fn.funcname_pairs("train")
    test_pairs = fn.funcname_pairs("test")[:n_eval] if n_eval else fn.funcname_pairs("test")
    losses = train_decoder_names(model, train_pairs, steps, seed=seed, batch_size=batch_size, lr=lr)
    train_s, train_cpu = time.time() - t0, time.process_time() - c0
    t1 = time.time()
    metrics = evaluate(model, test_pairs)
    base_nll = name_nll(load_decoder(), test_pairs)
    majority = fn.majority_name("train")
    refs = [bytes(n).decode("utf-8") for _, n in test_pairs]
    report = {
        "config": model.cfg.to_dict(), "params": model.num_params(), "init": "checkpoints/decoder.safetensors",
        "steps": steps, "seed": seed, "batch_size": batch_size, "lr": lr, "threads": threads,
        "task": {"source": "models.data.funcname (stdlib function_pairs, split_by_hash)",
                 "max_src_bytes": fn.MAX_SRC, "max_name_bytes": fn.MAX_NAME,
                 "format": "bos body sep name eos; CE on name+eos", "train_pairs": len(train_pairs),
                 "test_pairs": len(test_pairs)},
        "test": metrics,
        "baseline_majority": {"name": majority, **fn.scores([majority] * len(refs), refs)},
        "baseline_untuned_lm": {"name_nll": base_nll, "how": "checkpoints/decoder.safetensors before fine-tuning"},
        "final_loss_mean_last50": sum(losses[-50:]) / len(losses[-50:]),
        "python": platform.python_version(), "torch": torch.__version__,
        "train_seconds": round(train_s, 1), "train_cpu_seconds": round(train_cpu, 1),
        "eval_seconds": round(time.time() - t1, 1), "machine": platform.machine(), "cpu_count": os.cpu_count(),
    }
    return model, report


def load_funcname_teacher(path: str | os.PathLike | None = None) -> Decoder:
    """The function-name teacher (a `Decoder`, eval mode) shipped in ``checkpoints/``."""
    from edgesdk.models.teachers.decoder import load_decoder

    path = Path(path) if path is not None else CHECKPOINT
    if not path.is_file():
        raise FileNotFoundError(f"function-name teacher {str(path)!r} not found; train it with "
                                f"`python -m edgesdk.models.teachers.train_funcname --out {path}`")
    return load_decoder(path)


def funcname_report(path: str | os.PathLike | None = None) -> dict:
    """The JSON written beside the teacher checkpoint."""
    path = Path(path) if path is not None else CHECKPOINT
    return json.loads(path.with_suffix(".json").read_text())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=CHECKPOINT)
    ap.add_argument("--steps", type=int, default=1200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1.5e-3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--n-eval", type=int, default=None, help="test pairs scored (default: all)")
    args = ap.parse_args(argv)
    model, report = train(steps=args.steps, seed=args.seed, batch_size=args.batch_size, lr=args.lr,
                          threads=args.threads, n_eval=args.n_eval)
    path = save(model, report, args.out)
    print(json.dumps({k: report[k] for k in ("params", "test", "baseline_majority", "train_seconds",
                                              "eval_seconds")}, indent=2))
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB) and {path.with_suffix('.json').name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
