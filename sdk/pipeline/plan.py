"""The plan: entries x targets x schemes -> `Job`s, decided before anything runs (pure: no
conversion, no I/O). Each job is one row of ``results.json``, in plan order; jobs the plan
alone settles (a scheme the target lacks, calibrated quantization of a multi-program model
without prompts)
carry their reason in ``skip``.

Example::

    from edgesdk.pipeline.plan import jobs_for, select_targets
    targets = select_targets(cfg)
    jobs = jobs_for(entry, 0, targets, cfg, quick=False, start=0)
"""

from __future__ import annotations

from dataclasses import dataclass

from edgesdk.runtime.errors import ConfigError
from edgesdk.pipeline.config import PipelineConfig

# What a quick (smoke) run of `targets: all` converts for generation models (prefill + step):
# the two CPU targets whose exports take seconds (ExecuTorch's lowering of one takes ~30 s, the
# GPU/NPU paths more). Single-program models convert to every target that runs here.
QUICK_TARGETS = ("onnx-cpu", "litert-cpu")


def calibrated_schemes(target) -> tuple[str, ...]:
    from edgesdk.converters.registry import get_converter
    return tuple(get_converter(target.name).calibrated)


def recommended_scheme(target, multi_program: bool = False, module=None) -> str | None:
    """The quantized scheme `schemes: recommended` picks for a target (None: fp32 only): the
    converter's choice for the model's kind where it measured one (`converters.recipes`, e.g.
    int8-dynamic for transformers on onnx-cpu and litert-cpu), else its ``recommended``
    (``recommended_multi_program`` for models with several programs)."""
    from edgesdk.converters.recipes import recommended_scheme as for_model
    from edgesdk.converters.registry import get_converter
    conv = get_converter(target.name)
    if multi_program:
        rec = conv.recommended_multi_program
        return rec if rec in target.quantization else None
    rec = for_model(target.name, module)
    if rec in target.quantization:
        return rec
    return target.quantization[1] if len(target.quantization) > 1 else None


def select_targets(cfg: PipelineConfig, quick: bool = False) -> list:
    """The config's targets (``all``, ``runs-here`` or names); a quick run keeps those that run here."""
    import edgesdk
    all_t = {t.name: t for t in edgesdk.targets()}
    if cfg.targets == "all":
        out = list(all_t.values())
    elif cfg.targets == "runs-here":
        out = [t for t in all_t.values() if t.runs_here]
    else:
        unknown = [t for t in cfg.targets if t not in all_t]
        if unknown:
            raise ConfigError(f"targets: unknown target{'s' if len(unknown) > 1 else ''} "
                              f"{', '.join(map(repr, unknown))}. Available: {', '.join(sorted(all_t))}")
        out = [all_t[n] for n in cfg.targets]
    return [t for t in out if t.runs_here] if quick else out


def schemes_for(target, schemes, quick: bool = False, multi_program: bool = False,
                module=None) -> tuple[list[str], list[str]]:
    """(schemes to convert, schemes asked for but not offered by this target). ``recommended``
    is fp32 + the target's recommended scheme; the recommended scheme alone in a quick run and
    on convert-only targets (nothing is measured there: the deployable scheme is what counts)."""
    quick = quick or not target.runs_here
    if isinstance(schemes, dict):
        schemes = schemes.get(target.name, "recommended")
    if isinstance(schemes, str):
        schemes = [schemes]
    out, missing = [], []
    for s in schemes:
        if s == "auto":  # every scheme the target offers (QAT needs a QAT-trained model): the recommendation picks
            for x in target.quantization:
                if x != "int8-qat" and x not in out:
                    out.append(x)
        elif s == "recommended":
            rec = recommended_scheme(target, multi_program, module)
            for x in ((rec or "fp32",) if quick else ("fp32", rec)):
                if x and x not in out:
                    out.append(x)
        elif s in target.quantization:
            if s not in out:
                out.append(s)
        else:
            missing.append(s)
    return out, missing


@dataclass(frozen=True)
class Job:
    """One model x target x scheme. ``index``: its row's place in the results; ``entry``: index
    of its `Entry`; ``profile``: measured after conversion (the target runs here and profiling
    is on); ``device``: the profiling queue it joins (see `edgesdk.pipeline.devices`)."""

    index: int
    entry: int
    target: object                  # converters.Target
    scheme: str
    name: str                       # artifact directory name
    skip: str | None = None         # settled by the plan: the row is "skipped" with this message
    profile: bool = False
    device: str = "cpu"

    @property
    def offered(self) -> bool:
        """False for a scheme the target does not offer (the row only says so)."""
        return self.scheme in self.target.quantization


def prompts_for(entry) -> bool:
    """A generation model with calibration prompts: its calibrated schemes record each program's
    inputs while the fp32 programs generate (`converters.gen_calibration`)."""
    return bool(entry.multi and getattr(entry, "calibration", None) is not None
                and hasattr(getattr(entry, "module", None), "edge_generation"))


def artifact_name(entry, target, scheme: str) -> str:
    name = f"{entry.family}-{entry.name}-{target.name}-{scheme}" if entry.family != "model" else \
        f"{entry.name}-{target.name}-{scheme}"
    return "".join(c if c.isalnum() or c in "._-" else "-" for c in name)[:128]


def targets_of(entry, targets: list, cfg: PipelineConfig, quick: bool) -> list:
    """A quick run of ``targets: all`` converts generation models to `QUICK_TARGETS` only."""
    if quick and entry.multi and cfg.targets == "all":
        return [t for t in targets if t.name in QUICK_TARGETS]
    return targets


def jobs_for(entry, entry_index: int, targets: list, cfg: PipelineConfig, quick: bool, start: int) -> list[Job]:
    """The jobs of one (prepared) entry, numbered from ``start``."""
    from edgesdk.pipeline.devices import profile_device
    jobs: list[Job] = []
    for t in targets_of(entry, targets, cfg, quick):
        schemes, missing = schemes_for(t, cfg.quantize.schemes, quick, entry.multi, getattr(entry, "module", None))
        for s in missing:
            jobs.append(Job(start + len(jobs), entry_index, t, s, artifact_name(entry, t, s),
                            skip=f"{t.name} has no scheme {s!r} (offers {', '.join(t.quantization)})"))
        for s in schemes:
            skip = None
            if entry.multi and s in calibrated_schemes(t) and not prompts_for(entry):
                skip = (f"{s}: calibrated quantization of a model with several programs needs a generation model "
                        "(edge_generation) and calibration prompts")
            jobs.append(Job(start + len(jobs), entry_index, t, s, artifact_name(entry, t, s), skip=skip,
                            profile=bool(t.runs_here and cfg.profile.enabled),
                            device=profile_device(t, cfg.profile.devices)))
    return jobs


def runs_label(target) -> str:
    if target.runs == "convert-only" or not target.runs_here:
        return "convert-only"
    return target.runs  # yes | simulated | software GPU
