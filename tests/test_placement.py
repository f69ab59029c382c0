"""The manifest's normalized placement block: written by the converters of accelerated targets,
read by the pipeline only through it, and derived the same way for manifests written before it."""

import json

import pytest

from edgesdk.converters import Artifact
from edgesdk.converters.placement import KINDS, of
from edgesdk.pipeline.execute import _placement as row_placement
from edgesdk.runtime.errors import IntegrityError
from edgesdk.runtime.manifest import parse_manifest


def _without_block(art) -> object:
    """The same manifest as an older converter wrote it: no ``placement`` key."""
    d = json.loads((art.path / "manifest.json").read_text())
    d.pop("placement", None)
    return parse_manifest(json.dumps(d))


def _check_shape(b):
    assert b["kind"] in KINDS and (b["fraction"] is None or 0.0 <= b["fraction"] <= 1.0)
    assert set(b) >= {"kind", "fraction", "on_accelerator", "compute_nodes", "fully_accelerated", "fallback",
                      "programs"}
    assert all({"program", "node", "op_type", "why"} <= set(f) for f in b["fallback"])


@pytest.mark.parametrize("target,kind", [("executorch-xnnpack", "delegate"), ("qnn-htp", "NPU")])
def test_accelerated_targets_write_the_block_and_old_manifests_read_the_same(converted, target, kind):
    import edgesdk
    if not {t.name: t for t in edgesdk.targets()}[target].runs_here:
        pytest.skip(f"{target} does not run here")
    art = converted("mlp", target)[0]
    b = art.manifest.placement
    _check_shape(b)
    assert b["kind"] == kind and b["fraction"] == min(b["programs"].values())
    if kind == "NPU":  # the converter's own report and the block agree
        q = art.manifest.extra["qnn"]["placement"]
        assert (b["fraction"], b["on_accelerator"], b["compute_nodes"]) == (q["fraction"], q["on_npu"],
                                                                            q["compute_nodes"])
        assert [f["node"] for f in b["fallback"]] == [r["node"] for r in q["cpu_fallback"]]
    else:
        part = art.manifest.extra["partition"]
        assert b["fraction"] == min(p["delegated_fraction"] for p in part.values())
        assert b["compute_nodes"] == sum(p["delegated_nodes"] + p["non_delegated_nodes"] for p in part.values())
    old = _without_block(art)
    assert old.placement is None and of(old) == b  # derived by the target's converter, same block
    assert row_placement(old) == row_placement(art.manifest)
    row = row_placement(art.manifest)
    assert row["kind"] == kind and row["fraction"] == b["fraction"] and row["compute_nodes"] == b["compute_nodes"]


def test_cpu_targets_write_none_and_a_malformed_block_is_refused(converted):
    art = converted("mlp", "onnx-cpu")[0]
    assert art.manifest.placement is None and of(art.manifest) is None and row_placement(art.manifest) is None
    assert "placement" not in json.loads((art.path / "manifest.json").read_text())
    d = json.loads((art.path / "manifest.json").read_text())
    d["placement"] = {"fraction": 1.0}
    with pytest.raises(IntegrityError, match="manifest.placement: expected an object with a 'kind'"):
        parse_manifest(json.dumps(d))
    d["placement"] = {"kind": "NPU", "fraction": 0.5, "fallback": []}
    assert parse_manifest(json.dumps(d)).placement == d["placement"]
    assert Artifact.open(art.path).manifest.placement is None


def test_the_gpu_block_carries_the_compilers_verdict_and_the_row_keeps_its_shape():
    from edgesdk.converters import get_converter
    conv = get_converter("litert-gpu")
    full = conv.placement({"gpu": {"fully_accelerated": True}})
    _check_shape(full)
    assert (full["kind"], full["fraction"], full["fully_accelerated"], full["fallback"]) == ("GPU", 1.0, True, [])
    part = conv.placement({"gpu": {"fully_accelerated": False}})
    assert part["fraction"] is None and len(part["fallback"]) == 1 and "CPU fallback" in part["fallback"][0]["why"]
    assert conv.placement({"gpu": {"compiled_here": False}}) is None  # not compiled here: nothing is known
