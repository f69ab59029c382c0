"""`edgesdk.pipeline(config) -> PipelineResult`: teacher -> distilled students -> quantized, converted,
verified, profiled artifacts -> `results.json` (the deployment lockfile) + `report.html`/`report.md`.

Example::

    import edgesdk
    res = edgesdk.pipeline({
        "model": "make_model.py:build",                 # or file.pt2, or a local Hugging Face folder
        "targets": ["onnx-cpu", "executorch-xnnpack"],
        "quantize": {"schemes": "recommended", "max_drop": 0.02},
        "output": {"dir": "out/deploy"},
    }, executor="local")                                # or "serial", "ray", "ray://HOST:PORT"
    print(res.report_html, [(r.target, r.scheme, r.p50_ms) for r in res.rows])

The same from a YAML file: ``edgesdk deploy deploy.yaml [--executor ...]``. Every key is optional
except that a config names a ``model`` or a ``distill`` section (or both); unknown keys are a
`ConfigError` listing the valid ones. ``docs/demo.md`` documents every key; `edgesdk demo` runs
``sdk/demo.yaml`` through this function.

Stages: (1) distil each ``distill`` entry's students with its family (`edgesdk.families`; trained
teachers and students come from the content-addressed cache, `edgesdk.cache`, when nothing
changed); (2) for every student (and the user's ``model``) x target x scheme (`plan`):
`edgesdk.convert` with the calibration data and the accuracy gate (``max_drop``), verified against
PyTorch; (3) `runtime.profile` every artifact that runs here and score it with the family's
quality function (`execute`); (4) write ``results.json``, ``report.md`` and ``report.html``
(`record`). A failed gate or conversion is recorded in its row (``status``) and the run goes on,
unless ``quantize.on_fail: error``. Where the jobs run is the executor's choice
(`edgesdk.pipeline.executor`); the rows are the same.

The package: `config` (the YAML schema), `entries` (models to deploy), `plan` (jobs), `execute`
(job -> `Row`), `row`, `record`, and the executors `executor` (serial), `local`, `cluster` (Ray).
"""

from __future__ import annotations

import time
from pathlib import Path

from edgesdk.pipeline.config import (CalibrationSpec, DistillSpec, ModelSpec, OutputSpec, PipelineConfig, ProfileSpec,
                                 QuantizeSpec, load_config)
from edgesdk.pipeline.plan import QUICK_TARGETS, calibrated_schemes, recommended_scheme, schemes_for  # noqa: F401
from edgesdk.pipeline.record import PipelineResult
from edgesdk.pipeline.row import Row
from edgesdk.progress import Progress


def pipeline(config, *, progress: Progress | bool | None = None, quick: bool | None = None,
             executor=None) -> PipelineResult:
    """Run a deployment pipeline (see the module docstring and ``docs/demo.md``).

    ``config``: a `PipelineConfig`, a mapping, or a YAML path. ``quick=True`` shrinks training
    and profiling to a smoke run (also ``quick: true`` in the config). ``executor``: ``"local"``
    (the default unless ``EDGESDK_EXECUTOR`` names another: conversions in a process pool, then
    profiling one job at a time), ``"serial"``,
    ``"ray"`` (the cluster in ``RAY_ADDRESS``, else a local one) or ``"ray://HOST:PORT"``.
    """
    from edgesdk.pipeline.entries import entries
    from edgesdk.pipeline.executor import RunContext
    from edgesdk.pipeline.executors import make_executor
    from edgesdk.pipeline.plan import jobs_for, select_targets
    from edgesdk.pipeline.record import record
    cfg = load_config(config)
    quick = cfg.quick if quick is None else bool(quick)
    if progress is None or progress is True:
        progress = Progress(True)
    elif progress is False:
        progress = Progress(False)
    out = Path(cfg.output.dir)
    t_start = time.perf_counter()
    targets = select_targets(cfg, quick)  # a quick (smoke) run: only what runs here
    warmup, iters = cfg.profile.warmup, cfg.profile.iters
    if quick:
        warmup, iters = (warmup if warmup == "auto" else min(warmup, 3)), min(iters, 30)
    families: list[dict] = []
    ctx = RunContext(cfg=cfg, art_dir=out / "artifacts", warmup=warmup, iters=iters, progress=progress)
    with make_executor(executor, ctx) as ex:
        n_jobs = 0
        for batch in entries(cfg, progress, quick, families, ctx.timings, ahead=ex):
            for e in batch:
                e.prepare()
                jobs = jobs_for(e, len(ex.entries), targets, cfg, quick, start=n_jobs)
                n_jobs += len(jobs)
                ex.submit(e, jobs)
        progress.stage(f"{len(ex.entries)} model(s) x {len(targets)} target(s): {ctx.planned} artifacts "
                       f"({ex.name} executor)")
        rows = ex.results()
        info = ex.describe()
    return record(cfg, rows, families, ctx.timings, out, t_start, progress, executor=info)


__all__ = ["PipelineConfig", "ModelSpec", "DistillSpec", "QuantizeSpec", "CalibrationSpec", "ProfileSpec",
           "OutputSpec", "PipelineResult", "Row", "pipeline", "load_config", "recommended_scheme", "schemes_for"]
