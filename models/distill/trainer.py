"""Distillation trainer: weighted losses over teacher/student outputs, staged recipes,
deterministic sampling, safetensors checkpoints with optimizer state, resume, teacher-output
cache, and data parallelism over `torch.distributed` (gloo on CPU).

Example::

    from edgesdk.models.distill import DistillConfig, LossSpec, TensorData, distill
    data = TensorData({"x": x_train, "labels": y_train}, inputs=("x",))
    cfg = DistillConfig(losses=[LossSpec("kl", 0.9, {"temperature": 2.0}), LossSpec("ce", 0.1)],
                        steps=500, batch_size=64, lr=3e-3, checkpoint_dir="ckpt")
    student = distill(teacher, student, data, cfg)

Determinism: the batch of step ``s`` is drawn from a generator seeded by ``(seed, s)`` and the
global RNG is reseeded per step, so a run killed at step ``k`` and resumed from its last
checkpoint follows the same trajectory as an uninterrupted one.

Data parallelism: under ``torchrun`` (or ``edgesdk distill --nproc N``) every rank draws the
same global batch of ``batch_size * world_size`` samples and trains on its slice; gradients are
averaged by DistributedDataParallel, so N processes follow the curve of one process with an
N-times larger batch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from edgesdk.models.distill.hooks import FeatureHooks
from edgesdk.models.distill.losses import get_loss


# ------------------------------------------------------------------------------ config

@dataclass
class LossSpec:
    """One term of the objective: ``weight * get_loss(name, **kwargs)(student, teacher, batch)``."""

    name: str
    weight: float = 1.0
    kwargs: dict = field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.weight, (int, float)) or not math.isfinite(self.weight):
            raise ValueError(f"LossSpec({self.name!r}).weight must be a finite number, got {self.weight!r}")


@dataclass
class Stage:
    """A stage of a staged recipe: its own losses, frozen parameters and step count.

    ``freeze`` lists parameter-name prefixes of the student kept fixed during this stage;
    ``train_only`` (if set) freezes everything else.
    """

    name: str
    steps: int
    losses: list[LossSpec]
    freeze: list[str] = field(default_factory=list)
    train_only: list[str] | None = None
    lr: float | None = None

    def __post_init__(self):
        if not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"Stage {self.name!r}: steps must be a positive int, got {self.steps!r}")
        self.losses = [LossSpec(**ls) if isinstance(ls, dict) else ls for ls in self.losses]
        if not self.losses:
            raise ValueError(f"Stage {self.name!r} has no losses")


@dataclass
class DistillConfig:
    losses: list[LossSpec] = field(default_factory=lambda: [LossSpec("kl")])
    stages: list[Stage] = field(default_factory=list)   # staged recipe; overrides losses/steps
    steps: int = 1000
    batch_size: int = 64                                   # per process
    optimizer: str = "adamw"                               # adamw | adam | sgd
    lr: float = 1e-3
    weight_decay: float = 0.0
    schedule: str = "cosine"                               # constant | cosine | linear
    warmup_steps: int = 0
    grad_clip: float | None = 1.0
    eval_every: int = 100
    seed: int = 0
    checkpoint_dir: str | None = None
    checkpoint_every: int = 100
    resume: bool = False
    cache_teacher: str | None = None                       # directory for cached teacher outputs
    student_features: dict = field(default_factory=dict)  # feature key -> student module name
    teacher_features: dict = field(default_factory=dict)  # feature key -> teacher module name
    quantize_aware: str | None = None                      # "int8": QAT (applied by edgesdk.distill)
    progress: bool = True

    OPTIMIZERS = ("adamw", "adam", "sgd")
    SCHEDULES = ("constant", "cosine", "linear")

    def __post_init__(self):
        self.losses = [LossSpec(**ls) if isinstance(ls, dict) else ls for ls in self.losses]
        self.stages = [Stage(**st) if isinstance(st, dict) else st for st in self.stages]
        if self.optimizer not in self.OPTIMIZERS:
            raise ValueError(f"optimizer {self.optimizer!r} is not one of {self.OPTIMIZERS}")
        if self.schedule not in self.SCHEDULES:
            raise ValueError(f"schedule {self.schedule!r} is not one of {self.SCHEDULES}")
        for k in ("steps", "batch_size", "eval_every", "checkpoint_every"):
            if not isinstance(getattr(self, k), int) or getattr(self, k) < 1:
                raise ValueError(f"DistillConfig.{k} must be a positive int, got {getattr(self, k)!r}")
        if not (self.lr > 0):
            raise ValueError(f"DistillConfig.lr must be > 0, got {self.lr!r}")
        if self.quantize_aware not in (None, "int8"):
            raise ValueError(f"quantize_aware must be None or 'int8', got {self.quantize_aware!r}")
        if self.resume and not self.checkpoint_dir:
            raise ValueError("resume=True needs checkpoint_dir")
        if not self.losses and not self.stages:
            raise ValueError("DistillConfig needs losses or stages")

    @property
    def plan(self) -> list[Stage]:
        return self.stages or [Stage("distill", self.steps, self.losses)]

    @property
    def total_steps(self) -> int:
        return sum(s.steps for s in self.plan)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "DistillConfig":
        valid = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - valid
        if unknown:
            raise ValueError(f"unknown DistillConfig keys {sorted(unknown)}; valid: {', '.join(sorted(valid))}")
        return cls(**d)


# ------------------------------------------------------------------------------ data

class TensorData:
    """In-memory samples: a dict of tensors sharing their first dimension.

    ``inputs`` names the tensors fed to the models (positionally); the rest (``labels``,
    ``mask``...) reach the losses through ``batch``.
    """

    def __init__(self, tensors: dict[str, torch.Tensor], inputs=("x",)):
        if not tensors:
            raise ValueError("TensorData needs at least one tensor")
        sizes = {k: len(v) for k, v in tensors.items()}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"tensors have different first dimensions: {sizes}")
        missing = [k for k in inputs if k not in tensors]
        if missing:
            raise ValueError(f"inputs {missing} are not among the tensors {sorted(tensors)}")
        self.tensors, self.inputs, self.n = tensors, tuple(inputs), next(iter(sizes.values()))

    def sample(self, step: int, batch_size: int, seed: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(hash_int(seed, step))
        idx = torch.randint(0, self.n, (batch_size,), generator=g)
        return {k: v[idx] for k, v in self.tensors.items()}


def hash_int(*parts) -> int:
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:7], "little")


# ------------------------------------------------------------------------------ helpers

def as_outputs(out) -> dict[str, torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return {"logits": out}
    if isinstance(out, dict):
        return dict(out)
    if isinstance(out, (tuple, list)):
        return {"logits": out[0], **{f"out{i}": o for i, o in enumerate(out[1:], 1)}}
    raise TypeError(f"model output {type(out).__name__} is not a tensor, dict or tuple")


def _lr_factor(cfg: DistillConfig, step: int, total: int) -> float:
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
    if cfg.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    if cfg.schedule == "linear":
        return max(0.0, 1 - progress)
    return 1.0


def _optimizer(cfg: DistillConfig, params, lr: float):
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=cfg.weight_decay)
    cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=lr, weight_decay=cfg.weight_decay)


def _dist():
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        return dist, dist.get_rank(), dist.get_world_size()
    return None, 0, 1


def _maybe_init_distributed():
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); gloo on CPU."""
    import torch.distributed as dist
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("gloo")


def finish_distributed() -> None:
    """Wait for every rank, then leave the process group.

    A rank that exits while the group is alive takes gloo's worker threads down with it and
    aborts ("terminate called without an active exception"), failing the whole torchrun job.
    """
    dist, _, _ = _dist()
    if dist is not None:
        dist.barrier()
        dist.destroy_process_group()


# ------------------------------------------------------------------------------ checkpoints

def _flatten_optimizer(opt) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors, meta = {}, {"param_groups": sd["param_groups"], "state": {}}
    for pid, st in sd["state"].items():
        meta["state"][str(pid)] = {}
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"optim.{pid}.{k}"] = v.detach().clone().contiguous()
                meta["state"][str(pid)][k] = "tensor"
            else:
                meta["state"][str(pid)][k] = v
    return tensors, meta


def _unflatten_optimizer(opt, tensors, meta) -> None:
    state = {}
    for pid, st in meta["state"].items():
        state[int(pid)] = {k: (tensors[f"optim.{pid}.{k}"] if v == "tensor" else v) for k, v in st.items()}
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


class Checkpointer:
    """``step-N.safetensors`` (student + loss modules + optimizer tensors) and ``latest.json``."""

    def __init__(self, directory: str | Path, keep: int = 2):
        self.dir = Path(directory)
        self.keep = keep

    def save(self, step: int, stage: int, student: nn.Module, losses: nn.ModuleDict, opt, history: list) -> Path:
        from safetensors.torch import save_file
        self.dir.mkdir(parents=True, exist_ok=True)
        tensors = {f"student.{k}": v.detach().clone().contiguous() for k, v in student.state_dict().items()}
        tensors.update({f"losses.{k}": v.detach().clone().contiguous() for k, v in losses.state_dict().items()})
        opt_t, opt_meta = _flatten_optimizer(opt)
        tensors.update(opt_t)
        path = self.dir / f"step-{step:08d}.safetensors"
        tmp = path.with_suffix(".tmp")
        save_file(tensors, str(tmp), metadata={"step": str(step)})
        _fsync_replace(tmp, path)
        meta = {"step": step, "stage": stage, "file": path.name, "optimizer": opt_meta,
                "loss_state": {n: getattr(m, "extra_state", lambda: {})() for n, m in losses.items()},
                "history": history}
        tmpj = self.dir / "latest.json.tmp"
        tmpj.write_text(json.dumps(meta))
        _fsync_replace(tmpj, self.dir / "latest.json")
        for old in sorted(self.dir.glob("step-*.safetensors"))[:-self.keep]:
            old.unlink(missing_ok=True)
        return path

    def latest(self) -> dict | None:
        p = self.dir / "latest.json"
        if not p.is_file():
            return None
        meta = json.loads(p.read_text())
        if not (self.dir / meta["file"]).is_file():
            return None
        return meta

    def load(self, meta: dict, student: nn.Module, losses: nn.ModuleDict, opt) -> None:
        from safetensors.torch import load_file
        t = load_file(str(self.dir / meta["file"]))
        student.load_state_dict({k[len("student."):]: v for k, v in t.items() if k.startswith("student.")})
        losses.load_state_dict({k[len("losses."):]: v for k, v in t.items() if k.startswith("losses.")})
        for n, m in losses.items():
            if hasattr(m, "load_extra_state") and n in meta.get("loss_state", {}):
                m.load_extra_state(meta["loss_state"][n])
        if opt is not None:
            _unflatten_optimizer(opt, t, meta["optimizer"])


def _fsync_replace(tmp: Path, final: Path) -> None:
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, final)


# ------------------------------------------------------------------------------ teacher cache

class TeacherCache:
    """Teacher outputs on disk (safetensors), keyed by the hash of the batch's input tensors."""

    def __init__(self, directory: str | Path):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.hits = self.misses = 0

    @staticmethod
    def key(inputs: list[torch.Tensor]) -> str:
        h = hashlib.sha256()
        for t in inputs:
            a = t.detach().cpu().contiguous()
            h.update(f"{a.dtype}{tuple(a.shape)}".encode())
            h.update(a.numpy().tobytes())
        return h.hexdigest()[:32]

    def get(self, key: str):
        from safetensors.torch import load_file
        p = self.dir / f"{key}.safetensors"
        if p.is_file():
            self.hits += 1
            return load_file(str(p))
        self.misses += 1
        return None

    def put(self, key: str, outputs: dict[str, torch.Tensor]) -> None:
        from safetensors.torch import save_file
        p = self.dir / f"{key}.safetensors"
        tmp = p.with_suffix(".tmp")
        save_file({k: v.detach().contiguous() for k, v in outputs.items()}, str(tmp))
        os.replace(tmp, p)


# ------------------------------------------------------------------------------ trainer

@dataclass
class StepLog:
    step: int
    stage: str
    loss: float
    terms: dict
    lr: float
    metrics: dict = field(default_factory=dict)


def _freeze(student: nn.Module, stage: Stage) -> int:
    def under(name: str, prefixes) -> bool:  # "0" covers "0.weight", not "10.weight"
        return any(name == f or name.startswith(f + ".") for f in prefixes)

    n_trainable = 0
    for name, p in student.named_parameters():
        frozen = under(name, stage.freeze)
        if stage.train_only is not None:
            frozen = frozen or not under(name, stage.train_only)
        p.requires_grad_(not frozen)
        n_trainable += p.numel() if not frozen else 0
    return n_trainable


def distill(teacher: nn.Module, student: nn.Module, data, config: DistillConfig,
            eval_fn: Callable[[nn.Module], dict] | None = None,
            on_step: Callable[[StepLog], None] | None = None) -> nn.Module:
    """Train ``student`` to match ``teacher`` on ``data`` with ``config``; returns the student.

    ``data`` is a `TensorData` or any object with ``sample(step, batch_size, seed) -> dict`` and
    an ``inputs`` tuple naming the tensors fed to both models. ``eval_fn(student) -> {metric:
    value}`` runs every ``eval_every`` steps (and at the end); ``on_step`` receives every
    `StepLog` (progress display). The history is kept in ``student.distill_history``.
    """
    _maybe_init_distributed()
    dist, rank, world = _dist()
    torch.manual_seed(config.seed)
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)

    plan = config.plan
    # loss modules of every stage (projectors have parameters and are trained with the student)
    loss_modules = nn.ModuleDict()
    for si, st in enumerate(plan):
        for li, ls in enumerate(st.losses):
            loss_modules[f"s{si}_{li}_{ls.name}"] = get_loss(ls.name, **ls.kwargs)

    # FeatureHooks takes {module name: feature key}; the config maps feature key -> module name
    s_hooks = (FeatureHooks(student, {m: k for k, m in config.student_features.items()})
               if config.student_features else None)
    t_hooks = (FeatureHooks(teacher, {m: k for k, m in config.teacher_features.items()})
               if config.teacher_features else None)
    cache = TeacherCache(config.cache_teacher) if config.cache_teacher else None
    ckpt = Checkpointer(config.checkpoint_dir) if config.checkpoint_dir and rank == 0 else None
    ckpt_reader = Checkpointer(config.checkpoint_dir) if config.checkpoint_dir else None

    history: list[dict] = []
    start_step, start_stage = 0, 0
    total = config.total_steps
    opt = None
    meta = ckpt_reader.latest() if (config.resume and ckpt_reader) else None
    if meta is not None:
        start_step, start_stage = meta["step"], meta["stage"]
        history = meta.get("history", [])

    global_step = 0
    try:
        for si, stage in enumerate(plan):
            stage_end = global_step + stage.steps
            if stage_end <= start_step:
                global_step = stage_end
                continue
            _freeze(student, stage)
            model = student
            if dist is not None:  # re-wrapped per stage: DDP binds to the parameters that train
                model = nn.parallel.DistributedDataParallel(student, find_unused_parameters=True)
            terms = {k: m for k, m in loss_modules.items() if k.startswith(f"s{si}_")}
            # a stage whose losses never read the teacher (e.g. a CE warm-up) skips its forward: the
            # teacher runs in eval mode under no_grad and draws no random numbers, so the student's
            # training is the same, only cheaper
            needs_teacher = bool(t_hooks) or any(getattr(m, "reads_teacher", True) for m in terms.values())
            params = [p for p in student.parameters() if p.requires_grad]
            params += [p for m in terms.values() for p in m.parameters()]
            base_lr = stage.lr or config.lr
            opt = _optimizer(config, params, base_lr)
            if meta is not None and si == start_stage:
                stage_start = stage_end - stage.steps
                # a checkpoint written at a stage boundary carries the previous stage's optimizer
                ckpt_reader.load(meta, student, loss_modules, opt if start_step > stage_start else None)
                global_step = start_step
            model.train()
            while global_step < stage_end:
                torch.manual_seed(hash_int(config.seed, global_step, "rng"))
                full = data.sample(global_step, config.batch_size * world, config.seed)
                batch = {k: v[rank::world] if isinstance(v, torch.Tensor) else v for k, v in full.items()}
                inputs = [batch[k] for k in data.inputs]
                # teacher (cached on disk when asked)
                t_out = None if needs_teacher else {}
                if cache is not None and needs_teacher:
                    key = cache.key(inputs)
                    t_out = cache.get(key)
                if t_out is None:
                    with torch.no_grad():
                        t_out = as_outputs(teacher(*inputs))
                        if t_hooks:
                            t_out.update(t_hooks.features)
                    if cache is not None:
                        cache.put(key, t_out)
                s_out = as_outputs(model(*inputs))
                if s_hooks:
                    s_out.update(s_hooks.features)
                lr = base_lr * _lr_factor(config, global_step - (stage_end - stage.steps), stage.steps)
                for g in opt.param_groups:
                    g["lr"] = lr
                loss = torch.zeros(())
                parts = {}
                for (k, m), ls in zip(terms.items(), stage.losses):
                    v = m(s_out, t_out, batch)
                    parts[ls.name] = float(v.detach())
                    loss = loss + ls.weight * v
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"step {global_step}: loss is {float(loss)} ({parts})")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if config.grad_clip:
                    torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
                opt.step()
                for m in terms.values():
                    if hasattr(m, "update"):
                        m.update(progress=(global_step + 1) / total)  # e.g. TAID's schedule for t
                reported = loss.detach().clone()
                if dist is not None:
                    dist.all_reduce(reported)
                    reported /= world
                global_step += 1
                log = StepLog(global_step, stage.name, float(reported), parts, lr)
                if eval_fn and (global_step % config.eval_every == 0 or global_step == total):
                    student.eval()
                    with torch.no_grad():
                        log.metrics = eval_fn(student)
                    student.train()
                history.append(dataclasses.asdict(log))
                if on_step and rank == 0:
                    on_step(log)
                if ckpt and (global_step % config.checkpoint_every == 0 or global_step == stage_end):
                    ckpt.save(global_step, si if global_step < stage_end else si + 1, student, loss_modules,
                              opt, history)
    finally:
        for h in (s_hooks, t_hooks):
            if h:
                h.remove()
    student.eval()
    student.distill_history = history
    if cache is not None:
        student.distill_cache_stats = {"hits": cache.hits, "misses": cache.misses}
    return student
