"""`Row`: one model x target x scheme of a pipeline run, as the executors fill it, the lockfile
(`results.json`) stores it, and the report and `edgesdk diff` read it back.

Fields come in groups that are written together: the identity and quality fields always; the
artifact fields once a conversion produced an artifact (``path`` set); the profile fields once
it was profiled (``samples_ms`` set); the remaining optional fields when they are not None.
`to_dict` writes exactly those, so a row that was never profiled has no latency keys at all
(rather than nulls), and `Row.from_dict` reads a ``results.json`` entry back (keys a newer
version wrote are kept in ``extra``). Rows also read like that mapping (``row["p50_ms"]``,
``row.get("gate")``, ``"gate" in row``) for code written against the JSON.

Example::

    from edgesdk import lockfile
    rows = lockfile.rows(lockfile.read("edgesdk-out/demo/results.json"))
    print([(r.key, r.status, r.p50_ms) for r in rows])
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

# status: ok | convert-only | rejected (accuracy gate) | failed | skipped | cancelled
DELIVERED = ("ok", "convert-only", "skipped")


@dataclass
class Row:
    # ---- identity and quality (always written)
    family: str
    model: str
    target: str
    device: str
    format: str
    scheme: str
    runs: str                               # yes | simulated | software GPU | convert-only
    status: str | None = None
    message: str = ""
    params: int | None = None
    metric: str | None = None
    reference: str | None = None
    reference_quality: float | None = None
    fp32_quality: float | None = None
    quality: float | None = None
    weights_sha256: str | None = None
    # ---- conversion
    conversion_cached: bool | None = None
    # ---- the artifact (written together once ``path`` is set)
    path: str | None = None
    artifact: str | None = None
    size_bytes: int | None = None
    conversion_s: float | None = None
    verification: str | None = None
    max_abs_err: float | None = None
    min_cosine: float | None = None
    placement: dict | None = None
    programs: list | None = None
    label: str | None = None
    device_label: str | None = None
    gate: dict | None = None                # max_drop, drop, passed, drop_basis (also on rejected rows)
    kept_float: list | None = None          # (these three: written when not None)
    calibration: dict | None = None
    hashes: dict | None = None
    versions: dict | None = None
    # ---- the profile (written together once ``samples_ms`` is set)
    p50_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    mean_ms: float | None = None
    std_ms: float | None = None
    cv: float | None = None
    noisy: bool | None = None
    load_ms: float | None = None
    first_run_ms: float | None = None
    peak_rss_mb: float | None = None
    threads: int | None = None
    backend: str | None = None
    backend_version: str | None = None
    device_name: str | None = None
    program: str | None = None
    samples_ms: list | None = None
    ops: list | None = None
    ops_note: str | None = None
    warmup: int | None = None
    iters: int | None = None
    # ---- optional (written when not None)
    generation: dict | None = None
    program_profiles: dict | None = None
    quality_error: str | None = None
    quality_drop: float | None = None
    quality_subset: dict | None = None      # quality on a subset of the held-out data (emulated-NPU generation)
    quality_vs_reference: float | None = None
    profiled_on: dict | None = None         # host, device (and Ray node) that measured the latency
    attempts: list | None = None            # earlier tries that a lost worker ended, when there were any
    # the profile beyond latency (`edgesdk.lockfile.profile_fields`): the artifact's own memory
    # (deltas over RSS before load), FLOPs and GFLOP/s, steady state, the thread sweep
    mem_init_mb: float | None = None
    mem_peak_mb: float | None = None
    memory: dict | None = None
    flops: float | None = None
    gflops_per_s: float | None = None
    pct_of_peak: float | None = None
    compute: dict | None = None
    settled: bool | None = None
    steady_state: dict | None = None
    warmup_detail: dict | None = None
    host: dict | None = None
    threads_sweep: dict | None = None
    recommended: bool | None = None         # the model's pick over every target x scheme (edgesdk.auto's rule)
    target_pick: bool | None = None         # the pick within its target
    extra: dict = field(default_factory=dict)  # keys this version does not know (read from a newer file)

    @property
    def key(self) -> str:
        """``family/model/target/scheme``: how the lockfile and `edgesdk diff` name the row."""
        return f"{self.family}/{self.model}/{self.target}/{self.scheme}"

    @property
    def delivered(self) -> bool:
        return self.status in DELIVERED

    def update(self, **kw) -> "Row":
        for k, v in kw.items():
            if k not in _FIELDS:
                raise AttributeError(f"Row has no field {k!r}; fields: {', '.join(_FIELDS)}")
            setattr(self, k, v)
        return self

    # ---- the results.json form
    def _present(self, name: str) -> bool:
        if name in _ALWAYS:
            return True
        if name in _ARTIFACT:
            return self.path is not None
        if name in _PROFILE:
            return self.samples_ms is not None
        return name in _FIELDS and name != "extra" and getattr(self, name) is not None

    def to_dict(self) -> dict:
        d = {f: getattr(self, f) for f in _FIELDS if f != "extra" and self._present(f)}
        d.update(self.extra)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Row":
        """A row from a ``results.json`` artifact entry (the lockfile's ``key`` and ``metrics``
        are derived, so they are dropped; unknown keys go to ``extra``)."""
        known = {k: v for k, v in d.items() if k in _FIELDS and k != "extra"}
        extra = {k: v for k, v in d.items() if k not in _FIELDS and k not in ("key", "metrics")}
        return cls(**known, extra=extra)

    # ---- read like the results.json mapping
    def __getitem__(self, k: str) -> Any:
        if k == "key":
            return self.key
        if k in self.extra:
            return self.extra[k]
        if k in _FIELDS and self._present(k):
            return getattr(self, k)
        raise KeyError(k)

    def get(self, k: str, default=None) -> Any:
        try:
            return self[k]
        except KeyError:
            return default

    def __contains__(self, k: str) -> bool:
        return self.get(k, _MISSING) is not _MISSING

    def keys(self):
        return self.to_dict().keys()

    def items(self):
        return self.to_dict().items()


_MISSING = object()
_FIELDS = tuple(f.name for f in dataclasses.fields(Row))
_ALWAYS = frozenset(_FIELDS[:_FIELDS.index("weights_sha256") + 1])
_ARTIFACT = frozenset(_FIELDS[_FIELDS.index("path"):_FIELDS.index("versions") + 1]) - {"gate", "kept_float",
                                                                                       "calibration"}
_PROFILE = frozenset(_FIELDS[_FIELDS.index("p50_ms"):_FIELDS.index("iters") + 1])
