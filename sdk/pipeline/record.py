"""Recording a run: ``results.json`` (the lockfile, `edgesdk.lockfile`) and ``report.html`` /
``report.md`` (`edgesdk.report`) from the rows, plus the `PipelineResult` handed back.

Example::

    res = edgesdk.pipeline("deploy.yaml")
    print(res.results_json, res.report_html, res.ok)
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from edgesdk.pipeline.config import PipelineConfig
from edgesdk.pipeline.row import Row
from edgesdk.progress import Progress


@dataclass
class PipelineResult:
    """What `edgesdk.pipeline` returns: one `Row` per model x target x scheme (see ``results.json``)."""

    config: PipelineConfig
    rows: list[Row]
    families: list[dict]
    out_dir: Path
    results_json: Path
    report_html: Path | None
    report_md: Path | None
    timings: dict
    cache: dict

    @property
    def ok(self) -> bool:
        return all(r.delivered for r in self.rows)


def record(cfg: PipelineConfig, rows: list[Row], families: list[dict], timings: dict, out: Path, t_start: float,
           progress: Progress, executor: dict | None = None) -> PipelineResult:
    """Write ``results.json`` and (``output.report``) the report; returns the `PipelineResult`."""
    from edgesdk import lockfile
    out.mkdir(parents=True, exist_ok=True)
    timings["total_s"] = time.perf_counter() - t_start
    cache_info = {"hits": sum(len(f["cache_hits"]) for f in families),
                  "misses": sum(len(f["cache_misses"]) for f in families), "dir": cfg.output.cache}
    from edgesdk.auto import recommend
    recommendations = recommend(rows)  # marks rows `recommended` / `target_pick` (edgesdk.auto's rule)
    results = lockfile.build(cfg, rows, families, timings, cache_info, executor=executor)
    results["recommendations"] = recommendations
    results_path = lockfile.write(results, out / "results.json")
    html = md = None
    if cfg.output.report:
        from edgesdk import report
        progress.stage("writing the report")
        html, md = report.render(results, out)
        timings["report_s"] = time.perf_counter() - t_start - timings["total_s"]
    return PipelineResult(cfg, rows, families, out, results_path, html, md, timings, cache_info)
