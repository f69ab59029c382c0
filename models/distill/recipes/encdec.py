"""Recipe ``encdec-from-decoder``: an encoder-decoder student (`models.encdec.EncDec`) distilled
from a decoder-only teacher ("Return of the Encoder").

Task: stdlib function body -> function name (:mod:`models.data.funcname`). Teacher and student
share the byte tokenizer (bytes 0..255, pad 256, bos 257, eos 258, sep 259). Two stages: plain
CE on the gold names for the first 40% of the steps (``ce_warmup_steps``), then on-policy KD;
each KD step:

1. a batch of ``batch_size`` training pairs is drawn (seeded by ``(seed, step)``);
2. on-policy targets: the student samples a name for every body (temperature
   ``sample_temperature``, top-``sample_top_k``, seeded), through its cached decode step;
3. the teacher scores ``bos body sep sampled`` and its logits are aligned to the student's
   decoder positions (the logits at ``sep`` predict the first name byte, ...);
4. loss = ``kl_weight`` · KL(teacher ‖ student) on the sampled targets (up to and including
   their eos) + ``ce_weight`` · CE on the gold names (defaults 0.9 / 0.1).

The student's batch therefore holds 2·B decoder rows (sampled, then gold) over B sources: the
source is encoded once and its cross K/V shared by both rows (`PairedStudent`). ``kd=False``
trains the same student with CE on the gold names only (the CE-only baseline; no teacher pass).
:func:`decoder_student` trains the equal-parameter decoder-only baseline the same way (CE).

Example::

    from edgesdk.models.distill.recipes import get_recipe     # once the lead wires the import
    from edgesdk.models.distill.recipes.encdec import encdec_from_decoder
    res = encdec_from_decoder(steps=300, threads=1)
    print(res.metrics)        # exact match / char F1 of teacher and student on test pairs
    student = res.student     # EncDec: edgesdk.convert(student, None, "onnx-cpu")

Plain PyTorch (imports nothing of the SDK beyond `models`).
"""

from __future__ import annotations

import time
from typing import Sequence

import torch
from torch import nn

from edgesdk.models.data import funcname as fn
from edgesdk.models.distill.recipes.base import RecipeResult, num_threads, register_recipe
from edgesdk.models.distill.trainer import DistillConfig, LossSpec, Stage, distill, hash_int
from edgesdk.models.encdec import EncDec, EncDecConfig
from edgesdk.models.teachers.decoder import Decoder, DecoderConfig

__all__ = ["PairedStudent", "AlignedTeacher", "OnPolicyNames", "encdec_from_decoder", "decoder_student",
           "equal_param_decoder_config", "evaluate_encdec", "STUDENT_CFG"]

# default student: d=128 like the teacher (embeddings can start from the teacher's), 4+2 layers, GQA
STUDENT_CFG = dict(d_model=128, n_layers=6, n_heads=4, n_kv_heads=2, max_source=fn.MAX_SRC,
                   max_target=fn.MAX_NAME + 2)


class PairedStudent(nn.Module):
    """``forward(src (B, P), src_len (B,), tgt (k·B, T)) -> logits (k·B, T, V)``: encodes each
    source once and decodes k target rows per source (row r uses source r mod B)."""

    def __init__(self, model: EncDec):
        super().__init__()
        self.model = model

    def forward(self, src, src_len, tgt):
        k = tgt.shape[0] // src.shape[0]
        ckv = self.model.cross_kv(self.model.encode(src, src_len))             # (2L, B, Hkv, P, Dh)
        if k > 1:
            ckv = ckv.repeat(1, k, 1, 1, 1)
            src_len = src_len.repeat(k)
        return self.model.decode(tgt, ckv, src_len)


class AlignedTeacher(nn.Module):
    """A decoder-only teacher scoring encoder-decoder targets: ``forward(src (B, P), src_len,
    tgt (k·B, T))`` with ``tgt`` rows = ``bos y0 y1 ...`` (row r belongs to source r mod B) ->
    logits (k·B, T, V) where row r, position t holds the teacher's prediction for ``y_t`` given
    ``bos body sep y_<t`` (the logits at ``sep`` and after it, gathered per row).

    ``sampled_only``: with two rows per source (`OnPolicyNames`: B sampled, then B gold), the teacher
    scores the sampled half only and the gold half comes back as zeros: the KL term reads the
    sampled rows alone (``kl_mask``) unless ``gold_kl``, so the result is the same and the teacher
    pass costs half (the demo's student: the same weights, trained in 104.7 s against 130.1 s;
    benchmarks/encdec_teacher_rows.py)."""

    def __init__(self, teacher: Decoder, sampled_only: bool = False):
        super().__init__()
        self.teacher = teacher.eval()
        self.sampled_only = sampled_only

    def forward(self, src, src_len, tgt):
        B = src.shape[0]
        if self.sampled_only and tgt.shape[0] == 2 * B:
            out = self._score(src, src_len, tgt[:B])
            return torch.cat([out, out.new_zeros(out.shape)])
        return self._score(src, src_len, tgt)

    def _score(self, src, src_len, tgt):
        B, (R, T) = src.shape[0], tgt.shape
        lens = src_len.tolist()
        L = max(lens) + 1 + T                                                  # bos src sep y_<T
        ctx = self.teacher.cfg.context
        if L > ctx:
            raise ValueError(f"teacher sequence of {L} tokens exceeds its context {ctx}; cut sources or targets")
        toks = torch.full((R, L), fn.TOK.pad_id, dtype=torch.long)
        idx = torch.zeros(R, T, dtype=torch.long)
        for r in range(R):
            n = lens[r % B]
            row = [fn.TOK.bos_id, *src[r % B, :n].tolist(), fn.TOK.sep_id, *tgt[r, 1:].tolist()]
            toks[r, :len(row)] = torch.tensor(row)
            idx[r] = n + 1 + torch.arange(T)                                   # sep, y0, ... predict y0, y1, ...
        logits = self.teacher(toks)                                            # (R, L, V)
        return logits.gather(1, idx[:, :, None].expand(R, T, logits.shape[-1]))  # (R, T, V)


class _NoTeacher(nn.Module):
    """Stands in for the teacher when only CE is trained (the trainer always calls one)."""

    def forward(self, src, src_len, tgt):
        return torch.zeros(*tgt.shape, 1)


def _pad_rows(rows: Sequence[Sequence[int]], T: int, fill: int) -> torch.Tensor:
    out = torch.full((len(rows), T), fill, dtype=torch.long)
    for i, r in enumerate(rows):
        r = list(r)[:T]
        if r:
            out[i, :len(r)] = torch.tensor(r)
    return out


class OnPolicyNames:
    """Trainer data: B pairs per step; with ``student`` set (and from step ``sample_from`` on),
    B student-sampled rows then B gold rows.

    ``sample`` -> ``src`` (B, P), ``src_len`` (B,), ``tgt`` (k·B, T), ``labels`` (k·B, T) (gold
    rows only; -100 elsewhere) and ``kl_mask`` (k·B, T): True on the sampled rows' positions up
    to and including the one predicting their first eos, and (with ``gold_kl``) on the gold
    rows' labelled positions."""

    inputs = ("src", "src_len", "tgt")

    def __init__(self, pairs: Sequence[fn.Pair], student: EncDec | None = None, temperature: float = 0.9,
                 top_k: int = 20, max_new: int = fn.MAX_NAME + 1, sample_from: int = 0, gold_kl: bool = False):
        self.pairs, self.student = list(pairs), student
        self.temperature, self.top_k, self.max_new = temperature, top_k, max_new
        self.sample_from, self.gold_kl = sample_from, gold_kl

    def sample(self, step: int, batch_size: int, seed: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(hash_int(seed, step))
        idx = torch.randint(0, len(self.pairs), (batch_size,), generator=g).tolist()
        batch = fn.encdec_batch([self.pairs[i] for i in idx])
        if self.student is None or step < self.sample_from:
            batch["kl_mask"] = (batch["labels"] != -100) & self.gold_kl
            return batch
        was = self.student.training
        self.student.eval()
        gen = self.student.generate(batch["src"], batch["src_len"], self.max_new, temperature=self.temperature,
                                    top_k=self.top_k, generator=g)                 # (B, n)
        self.student.train(was)
        rows, n_valid = [], []
        for r in gen.tolist():
            cut = r.index(fn.TOK.eos_id) + 1 if fn.TOK.eos_id in r else len(r)
            rows.append(r[:cut])
            n_valid.append(cut)
        gold_T = batch["tgt"].shape[1]
        T = max(gold_T, max(n_valid))
        T = min(T, self.student.cfg.max_target)
        s_tgt = _pad_rows([[fn.TOK.bos_id, *r[:-1]] if r else [fn.TOK.bos_id] for r in rows], T, fn.TOK.pad_id)
        g_tgt = torch.full((batch_size, T), fn.TOK.pad_id, dtype=torch.long)
        g_tgt[:, :gold_T] = batch["tgt"][:, :T]
        g_lab = torch.full((batch_size, T), -100, dtype=torch.long)
        g_lab[:, :gold_T] = batch["labels"][:, :T]
        kl_mask = torch.zeros(2 * batch_size, T, dtype=torch.bool)
        for i, n in enumerate(n_valid):
            kl_mask[i, :min(n, T)] = True
        if self.gold_kl:
            kl_mask[batch_size:] = g_lab != -100
        return {"src": batch["src"], "src_len": batch["src_len"], "tgt": torch.cat([s_tgt, g_tgt]),
                "labels": torch.cat([torch.full_like(g_lab, -100), g_lab]), "kl_mask": kl_mask}


@torch.no_grad()
def evaluate_encdec(model: EncDec, pairs: Sequence[fn.Pair], batch_size: int = 64) -> dict:
    """Exact match and character F1 of greedy names (the cached step, as exported) on ``pairs``."""
    model.eval()
    preds = []
    for i in range(0, len(pairs), batch_size):
        b = fn.encdec_batch(pairs[i:i + batch_size])
        out = model.generate(b["src"], b["src_len"], fn.MAX_NAME + 1)
        preds += [fn.decode_name(r) for r in out.tolist()]
    return fn.scores(preds, [bytes(n).decode("utf-8") for _, n in pairs])


def _init_from_teacher(student: nn.Module, teacher: Decoder) -> bool:
    """Copy the teacher's byte embeddings into the student when the widths match."""
    w = teacher.wte.weight
    if student.wte.weight.shape != w.shape:
        return False
    with torch.no_grad():
        student.wte.weight.copy_(w)
    return True


@register_recipe("encdec-from-decoder")
def encdec_from_decoder(*, teacher: Decoder | None = None, student: EncDec | str = "encdec",
                        student_cfg: dict | None = None, kd: bool = True, kl_weight: float = 0.9,
                        ce_weight: float = 0.1, temperature: float = 1.0, sample_temperature: float = 0.9,
                        sample_top_k: int = 20, steps: int = 300, batch_size: int = 16, lr: float = 2e-3,
                        warmup_steps: int = 20, ce_warmup_steps: int | None = None, gold_kl: bool = False,
                        train_pairs: Sequence[fn.Pair] | None = None,
                        eval_pairs: Sequence[fn.Pair] | None = None, init_embeddings: bool = True,
                        seed: int = 0, threads: int | None = None, progress: bool = False,
                        extra_losses: Sequence[LossSpec] = ()) -> RecipeResult:
    """Distil a decoder-only teacher (default: the shipped function-name teacher,
    `load_funcname_teacher`) into an encoder-decoder student on body -> name.

    Staged by default: ``ce_warmup_steps`` (default 40% of ``steps``; 0 turns it off) of plain CE
    on the gold names first — on-policy samples from a random student carry no signal (measured:
    200 steps from scratch with KD throughout gave char F1 0.165 against 0.327 for CE only; with
    80 CE steps first, 0.430) — then the KD stage for the rest of the ``steps``. ``gold_kl`` adds the teacher's KL on the gold names too (teacher-forced KD; the
    mixture GKD calls λ = 0.5). ``kd=False`` gives the CE-only student (same data order, steps
    and seed). ``eval_pairs``
    (default: none) are scored with greedy names for the student and the teacher.
    ``init_embeddings`` starts the student's (tied) byte embeddings from the teacher's.
    ``extra_losses`` join the KD stage's terms (batch keys: ``kl_mask`` marks the KD positions,
    ``labels`` the gold ones), e.g. ``recipes.sinkd.sinkd_term(mask_key="kl_mask")``.
    """
    from edgesdk import models
    from edgesdk.models.teachers.train_funcname import evaluate as evaluate_decoder, load_funcname_teacher

    if not (kl_weight >= 0 and ce_weight >= 0) or (kd and kl_weight == 0 and ce_weight == 0):
        raise ValueError(f"weights must be >= 0 and not both 0, got kl_weight={kl_weight}, ce_weight={ce_weight}")
    if not kd and ce_weight == 0:
        raise ValueError("kd=False trains with CE only: ce_weight must be > 0")
    if ce_warmup_steps is None:
        ce_warmup_steps = round(0.4 * steps)
    if not (isinstance(ce_warmup_steps, int) and 0 <= ce_warmup_steps < steps):
        raise ValueError(f"ce_warmup_steps must be an int in [0, steps), got {ce_warmup_steps!r}")
    t0 = time.perf_counter()
    timings, info = {}, {}
    with num_threads(threads):
        torch.manual_seed(seed)
        teacher = teacher if teacher is not None else load_funcname_teacher()
        teacher.eval()
        if isinstance(student, str):
            student = models.create(student, **{**STUDENT_CFG, **(student_cfg or {})})
        info["init_embeddings_from_teacher"] = bool(init_embeddings and _init_from_teacher(student, teacher))
        pairs = list(train_pairs) if train_pairs is not None else fn.funcname_pairs("train")
        if kd:
            data = OnPolicyNames(pairs, student, temperature=sample_temperature, top_k=sample_top_k,
                                 max_new=student.cfg.max_target - 1, sample_from=ce_warmup_steps, gold_kl=gold_kl)
            # an extra loss may read the teacher on the gold rows: then every row is scored
            t_wrap = AlignedTeacher(teacher, sampled_only=not gold_kl and not extra_losses)
            losses = [LossSpec("kl", kl_weight, {"mask_key": "kl_mask", "temperature": temperature})]
            if ce_weight:
                losses.append(LossSpec("ce", ce_weight, {"mask_key": None}))
            losses += list(extra_losses)
        else:
            data = OnPolicyNames(pairs, None)
            t_wrap = _NoTeacher()
            losses = [LossSpec("ce", 1.0, {"mask_key": None})]
        stages = []
        if kd and ce_warmup_steps:
            stages = [Stage("ce-warmup", ce_warmup_steps, [LossSpec("ce", 1.0, {"mask_key": None})]),
                      Stage("on-policy-kd", steps - ce_warmup_steps, losses)]
        cfg = DistillConfig(losses=losses, stages=stages, steps=steps, batch_size=batch_size, optimizer="adamw", lr=lr,
                            weight_decay=0.0, schedule="cosine", warmup_steps=min(warmup_steps, steps // 5),
                            grad_clip=1.0, eval_every=max(steps, 1), seed=seed, progress=progress)
        wrapped = PairedStudent(student)
        t1 = time.perf_counter()
        distill(t_wrap, wrapped, data, cfg)
        timings["student_train_s"] = time.perf_counter() - t1
        info["history"] = wrapped.distill_history
        student.eval()
        metrics = {"kd": kd, "steps": steps, "ce_warmup_steps": ce_warmup_steps if kd else 0, "gold_kl": gold_kl, "student_params": student.num_params(),
                   "teacher_params": sum(p.numel() for p in teacher.parameters())}
        if eval_pairs is not None:
            t2 = time.perf_counter()
            metrics["student"] = evaluate_encdec(student, list(eval_pairs))
            timings["student_eval_s"] = time.perf_counter() - t2
            t3 = time.perf_counter()
            metrics["teacher"] = evaluate_decoder(teacher, list(eval_pairs))
            timings["teacher_eval_s"] = time.perf_counter() - t3
    timings["total_s"] = time.perf_counter() - t0
    return RecipeResult(student, teacher, metrics, cfg, timings, info)


def _decoder_params(cfg: DecoderConfig, with_positions: bool = True) -> int:
    d, h = cfg.d_model, cfg.mlp_ratio * cfg.d_model
    per_layer = 4 * d + (3 * d * d + 3 * d) + (d * d + d) + (d * h + h) + (h * d + d)
    return cfg.vocab_size * d + (cfg.context * d if with_positions else 0) + cfg.n_layers * per_layer + 2 * d


def equal_param_decoder_config(student_cfg: EncDecConfig | dict, context: int = 256) -> DecoderConfig:
    """The decoder-only config (same width and heads) whose parameter count, learned position
    table excluded, is closest to the encoder-decoder's: the equal-parameter baseline."""
    scfg = student_cfg if isinstance(student_cfg, EncDecConfig) else EncDecConfig(**student_cfg)
    target = EncDec(scfg).num_params()
    best = None
    for n in range(1, 4 * scfg.n_layers + 1):
        c = DecoderConfig(d_model=scfg.d_model, n_heads=scfg.n_heads, mlp_ratio=scfg.mlp_ratio, n_layers=n,
                          context=context)
        diff = abs(_decoder_params(c, with_positions=False) - target)
        if best is None or diff < best[0]:
            best = (diff, c)
    return best[1]


def decoder_student(*, teacher: Decoder | None = None, student_cfg: dict | None = None, steps: int = 300,
                    batch_size: int = 16, lr: float = 2e-3, train_pairs: Sequence[fn.Pair] | None = None,
                    eval_pairs: Sequence[fn.Pair] | None = None, init_embeddings: bool = True, seed: int = 0,
                    threads: int | None = None) -> tuple[Decoder, dict]:
    """The equal-parameter decoder-only baseline: a fresh `Decoder` (config from
    `equal_param_decoder_config` of the encoder-decoder student), trained with CE on
    ``bos body sep name eos`` for the same steps and batch size. Returns (model, metrics)."""
    from edgesdk.models.teachers.train_funcname import evaluate as evaluate_decoder, train_decoder_names

    t0 = time.perf_counter()
    with num_threads(threads):
        torch.manual_seed(seed)
        cfg = equal_param_decoder_config({**STUDENT_CFG, **(student_cfg or {})})
        model = Decoder(cfg)
        if init_embeddings:
            from edgesdk.models.teachers.train_funcname import load_funcname_teacher
            _init_from_teacher(model, teacher if teacher is not None else load_funcname_teacher())
        pairs = list(train_pairs) if train_pairs is not None else fn.funcname_pairs("train")
        train_decoder_names(model, pairs, steps, seed=seed, batch_size=batch_size, lr=lr, log_every=0)
        metrics = {"params": model.num_params(), "config": cfg.to_dict(), "train_s": time.perf_counter() - t0}
        if eval_pairs is not None:
            metrics["student"] = evaluate_decoder(model, list(eval_pairs))
    return model, metrics
