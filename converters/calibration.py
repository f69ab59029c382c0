"""Calibration and evaluation data for quantization: load, validate, hash, split.

``calibration=`` (and ``eval_data=``) accept:

- an iterable of input tuples (tensors or numpy arrays), one tuple per sample;
- a callable returning such an iterable (e.g. a generator function);
- a ``.npz`` file: one array per input (by input name, or ``arr_0``, ``arr_1``... in order)
  whose first axis indexes samples. For a batch-1 input of shape ``(1, *rest)`` an array of
  shape ``(N, *rest)`` is also accepted and read as N samples.

Every sample must match the model's example inputs in count, shape and dtype. The sha256 of
the samples (dtype, shape and bytes of every tensor, in order) goes into the manifest.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from edgesdk.runtime.errors import ConfigError

MIN_CALIBRATION_SAMPLES = 8
HOLDOUT_FRACTION = 0.25


@dataclass
class SampleSet:
    samples: list[tuple[torch.Tensor, ...]]
    source: str
    sha256: str

    def __len__(self) -> int:
        return len(self.samples)

    def describe(self) -> dict:
        return {"samples": len(self.samples), "source": self.source, "sha256": self.sha256}


def digest(samples) -> str:
    h = hashlib.sha256()
    for sample in samples:
        for t in sample:
            a = t.detach().cpu().contiguous().numpy()
            h.update(f"{a.dtype.str}{a.shape}".encode())
            h.update(a.tobytes())
    return h.hexdigest()


def _to_tensor(v, ref: torch.Tensor, where: str, free: dict | None = None) -> torch.Tensor:
    if isinstance(v, np.ndarray):
        v = torch.from_numpy(np.ascontiguousarray(v))
    if not isinstance(v, torch.Tensor):
        raise ConfigError(f"{where}: expected a tensor or numpy array, got {type(v).__name__}")
    if v.dtype != ref.dtype:
        raise ConfigError(f"{where}: dtype {str(v.dtype).removeprefix('torch.')}, expected "
                          f"{str(ref.dtype).removeprefix('torch.')}")
    free = free or {}  # dynamic dims: dim -> (min, max)
    if v.ndim != ref.ndim or any(a != b and (d not in free or not free[d][0] <= a <= free[d][1])
                                 for d, (a, b) in enumerate(zip(v.shape, ref.shape))):
        expected = [f"{free[d][0]}..{free[d][1]}" if d in free else n for d, n in enumerate(ref.shape)]
        raise ConfigError(f"{where}: shape {list(v.shape)}, expected {expected} (the example input's)")
    return v


def _from_npz(path: Path, names: list[str], example: tuple) -> list[tuple]:
    if not path.is_file():
        raise ConfigError(f"{path}: no such calibration file")
    try:
        z = np.load(path, allow_pickle=False)
    except Exception as e:
        raise ConfigError(f"{path}: not a readable .npz file: {e}") from None
    with z:
        keys = list(z.files)
        if set(keys) == set(names):
            arrays = [z[n] for n in names]
        elif keys == [f"arr_{i}" for i in range(len(keys))] and len(keys) == len(names):
            arrays = [z[k] for k in keys]
        else:
            raise ConfigError(f"{path}: arrays {sorted(keys)} do not match the model inputs {names} "
                              "(name them after the inputs, or save them positionally with np.savez(path, *arrays))")
    per_sample = []
    for a, ref, name in zip(arrays, example, names):
        shape = tuple(ref.shape)
        if a.shape[1:] == shape:
            per_sample.append(list(a))
        elif shape and shape[0] == 1 and a.shape[1:] == shape[1:]:
            per_sample.append([s[None] for s in a])
        else:
            raise ConfigError(f"{path}: array {name!r} has shape {list(a.shape)}; expected (N, *{list(shape)})")
    counts = {len(p) for p in per_sample}
    if len(counts) != 1:
        raise ConfigError(f"{path}: inputs have different sample counts {sorted(counts)}")
    return [tuple(p[i] for p in per_sample) for i in range(counts.pop())]


def load_samples(data, names: list[str], example: tuple, what: str = "calibration", dynamic=None) -> SampleSet:
    """Normalise any accepted form of sample data into validated tensor tuples (sizes may vary
    along the dims ``dynamic``, a `converters.shapes.DynamicShapes`, declares)."""
    free = {n: {d: dynamic.ranges[sym] for d, sym in marks.items()} for n, marks in dynamic.inputs.items()} \
        if dynamic else {}
    if isinstance(data, (str, Path)):
        source = str(data)
        raw = _from_npz(Path(data), names, example)
    else:
        source = "callable" if callable(data) else type(data).__name__
        if callable(data):
            data = data()
        try:
            raw = list(data)
        except TypeError:
            raise ConfigError(f"{what} data must be an iterable of input tuples, a callable returning one, "
                              f"or a .npz path; got {type(data).__name__}") from None
    samples = []
    for i, s in enumerate(raw):
        if isinstance(s, (torch.Tensor, np.ndarray)):
            s = (s,)
        if not isinstance(s, (tuple, list)) or len(s) != len(example):
            raise ConfigError(f"{what} sample {i}: expected a tuple of {len(example)} inputs ({', '.join(names)})")
        samples.append(tuple(_to_tensor(v, ref, f"{what} sample {i}, input {n!r}", free.get(n))
                             for v, ref, n in zip(s, example, names)))
    return SampleSet(samples, source, digest(samples))


def require(samples: SampleSet, minimum: int, scheme: str) -> None:
    if len(samples) < minimum:
        raise ConfigError(
            f"{scheme} needs at least {minimum} calibration samples, got {len(samples)}; pass more "
            f"representative inputs (or lower min_calibration= if you know what you are doing)")


def split(samples: SampleSet) -> tuple[SampleSet, SampleSet]:
    """Hold out the last quarter (at least 2 samples) for the accuracy gate."""
    n = len(samples)
    k = max(2, int(round(n * HOLDOUT_FRACTION)))
    cal, ev = samples.samples[: n - k], samples.samples[n - k:]
    return (SampleSet(cal, samples.source + " (calibration split)", digest(cal)),
            SampleSet(ev, samples.source + " (held-out split)", digest(ev)))


# Activations whose calibrated range reaches this are masks (additive -3e4 (fp16-safe) / -1e9 /
# finfo.min attention biases), not signals: one int8 scale over [-3e4, 10] rounds every real score
# to the same level (attention turns uniform). Static schemes keep the ops that produce or consume
# them in float.
MASK_RANGE = 1e4


def is_mask_range(lo, hi) -> bool:
    """Whether a calibrated range [lo, hi] is a mask's (see MASK_RANGE), non-finite included."""
    m = max(abs(float(np.min(lo))), abs(float(np.max(hi))))
    return not np.isfinite(m) or m >= MASK_RANGE
