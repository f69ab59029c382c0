"""Pick the executor of one pipeline run by name (``serial``, ``local``, ``ray``, ``ray://HOST:PORT``).

The executors live one per file (`executor` has the base class and ``serial``, `local` the
process pool, `cluster` Ray); this module is the only one that knows all of them.
"""

from __future__ import annotations

from edgesdk.runtime.errors import ConfigError
from edgesdk.pipeline.executor import ENV, EXECUTORS, Executor, RunContext, SerialExecutor, default_executor
from edgesdk.pipeline.local import LocalExecutor


def make_executor(spec, ctx: RunContext) -> Executor:
    """``serial``, ``local``, ``ray`` or ``ray://HOST:PORT`` (or an `Executor` subclass instance
    factory) -> the executor for one run."""
    named = spec is not None
    if spec is None:
        spec = default_executor()
    if isinstance(spec, str):
        if spec == "serial":
            return SerialExecutor(ctx)
        if spec == "local":
            return LocalExecutor(ctx)
        if spec == "ray" or spec.startswith("ray://") or spec.startswith("ray:"):
            from edgesdk.pipeline.cluster import RayExecutor  # Ray is optional: imported only when asked for
            return RayExecutor(ctx, address=None if spec == "ray" else spec)
    where = "" if named else f" (from {ENV})"
    raise ConfigError(f"executor {spec!r}{where}: expected one of {', '.join(EXECUTORS)}")
