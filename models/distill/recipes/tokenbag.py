"""Recipe ``tokenbag``: a model2vec-like token-bag sentence encoder (`models.mlp.TokenBagEncoder`)
distilled from all-MiniLM-L6-v2 (see `edgesdk.models.distill.recipes` for the details)."""

from __future__ import annotations

import time
from collections import Counter
from typing import Callable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from edgesdk import models
from edgesdk.models.distill.trainer import DistillConfig, LossSpec, distill, hash_int
from edgesdk.models.distill.recipes.base import BestState, num_threads, RecipeResult, register_recipe

class TargetLookup(nn.Module):
    """A teacher made of precomputed outputs: ``forward(ids, mask) -> targets`` for exactly the
    rows given, found by the content of each ``ids`` row (the mask is not part of the key, so
    token dropout on the mask still finds the sentence's target). Lets the trainer distil from
    embeddings computed once (the teacher is the slow part) while batches carry only the
    student's inputs. Rows with identical ids share the mean of their targets."""

    def __init__(self, ids: torch.Tensor, mask: torch.Tensor, targets: torch.Tensor):
        super().__init__()
        keys = [self._key(i, m) for i, m in zip(ids, mask)]
        index: dict[bytes, int] = {}
        rows: list[list[int]] = []
        for n, k in enumerate(keys):
            if k not in index:
                index[k] = len(rows)
                rows.append([])
            rows[index[k]].append(n)
        self.index = index
        self.register_buffer("targets", torch.stack([targets[r].mean(0) for r in rows]), persistent=False)

    @staticmethod
    def _key(ids: torch.Tensor, mask: torch.Tensor) -> bytes:
        return ids.numpy().tobytes()

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        try:
            rows = [self.index[self._key(i, m)] for i, m in zip(ids, mask)]
        except KeyError:
            raise KeyError("TargetLookup: an input row has no precomputed target; the lookup only answers for "
                           "the rows it was built from") from None
        return self.targets[torch.tensor(rows, dtype=torch.long)]


class SentencePairs:
    """Trainer data for the token-bag student: ``ids``/``mask`` (student inputs) of the training
    sentences; ``sample`` draws ``batch_size`` distinct sentences per step (seeded) and, with
    ``token_dropout`` p, hides each token with probability p (a row keeps at least its first
    token): the student learns to reach the teacher's embedding from partial bags."""

    inputs = ("ids", "mask")

    def __init__(self, ids: torch.Tensor, mask: torch.Tensor, token_dropout: float = 0.0):
        if not 0.0 <= token_dropout < 1.0:
            raise ValueError(f"token_dropout must be in [0, 1), got {token_dropout!r}")
        self.ids, self.mask, self.n, self.token_dropout = ids, mask, len(ids), float(token_dropout)

    def sample(self, step: int, batch_size: int, seed: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(hash_int(seed, step))
        idx = torch.randperm(self.n, generator=g)[:batch_size]
        ids, mask = self.ids[idx], self.mask[idx]
        if self.token_dropout:
            keep = torch.rand(mask.shape, generator=g) >= self.token_dropout
            keep[:, 0] = True
            mask = mask & keep
        return {"ids": ids, "mask": mask}


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman rank correlation of two 1-D tensors (ties broken by position; continuous
    similarities rarely tie)."""
    def ranks(v):
        r = torch.empty_like(v, dtype=torch.float64)
        r[torch.argsort(v)] = torch.arange(v.numel(), dtype=torch.float64)
        return r
    ra, rb = ranks(a.double()), ranks(b.double())
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / (ra.norm() * rb.norm()).clamp(min=1e-12))


def embedding_agreement(student_emb: torch.Tensor, teacher_emb: torch.Tensor, k: int = 10) -> dict:
    """How well student embeddings reproduce the teacher's geometry on the same N texts:

    - ``spearman``: Spearman correlation between the teacher's and the student's cosine
      similarities over all N(N−1)/2 pairs;
    - ``top{k}_overlap``: mean over texts of |top-k neighbours by teacher ∩ by student| / k
      (the text itself excluded).
    """
    s = F.normalize(student_emb.float(), dim=-1)
    t = F.normalize(teacher_emb.float(), dim=-1)
    n = len(s)
    sim_s, sim_t = s @ s.T, t @ t.T
    iu = torch.triu_indices(n, n, offset=1)
    rho = spearman(sim_s[iu[0], iu[1]], sim_t[iu[0], iu[1]])
    eye = torch.eye(n, dtype=torch.bool)
    k = min(k, n - 1)
    nn_s = sim_s.masked_fill(eye, -2).topk(k, dim=1).indices
    nn_t = sim_t.masked_fill(eye, -2).topk(k, dim=1).indices
    overlap = (nn_s[:, :, None] == nn_t[:, None, :]).any(-1).float().sum(1) / k
    return {"spearman": rho, f"top{k}_overlap": float(overlap.mean()), "texts": n}


@torch.no_grad()
def teacher_pass(encoder, texts: list[str], word_spans: Callable[[str], list] | None = None,
                 batch_size: int = 64) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
    """One pass of a Hugging Face sentence encoder (`models.teachers.hf.HFEncoder`, e.g. MiniLM)
    over ``texts``: their sentence embeddings (N, D) — identical to ``encoder.encode`` (same
    length-sorted batches) — and, with ``word_spans(text) -> [(start, end, word), ...]``, the
    teacher's *contextual* vector of every word: the mean of the last hidden states of the
    word pieces overlapping the word's characters (float16, one (n_words, D) tensor per text;
    a word the teacher truncated away gets no vector, marked by NaN)."""
    was = encoder.training
    encoder.eval()
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    emb = torch.empty(len(texts), encoder.dim)
    words: list[torch.Tensor | None] = [None] * len(texts)
    for b in range(0, len(order), batch_size):
        idx = order[b:b + batch_size]
        batch = [texts[i] for i in idx]
        tok = dict(encoder.tokenizer(batch, padding=True, truncation=True, max_length=encoder.max_length,
                                     return_tensors="pt", return_offsets_mapping=word_spans is not None))
        offsets = tok.pop("offset_mapping", None)
        hidden = encoder.model(**tok).last_hidden_state                          # (B, T, D)
        emb[idx] = encoder.pool(hidden, tok["attention_mask"]).float()
        if word_spans is None:
            continue
        for r, i in enumerate(idx):
            o = offsets[r]
            real = tok["attention_mask"][r].bool() & (o[:, 1] > o[:, 0])          # word pieces, no specials
            pos = real.nonzero().flatten()
            st, en = o[pos, 0], o[pos, 1]
            spans = word_spans(texts[i])
            vec = torch.full((len(spans), hidden.shape[-1]), float("nan"))
            for j, (a, z, _) in enumerate(spans):
                sel = pos[(st < z) & (en > a)]
                if sel.numel():
                    vec[j] = hidden[r, sel].mean(0)
            words[i] = vec.half()
    encoder.train(was)
    return emb, (words if word_spans is not None else None)


@torch.no_grad()
def init_from_contexts(student: nn.Module, texts: list[str], word_vectors: list[torch.Tensor]) -> dict:
    """Contextual initialisation of a `TokenBagEncoder` (a static-embedding reduction of the
    teacher): every token row starts as the mean, over its occurrences in ``texts``, of the
    teacher's contextual vectors of the words it comes from (a word's own vector; a bigram's,
    the mean of both words'; an n-gram's, its word's) — so the student's masked mean
    approximates the teacher's mean pooling. ``word_vectors`` come from `teacher_pass`. Rows
    never seen start at zero. With ``emb_dim`` below the teacher's width the rows are reduced
    by PCA and the projection starts as the inverse map."""
    tok = student.tokenizer
    d_t = word_vectors[0].shape[1] if word_vectors else student.cfg.out_dim
    sums = torch.zeros(student.cfg.buckets, d_t, dtype=torch.float64)
    hits = torch.zeros(student.cfg.buckets, dtype=torch.float64)
    for text, wv in zip(texts, word_vectors):
        toks = tok.tokens_with_sources(text)[:student.cfg.max_tokens]
        if not toks:
            continue
        wv = wv.double()
        rows, vecs = [], []
        for t, src in toks:
            v = wv[list(src)].mean(0)
            if torch.isfinite(v).all():
                rows.append(tok.bucket(t))
                vecs.append(v)
        if rows:
            r = torch.tensor(rows)
            sums.index_add_(0, r, torch.stack(vecs))
            hits.index_add_(0, r, torch.ones(len(rows), dtype=torch.float64))
    table = (sums / hits.clamp(min=1)[:, None]).float()
    _set_table(student, table)
    return {"buckets_used": int((hits > 0).sum()), "token_occurrences": int(hits.sum())}


def _set_table(student: nn.Module, table: torch.Tensor) -> None:
    """Write a (buckets, D_teacher) table into the student, by PCA when emb_dim < D_teacher."""
    d_t, d_s = table.shape[1], student.cfg.emb_dim
    if d_s > d_t or student.cfg.out_dim != d_t:
        raise ValueError(f"teacher vectors are {d_t}-d; the student needs emb_dim <= {d_t} and out_dim == {d_t} "
                         f"(got emb_dim={d_s}, out_dim={student.cfg.out_dim})")
    if d_s < d_t:  # PCA (as model2vec); the projection maps back to the teacher's space
        used = table[table.abs().sum(1) > 0]
        _, _, v = torch.linalg.svd(used, full_matrices=False)
        comps = v[:d_s]                                                    # (d_s, d_t)
        table = table @ comps.T
        student.proj.weight.copy_(comps.T)
    else:
        student.proj.weight.copy_(torch.eye(d_t))
    student.proj.bias.zero_()
    student.embed.weight.copy_(table)


@torch.no_grad()
def init_from_teacher_words(student: nn.Module, texts, encode: Callable, max_words: int = 20000,
                            sif: float = 1e-3, center: bool = True, batch_size: int = 512) -> dict:
    """model2vec-style initialisation of a `TokenBagEncoder`: the embedding row of each of the
    ``max_words`` most frequent words of ``texts`` becomes ``encode([word])`` (the teacher's
    embedding of the word alone, minus the frequency-weighted mean word vector when ``center``)
    times the SIF weight ``sif / (sif + p(word))``; every other row
    (bigrams, n-grams, rare words) starts at zero. With ``emb_dim`` below the teacher's width
    the vectors are reduced by PCA and the student's projection starts as the inverse map (needs
    ``out_dim`` = the teacher's width). Returns counts and the seconds spent in the teacher."""
    tok = student.tokenizer
    freq = Counter(w for t in texts for w in tok.words(t))
    total = sum(freq.values()) or 1
    words = [w for w, _ in freq.most_common(max_words)]
    t0 = time.perf_counter()
    vecs = torch.cat([encode(words[i:i + batch_size]) for i in range(0, len(words), batch_size)]) if words \
        else torch.zeros(0, student.cfg.emb_dim)
    secs = time.perf_counter() - t0
    p = torch.tensor([freq[w] / total for w in words])
    if center and len(words):
        vecs = vecs - (p[:, None] * vecs).sum(0) / p.sum()  # remove the common direction (PCA centres too)
    table = torch.zeros(student.cfg.buckets, vecs.shape[1])
    hits = torch.zeros(student.cfg.buckets)
    for w, v, pw in zip(words, vecs, p.tolist()):
        b = tok.bucket(f"w:{w}")
        table[b] += v * (sif / (sif + pw))
        hits[b] += 1
    _set_table(student, table / hits.clamp(min=1)[:, None])
    return {"words": len(words), "buckets_used": int((hits > 0).sum()), "collisions": int((hits > 1).sum()),
            "teacher_s": secs}


@register_recipe("tokenbag")
def tokenbag(texts: list[str], teacher_emb: torch.Tensor, *, val_texts: list[str] | None = None,
             val_emb: torch.Tensor | None = None, eval_texts: list[str] | None = None,
             eval_emb: torch.Tensor | None = None, student: nn.Module | str = "tokenbag",
             student_cfg: dict | None = None, word_vectors: list[torch.Tensor] | None = None,
             word_encoder: Callable | None = None, init_words: int = 20000, train: bool = True,
             steps: int = 400, batch_size: int = 128, lr: float = 3e-3,
             weight_decay: float = 0.0, token_dropout: float = 0.0, cosine_weight: float = 1.0,
             relation_weight: float = 1.0, eval_every: int = 50, seed: int = 0, threads: int | None = None,
             progress: bool = False, extra_losses: Sequence[LossSpec] = ()) -> RecipeResult:
    """Distil sentence embeddings ``teacher_emb`` (N, D) of ``texts`` into a token-bag encoder.

    Initialisation: ``word_vectors`` (the teacher's contextual word vectors of ``texts`` from
    `teacher_pass`) -> `init_from_contexts`; else ``word_encoder(list[str]) -> (n, D)`` (e.g.
    MiniLM's ``encode``) -> the model2vec-style `init_from_teacher_words`; else random.
    ``train=False`` skips training (the initialised — or random — encoder is returned: the
    random one is the S₀ baseline). Loss: ``cosine_weight``·(1 − cos) to the teacher embedding
    + ``relation_weight``·``relation_mse`` on the in-batch similarity matrices; AdamW, cosine
    schedule, optional ``token_dropout`` (see `SentencePairs`). With ``val_texts``/``val_emb``
    the weights with the best validation Spearman (checked every ``eval_every`` steps) are
    kept. Scores (`embedding_agreement`) on ``eval_texts``/``eval_emb`` when given.
    ``extra_losses`` are added to those two terms (student and teacher embeddings are ``logits``).
    """
    t0 = time.perf_counter()
    timings, info = {}, {}
    with num_threads(threads):
        torch.manual_seed(seed)
        if isinstance(student, str):
            student = models.create(student, **{"out_dim": teacher_emb.shape[1], **(student_cfg or {})})
        init = "random"
        if word_vectors is not None:
            info["init"], init = init_from_contexts(student, texts, word_vectors), "teacher-contexts"
        elif word_encoder is not None:
            info["init"] = init_from_teacher_words(student, texts, word_encoder, max_words=init_words)
            init = "teacher-words"
        timings["init_s"] = time.perf_counter() - t0
        ids, mask = student.tokenizer.encode(texts)
        losses = []
        if cosine_weight:
            losses.append(LossSpec("hidden_cosine", cosine_weight, {"student_key": "logits", "teacher_key": "logits",
                                                                    "mask_key": None}))
        if relation_weight:
            losses.append(LossSpec("relation_mse", relation_weight, {"student_key": "logits", "teacher_key": "logits",
                                                                   "mask_key": None}))
        losses += list(extra_losses)
        cfg = DistillConfig(losses=losses or [LossSpec("hidden_cosine")], steps=steps, batch_size=batch_size,
                            optimizer="adamw", lr=lr, weight_decay=weight_decay, schedule="cosine",
                            warmup_steps=min(50, steps // 10), grad_clip=1.0, eval_every=max(1, eval_every),
                            seed=seed, progress=progress)
        if train:
            teacher = TargetLookup(ids, mask, teacher_emb)
            best = None
            if val_texts is not None and val_emb is not None:
                v_ids, v_mask = student.tokenizer.encode(val_texts)
                best = BestState(lambda m: {"val_spearman": embedding_agreement(m(v_ids, v_mask), val_emb)["spearman"]},
                                  "val_spearman")
            t1 = time.perf_counter()
            distill(teacher, student, SentencePairs(ids, mask, token_dropout), cfg, eval_fn=best)
            timings["student_train_s"] = time.perf_counter() - t1
            info["history"] = student.distill_history
            if best is not None:
                best.restore(student)
                info.update(best_eval=best.best_step, val_spearman=best.best)
        student.eval()
    metrics = {"train_texts": len(texts), "trained": train, "init": init}
    if eval_texts is not None and eval_emb is not None:
        metrics.update(embedding_agreement(student.encode_texts(eval_texts), eval_emb))
    timings["total_s"] = time.perf_counter() - t0
    return RecipeResult(student, None, metrics, cfg, timings, info)


