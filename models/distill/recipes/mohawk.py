"""MOHAWK (Bick et al., 2024): distil an attention teacher into a Mamba-2 student in three stages.

Recipe ``mohawk`` (registered with `register_recipe`), on the shared trainer
(`models.distill.distill`), for the byte-level `Decoder` teacher and the `models.mamba.Mamba`
student, on the stdlib character corpus:

0. **Init (MaTVLM)** — ``init="teacher"``: x <- W_V, B <- W_K, C <- W_Q, out_proj <- W_O; MLPs,
   LayerNorms, embedding and head copied (`models.mamba.init_from_attention`). ``init="random"``
   gives the from-scratch baseline.
1. **Matrix orientation** — per layer, on the *teacher's* block inputs, the Frobenius distance
   between the teacher's causal attention matrix (B, H, T, T) and the student's materialised
   SSD mixing matrix (`Mamba2Mixer.mixing_matrix`); only the mixers train; layers are
   independent (each sees the teacher's input, never another student layer's output).
   Loss ``matrix_frobenius`` (registered here).
2. **Hidden-state alignment** — per layer, on the teacher's block inputs, MSE between the
   student block's output and the teacher block's output (``hidden_mse``); mixers train
   (``stage2_train="mixer"``) or whole blocks (``"block"``).
3. **End-to-end KD** — the whole student on its own inputs: T²·KL(teacher ‖ student) on the
   logits (``kl``) + ``ce_weight`` · next-byte cross-entropy. ``freeze_copied=True`` keeps the
   parts copied from the teacher (embedding/head, LayerNorms, MLPs) fixed.

The step budget ``steps`` is split over the stages by ``split`` (stages not run give their share
to stage 3), so "stage 3 only", "stages 1–3" and "from scratch" compare at equal budgets.
Every stage is its own `distill` call with its own teacher/student wrappers (the trainer feeds
both the same token batch; the student wrapper reads the teacher's block inputs from the
teacher wrapper's memo of that batch).

Example::

    from edgesdk.models.distill.recipes import get_recipe
    res = get_recipe("mohawk")("decoder", steps=300, stages=(1, 2, 3))
    res.metrics          # teacher / student bits per char on held-out stdlib files
    res.student          # a Mamba: prefill + step export through edgesdk.convert(res.student, None, target)

Checkpoint: ``python -m edgesdk.models.distill.recipes.mohawk --out models/checkpoints/mamba.safetensors``.
Plain PyTorch (imports nothing of the SDK beyond `models`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
from torch import Tensor, nn

from edgesdk.models.distill.losses import DistillLoss, register_loss
from edgesdk.models.distill.recipes.base import RecipeResult, num_threads, register_recipe
from edgesdk.models.distill.trainer import DistillConfig, LossSpec, Stage, distill, hash_int

__all__ = ["MatrixFrobeniusLoss", "TeacherTaps", "StudentMatrices", "StudentBlocks", "ByteWindows",
           "stage_plan", "mohawk", "held_out_bits", "COPIED_PREFIXES"]

COPIED_PREFIXES = ("wte", "ln_f", "lm_head")  # + blocks.i.ln1/ln2/mlp


# ------------------------------------------------------------------------------------------ loss

@register_loss("matrix_frobenius")
class MatrixFrobeniusLoss(DistillLoss):
    """MOHAWK stage 1: mean over matrices of ‖M_student − M_teacher‖_F.

    Reads ``student[student_key]`` and ``teacher[teacher_key]`` of shape (..., T, T) (e.g.
    (B, layers·heads, T, T)); the leading dims index independent matrices."""

    def __init__(self, student_key: str = "mix", teacher_key: str = "attn", mask_key: str | None = None,
                 eps: float = 1e-12):
        super().__init__(mask_key)
        self.student_key, self.teacher_key, self.eps = student_key, teacher_key, float(eps)

    def _get(self, d, key, side, kwarg) -> Tensor:
        if d is None or key not in d:
            have = ", ".join(map(repr, d)) if d else "nothing"
            raise KeyError(f"MatrixFrobeniusLoss reads {side}[{key!r}] but {side} has {have}; "
                           f"pass {kwarg}=... to read another key")
        return d[key]

    def forward(self, student: dict[str, Tensor], teacher: dict[str, Tensor], batch: dict | None = None) -> Tensor:
        s = self._get(student, self.student_key, "student", "student_key")
        t = self._get(teacher, self.teacher_key, "teacher", "teacher_key").detach()
        if s.shape != t.shape or s.dim() < 2:
            raise ValueError(f"MatrixFrobeniusLoss: student {tuple(s.shape)} and teacher {tuple(t.shape)} must be "
                             "matrices (..., T, T) of one shape")
        d = (s.float() - t.float()).pow(2).sum((-2, -1))                      # (...)
        m = self._mask(batch, d.shape, d.device)
        if m is not None:
            d = d[m]
        return torch.sqrt(d + self.eps).mean() if d.numel() else d.sum()

    @classmethod
    def example_inputs(cls, *, matched: bool = False, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        s = torch.randn(2, 3, 4, 4, generator=g).tril()                     # (B, H, T, T)
        t = s.clone() if matched else torch.softmax(torch.randn(2, 3, 4, 4, generator=g), -1).tril()
        return {}, {"mix": s}, {"attn": t}, None


# ------------------------------------------------------------------------------------------ wrappers

class TeacherTaps(nn.Module):
    """A `Decoder` teacher that also returns what MOHAWK aligns to: ``forward(x (B, T)) ->
    {"logits" (B, T, V), "attn" (B, L·H, T, T), "block_out" (B, L, T, D)}``; keeps the block
    inputs of the last batch (``block_inputs(x)``) for the student wrappers."""

    def __init__(self, teacher: nn.Module):
        super().__init__()
        self.teacher = teacher
        self._memo: tuple[Tensor, list[Tensor]] | None = None

    @torch.no_grad()
    def run(self, x: Tensor):
        t = self.teacher
        h = t.embed(x)
        ins, outs, atts = [], [], []
        for blk in t.blocks:
            ins.append(h)
            h, att = blk(h, return_attn=True)
            outs.append(h)
            atts.append(att)
        logits = t.lm_head(t.ln_f(h))
        self._memo = (x, ins)
        return logits, ins, outs, atts

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        logits, _, outs, atts = self.run(x)
        return {"logits": logits, "attn": torch.cat(atts, 1), "block_out": torch.stack(outs, 1)}

    def block_inputs(self, x: Tensor) -> list[Tensor]:
        if self._memo is None or self._memo[0] is not x:
            self.run(x)
        return self._memo[1]


class _OnTeacherInputs(nn.Module):
    def __init__(self, student: nn.Module, taps: TeacherTaps):
        super().__init__()
        self.student = student
        self._taps = [taps]  # a list: not a submodule (its parameters are not the student's)


class StudentMatrices(_OnTeacherInputs):
    """Stage 1: ``forward(x) -> {"mix": (B, L·H, T, T)}``, layer i's SSD matrix on teacher input i."""

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        ins = self._taps[0].block_inputs(x)
        mats = [blk.mixer.mixing_matrix(blk.ln1(h)) for blk, h in zip(self.student.blocks, ins)]
        return {"mix": torch.cat(mats, 1)}


class StudentBlocks(_OnTeacherInputs):
    """Stage 2: ``forward(x) -> {"block_out": (B, L, T, D)}``, block i on teacher input i."""

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        ins = self._taps[0].block_inputs(x)
        return {"block_out": torch.stack([blk(h) for blk, h in zip(self.student.blocks, ins)], 1)}


# ------------------------------------------------------------------------------------------ data

def corpus(split: str, limit_chars: int | None = None) -> Tensor:
    """The stdlib char stream of a split as a uint8 tensor of UTF-8 bytes (as the teacher's)."""
    from edgesdk.models.teachers.train_decoder import corpus_bytes
    return corpus_bytes(split, limit_chars)[0]


class ByteWindows:
    """Random windows of ``seq_len + 1`` bytes: ``{"x": (B, T), "labels": (B, T)}`` (next bytes)."""

    inputs = ("x",)

    def __init__(self, data: Tensor, seq_len: int):
        if len(data) <= seq_len + 1:
            raise ValueError(f"corpus of {len(data)} bytes is shorter than one window ({seq_len + 1})")
        self.data, self.seq_len = data, seq_len

    def sample(self, step: int, batch_size: int, seed: int) -> dict[str, Tensor]:
        g = torch.Generator().manual_seed(hash_int(seed, step, "windows"))
        starts = torch.randint(0, len(self.data) - self.seq_len - 1, (batch_size,), generator=g)
        w = self.data[starts[:, None] + torch.arange(self.seq_len + 1)[None, :]].long()
        return {"x": w[:, :-1], "labels": w[:, 1:]}


@torch.no_grad()
def held_out_bits(model: nn.Module, data: Tensor, n_windows: int = 64, context: int = 256,
                  batch_size: int = 16) -> float:
    """Bits per char (UTF-8 byte) on evenly spaced windows of ``data``, every position scored —
    the teacher's own metric (`models.teachers.train_decoder.bits_per_char`)."""
    from edgesdk.models.teachers.train_decoder import bits_per_char, eval_windows
    return bits_per_char(model, data, eval_windows(len(data), n_windows, context), context, batch_size)


# ------------------------------------------------------------------------------------------ recipe

def _copied(student: nn.Module, prefix: str = "") -> list[str]:
    names = [f"{prefix}{n}" for n in ("wte", "ln_f")]
    for i in range(len(student.blocks)):
        names += [f"{prefix}blocks.{i}.{n}" for n in ("ln1", "ln2", "mlp")]
    return names


def stage_plan(steps: int, stages=(1, 2, 3), split=(0.1, 0.1, 0.8)) -> dict[int, int]:
    """Steps per stage: ``split`` shares of ``steps`` for the stages run; stage 3 gets the rest."""
    stages = tuple(sorted(set(stages)))
    if not stages or any(s not in (1, 2, 3) for s in stages):
        raise ValueError(f"stages must be a non-empty subset of (1, 2, 3), got {stages}")
    if len(split) != 3 or any(s < 0 for s in split):
        raise ValueError(f"split must be three non-negative shares, got {split}")
    plan = {s: max(1, int(round(steps * split[s - 1]))) for s in stages if s != 3}
    if 3 in stages:
        plan[3] = steps - sum(plan.values())
        if plan[3] < 1:
            raise ValueError(f"steps={steps} leaves nothing for stage 3 after {plan}")
    return plan


@register_recipe("mohawk")
def mohawk(teacher: nn.Module | str = "decoder", *, student: nn.Module | None = None, init: str = "teacher",
           stages=(1, 2, 3), steps: int = 300, split=(0.1, 0.1, 0.8), batch_size: int = 16, seq_len: int = 128,
           lr: float = 1e-3, lr_stage12: float | None = None, kd_temperature: float = 1.0, ce_weight: float = 0.0,
           stage2_train: str = "mixer", freeze_copied: bool = False, seed: int = 0, threads: int | None = 1,
           eval_windows: int = 64, eval_context: int = 256, train_data: Tensor | None = None,
           val_data: Tensor | None = None, evaluate: bool = True, progress: bool = False,
           student_cfg: dict | None = None) -> RecipeResult:
    """Distil ``teacher`` (a `Decoder` or ``"decoder"``) into a Mamba-2 student with MOHAWK.

    ``init``: ``"teacher"`` (MaTVLM copy) or ``"random"``; ``stages``: which of 1, 2, 3 run
    (``(3,)`` = end-to-end KD only); ``steps``: the whole budget, split by ``split``.
    Metrics: held-out bits per char of teacher and student (val split, ``eval_windows``
    windows of ``eval_context`` bytes). ``info["losses"]`` has each stage's first/last losses.
    """
    from edgesdk.models.mamba import Mamba, MambaConfig, init_from_attention
    from edgesdk.models.teachers import load_teacher

    if init not in ("teacher", "random"):
        raise ValueError(f"init must be 'teacher' or 'random', got {init!r}")
    if stage2_train not in ("mixer", "block"):
        raise ValueError(f"stage2_train must be 'mixer' or 'block', got {stage2_train!r}")
    plan = stage_plan(steps, stages, split)
    t0 = time.perf_counter()
    timings, info = {}, {"plan": plan, "init": init}
    with num_threads(threads):
        torch.manual_seed(seed)
        teacher = load_teacher(teacher).eval()
        context = teacher.cfg.context
        if seq_len > context or (evaluate and eval_context > context):
            raise ValueError(f"seq_len={seq_len} / eval_context={eval_context} exceed the teacher's context ({context})")
        for p in teacher.parameters():
            p.requires_grad_(False)
        if student is None:
            if init == "teacher":
                student = Mamba.from_teacher(teacher, **(student_cfg or {}))
            else:
                tc = teacher.cfg
                d_head = tc.d_model // tc.n_heads
                student = Mamba(MambaConfig(**{"vocab_size": tc.vocab_size, "d_model": tc.d_model,
                                               "n_layers": tc.n_layers, "n_heads": tc.n_heads, "head_dim": d_head,
                                               "d_state": d_head, "n_groups": tc.n_heads, "mlp_ratio": tc.mlp_ratio,
                                               "bias": tc.bias, **(student_cfg or {})}))
        elif init == "teacher":
            init_from_attention(student, teacher)
        train_data = corpus("train") if train_data is None else train_data
        data = ByteWindows(train_data, seq_len)
        taps = TeacherTaps(teacher)
        timings["init_s"] = time.perf_counter() - t0
        history, losses_seen, run_stages = [], {}, []
        n_layers = len(student.blocks)
        mixers = [f"student.blocks.{i}.mixer" for i in range(n_layers)]
        for si in sorted(plan):
            n = plan[si]
            if si == 1:
                s_mod, t_mod = StudentMatrices(student, taps), taps
                stage = Stage("matrix_orientation", n, [LossSpec("matrix_frobenius", 1.0)], train_only=mixers,
                              lr=lr_stage12)
            elif si == 2:
                s_mod, t_mod = StudentBlocks(student, taps), taps
                only = mixers if stage2_train == "mixer" else [f"student.blocks.{i}" for i in range(n_layers)]
                stage = Stage("hidden_alignment", n, [LossSpec("hidden_mse", 1.0, {
                    "student_key": "block_out", "teacher_key": "block_out", "mask_key": None})],
                    train_only=only, lr=lr_stage12)
            else:
                s_mod, t_mod = student, teacher
                ls = [LossSpec("kl", 1.0, {"temperature": kd_temperature, "mask_key": None})]
                if ce_weight:
                    ls.append(LossSpec("ce", ce_weight, {"mask_key": None}))
                stage = Stage("end_to_end", n, ls, freeze=_copied(student) if freeze_copied else [])
            cfg = DistillConfig(stages=[stage], batch_size=batch_size, optimizer="adamw", lr=lr, weight_decay=0.0,
                                schedule="cosine", warmup_steps=min(10, n // 10), grad_clip=1.0, eval_every=10 ** 9,
                                seed=hash_int(seed, si), progress=progress)
            run_stages.append(stage)
            t1 = time.perf_counter()
            distill(t_mod, s_mod, data, cfg)
            timings[f"stage{si}_s"] = time.perf_counter() - t1
            h = s_mod.distill_history
            history += h
            k = max(1, len(h) // 10)
            losses_seen[stage.name] = {"first": sum(r["loss"] for r in h[:k]) / k,
                                       "last": sum(r["loss"] for r in h[-k:]) / k, "steps": len(h)}
            if progress:
                print(f"mohawk stage {si} ({stage.name}): {losses_seen[stage.name]}", flush=True)
        for p in student.parameters():
            p.requires_grad_(True)
        student.eval()
        info.update(history=history, losses=losses_seen)
        metrics = {"steps": steps, "stages": list(sorted(plan)), "init": init}
        if evaluate:
            t1 = time.perf_counter()
            val = corpus("val") if val_data is None else val_data
            metrics["teacher_bits_per_char"] = held_out_bits(teacher, val, eval_windows, eval_context)
            metrics["student_bits_per_char"] = held_out_bits(student, val, eval_windows, eval_context)
            timings["eval_s"] = time.perf_counter() - t1
    timings["total_s"] = time.perf_counter() - t0
    cfg_all = DistillConfig(stages=run_stages, batch_size=batch_size, optimizer="adamw", lr=lr, schedule="cosine",
                            seed=seed, progress=progress)  # the stages as run (each was its own distill call)
    return RecipeResult(student, teacher, metrics, cfg_all, timings, info)


# ------------------------------------------------------------------------------------------ checkpoint

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "checkpoints" / "mamba.safetensors"


def save_student(student: nn.Module, report: dict, out: Path) -> Path:
    """safetensors (tied head left out) + a JSON report beside it, written atomically."""
    from safetensors.torch import save_file
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.partial")
    tensors = {k: v.detach().contiguous() for k, v in student.state_dict().items() if k != "lm_head.weight"}
    save_file(tensors, str(tmp), metadata={"config": json.dumps(student.cfg.to_dict(), sort_keys=True)})
    os.replace(tmp, out)
    meta = out.with_suffix(".json")
    meta.write_text(json.dumps(report, indent=2) + "\n")
    return out


def load_student(path: str | os.PathLike = DEFAULT_OUT) -> nn.Module:
    """A Mamba saved by `save_student`, in eval mode."""
    from safetensors import safe_open
    from safetensors.torch import load_file
    from edgesdk.models.mamba import Mamba, MambaConfig
    with safe_open(str(path), framework="pt") as f:
        cfg = json.loads((f.metadata() or {})["config"])
    if "prompt_len" in cfg:  # saved before prompt length classes: one class
        cfg["prompt_lengths"] = [cfg.pop("prompt_len")]
    m = Mamba(MambaConfig(**cfg))
    missing, unexpected = m.load_state_dict(load_file(str(path)), strict=False)
    if unexpected or set(missing) != {"lm_head.weight"}:
        raise ValueError(f"{path}: missing {missing}, unexpected {unexpected}")
    return m.eval()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Distil the decoder teacher into a Mamba-2 student (MOHAWK).")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--stages", default="1,2,3")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.use_deterministic_algorithms(True)
    res = mohawk("decoder", stages=tuple(int(s) for s in args.stages.split(",")), steps=args.steps,
                 batch_size=args.batch_size, seq_len=args.seq_len, lr=args.lr, seed=args.seed,
                 threads=args.threads, progress=True)
    report = {"metrics": res.metrics, "timings": res.timings, "losses": res.info["losses"],
              "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "torch": torch.__version__}
    path = save_student(res.student, report, args.out)
    print(json.dumps(report, indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
