"""Train the small decoder teacher as a byte-level LM on the stdlib corpus.

    python -m edgesdk.models.teachers.train_decoder --out models/teachers/checkpoints/decoder.safetensors \\
        --steps 1000 --seed 0

About 0.19 s a step on 2 idle x86 cores (d=128, 4 layers, batch 16 x 256 bytes): the default
1000 steps take ~3.5 minutes and reach ~2.5 bits/char on held-out files, against ~4.6 for a
unigram byte model. On a busy machine use fewer threads than free cores, or it crawls.

Data: :func:`models.data.stdlib.char_stream` — the running interpreter's stdlib source, files
split by the hash of their path (train 80% / val 10% / test 10%); training reads random windows
of the train files, evaluation fixed, evenly spaced windows of the val files. Bits per char are
bits per UTF-8 byte (the stdlib is > 99.99% ASCII), averaged over every position of each window.

Deterministic given ``--seed`` and ``--threads``: seeded init and data order, deterministic
algorithms, a fixed thread count (float sums depend on it). Different CPUs or Python patch
versions (whose stdlib differs slightly) give slightly different weights; the JSON written
beside the checkpoint records what was used (config, steps, seed, bits per char, the corpus
sha256, Python and torch versions, time taken).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import torch
from torch.nn import functional as F

from edgesdk.models.data.stdlib import char_stream, sha256_text
from edgesdk.models.teachers.decoder import Decoder, DecoderConfig

DEFAULT_OUT = Path(__file__).resolve().parent / "checkpoints" / "decoder.safetensors"
LN2 = math.log(2.0)
TIED = ("lm_head.weight",)  # == wte.weight; not stored


def corpus_bytes(split: str, limit_chars: int | None = None) -> tuple[torch.Tensor, str]:
    """A split of the stdlib char stream as a uint8 tensor of UTF-8 bytes, and its sha256."""
    text = char_stream(limit_chars=limit_chars, split=split)
    data = text.encode("utf-8")
    return torch.frombuffer(bytearray(data), dtype=torch.uint8), sha256_text(text)


def eval_windows(n_bytes: int, n_windows: int, context: int) -> torch.Tensor:
    """Start offsets of ``n_windows`` evenly spaced windows of ``context + 1`` bytes."""
    last = n_bytes - context - 1
    if last < 0:
        raise ValueError(f"corpus of {n_bytes} bytes is shorter than one window ({context + 1})")
    return torch.linspace(0, last, n_windows).round().long().unique()


def _batch(data: torch.Tensor, starts: torch.Tensor, context: int) -> tuple[torch.Tensor, torch.Tensor]:
    offs = starts[:, None] + torch.arange(context + 1)[None, :]               # (B, T+1)
    w = data[offs].long()
    return w[:, :-1], w[:, 1:]


@torch.no_grad()
def bits_per_char(model: Decoder, data: torch.Tensor, starts: torch.Tensor, context: int | None = None,
                  batch_size: int = 32) -> float:
    """Mean next-byte cross-entropy in bits over windows starting at ``starts``."""
    context = context or model.cfg.context
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(starts), batch_size):
        x, y = _batch(data, starts[i:i + batch_size], context)
        logits = model(x)
        total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum").item()
        count += y.numel()
    model.train(was_training)
    return total / count / LN2


def unigram_bits_per_char(train: torch.Tensor, data: torch.Tensor, starts: torch.Tensor, context: int) -> float:
    """Baseline: cross-entropy of the same target bytes under the train split's byte
    frequencies (add-one smoothing)."""
    counts = torch.bincount(train.long(), minlength=256).double() + 1.0
    logp = torch.log2(counts / counts.sum())
    _, y = _batch(data, starts, context)
    return float(-logp[y].mean())


def train(steps: int = 1000, seed: int = 0, batch_size: int = 16, lr: float = 2e-3, warmup: int = 30,
          weight_decay: float = 0.1, threads: int = 2, n_eval: int = 128, log_every: int = 25,
          cfg: DecoderConfig | None = None) -> tuple[Decoder, dict]:
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    cfg = cfg or DecoderConfig()
    t0, c0 = time.time(), time.process_time()
    train_data, train_sha = corpus_bytes("train")
    val_data, val_sha = corpus_bytes("val")
    model = Decoder(cfg)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.95))

    def lr_at(step: int) -> float:  # linear warm-up, cosine decay to 10%
        if step < warmup:
            return lr * (step + 1) / warmup
        frac = (step - warmup) / max(1, steps - warmup)
        return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))

    g = torch.Generator().manual_seed(seed)
    high = len(train_data) - cfg.context - 1
    model.train()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        x, y = _batch(train_data, torch.randint(0, high, (batch_size,), generator=g), cfg.context)
        logits = model(x)                                                    # (B, T, V)
        loss = F.cross_entropy(logits.reshape(-1, cfg.vocab_size), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if log_every and (step % log_every == 0 or step == steps - 1):
            print(f"step {step:5d}  loss {loss.item() / LN2:.3f} bits/char  lr {lr_at(step):.2e}  "
                  f"{time.time() - t0:.0f}s", flush=True)
    train_time, train_cpu = time.time() - t0, time.process_time() - c0
    model.eval()
    val_starts = eval_windows(len(val_data), n_eval, cfg.context)
    train_starts = eval_windows(len(train_data), n_eval, cfg.context)
    report = {
        "config": cfg.to_dict(),
        "params": model.num_params(),
        "steps": steps, "seed": seed, "batch_size": batch_size, "lr": lr, "warmup": warmup,
        "weight_decay": weight_decay, "threads": threads,
        "tokens_seen": steps * batch_size * cfg.context,
        "train_bits_per_char": bits_per_char(model, train_data, train_starts),
        "val_bits_per_char": bits_per_char(model, val_data, val_starts),
        "unigram_val_bits_per_char": unigram_bits_per_char(train_data, val_data, val_starts, cfg.context),
        "eval": {"windows": int(len(val_starts)), "context": cfg.context,
                 "how": "evenly spaced windows (eval_windows) of the split's bytes; every position scored"},
        # a small sample that tests recompute: the first `windows` eval windows of the val split
        "check": {"windows": 8, "of": n_eval,
                  "val_bits_per_char": bits_per_char(model, val_data, val_starts[:8])},
        "corpus": {"source": "edgesdk.models.data.stdlib.char_stream", "unit": "UTF-8 byte",
                   "train_sha256": train_sha, "val_sha256": val_sha,
                   "train_bytes": len(train_data), "val_bytes": len(val_data)},
        "python": platform.python_version(), "torch": torch.__version__,
        "train_seconds": round(train_time, 1), "train_cpu_seconds": round(train_cpu, 1),
        "machine": platform.machine(), "cpu_count": os.cpu_count(),
    }
    return model, report


def save(model: Decoder, report: dict, out: Path) -> Path:
    """Write ``out`` (safetensors) and ``out`` with ``.json``, atomically.

    The tied ``lm_head.weight`` is left out (it is ``wte.weight``) and the metadata has a single
    key (``config``): safetensors writes a multi-key metadata map in hash order, and the file
    would then differ from run to run even with identical weights.
    """
    from safetensors.torch import save_file

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.partial")
    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items() if k not in TIED}
    save_file(tensors, str(tmp), metadata={"config": json.dumps(model.cfg.to_dict(), sort_keys=True)})
    os.chmod(tmp, 0o644)
    os.replace(tmp, out)
    report = {**report, "checkpoint_sha256": hashlib.sha256(out.read_bytes()).hexdigest()}
    meta = out.with_suffix(".json")
    tmp = meta.with_name(f".{meta.name}.partial")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(tmp, meta)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--d-model", type=int, default=DecoderConfig.d_model)
    ap.add_argument("--layers", type=int, default=DecoderConfig.n_layers)
    ap.add_argument("--heads", type=int, default=DecoderConfig.n_heads)
    ap.add_argument("--context", type=int, default=DecoderConfig.context)
    args = ap.parse_args(argv)
    cfg = DecoderConfig(d_model=args.d_model, n_layers=args.layers, n_heads=args.heads, context=args.context)
    model, report = train(steps=args.steps, seed=args.seed, batch_size=args.batch_size, lr=args.lr,
                          threads=args.threads, cfg=cfg)
    path = save(model, report, args.out)
    keys = ("params", "train_bits_per_char", "val_bits_per_char", "unigram_val_bits_per_char",
            "train_seconds", "train_cpu_seconds")
    print(json.dumps({k: report[k] for k in keys}, indent=2))
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB) and {path.with_suffix('.json').name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
