"""Payloads are checked against the manifest before any native library reads them."""

import json
import shutil

import pytest

from edgesdk import runtime
from conftest import cpu_targets


@pytest.fixture
def copy(converted, tmp_path):
    def make(target):
        src = converted("mlp", target)[0].path
        dst = tmp_path / src.name
        shutil.copytree(src, dst)
        return dst
    return make


def _payload(path):
    m = json.loads((path / "manifest.json").read_text())
    return path / m["files"][0]["path"], m


@pytest.mark.parametrize("target", cpu_targets())
def test_bit_flip_is_caught(copy, target):
    art = copy(target)
    payload, _ = _payload(art)
    data = bytearray(payload.read_bytes())
    data[len(data) // 2] ^= 0x01
    payload.write_bytes(bytes(data))
    with pytest.raises(runtime.IntegrityError, match="sha256 .* differs from the manifest"):
        runtime.load(art)


def test_truncation_is_caught(copy):
    art = copy("onnx-cpu")
    payload, m = _payload(art)
    payload.write_bytes(payload.read_bytes()[:100])
    with pytest.raises(runtime.IntegrityError, match=f"size 100 bytes, manifest says {m['files'][0]['size']}"):
        runtime.load(art)


def test_missing_payload(copy):
    art = copy("litert-cpu")
    payload, _ = _payload(art)
    payload.unlink()
    with pytest.raises(runtime.IntegrityError, match="missing"):
        runtime.load(art)


@pytest.mark.parametrize("evil", ["../../etc/passwd", "/etc/passwd", "a/../../x", "", "a\\b"])
def test_path_traversal_in_manifest(copy, evil):
    art = copy("onnx-cpu")
    m = json.loads((art / "manifest.json").read_text())
    m["files"][0]["path"] = evil
    m["programs"]["forward"]["file"] = evil
    (art / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(runtime.IntegrityError):
        runtime.load(art)


@pytest.mark.parametrize("mutate,match", [
    (lambda m: m.update(schema="edgesdk.manifest/99"), "schema"),
    (lambda m: m["programs"]["forward"]["inputs"][0].update(shape=[2, -1]), "negative dim"),
    (lambda m: m["programs"]["forward"]["inputs"][0].update(shape=[1 << 20, 1 << 20]), "elements"),
    (lambda m: m["programs"]["forward"]["inputs"][0].update(dtype="complex128"), "dtype"),
    (lambda m: m["files"][0].update(size=-5), "size"),
    (lambda m: m["files"][0].update(sha256="xyz"), "sha256"),
    (lambda m: m.update(format="exe"), "format"),
    (lambda m: m.pop("programs"), "programs"),
])
def test_malformed_manifest_fields(copy, mutate, match):
    art = copy("onnx-cpu")
    m = json.loads((art / "manifest.json").read_text())
    mutate(m)
    (art / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(runtime.IntegrityError, match=match):
        runtime.load(art)


def test_not_json(copy):
    art = copy("onnx-cpu")
    (art / "manifest.json").write_text("{not json")
    with pytest.raises(runtime.IntegrityError, match="not valid JSON"):
        runtime.load(art)


@pytest.mark.parametrize("suffix", [".onnx", ".pte", ".tflite"])
def test_garbage_bare_files_raise_typed_errors(tmp_path, suffix):
    p = tmp_path / f"garbage{suffix}"
    p.write_bytes(b"\x00not a model at all" * 10)
    with pytest.raises(runtime.IntegrityError):
        runtime.load(p)
    empty = tmp_path / f"empty{suffix}"
    empty.write_bytes(b"")
    with pytest.raises(runtime.IntegrityError, match="empty"):
        runtime.load(empty)
