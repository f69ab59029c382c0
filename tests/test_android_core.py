"""The Android app's shared core (android_demo/core, plain Java) agrees with the Python runtime.

Runs the core's command-line `Tool` from the classes `make test-jvm` compiles into build/jvm/main
(`make test` builds them first). Cross-checks: statistics on the shared vectors, the report writer
(byte-identical JSON that `ProfileReport.from_json` reads), manifest validation (same verdict and
message for each malformed case) and the payload hash check on an artifact written by Python.
"""

import json
import math
import random
import shutil
import struct
import subprocess

import pytest

from conftest import ROOT
from edgesdk.runtime.errors import IntegrityError
from edgesdk.runtime.manifest import FileEntry, Manifest, ProgramSpec, TensorSpec, parse_manifest, sha256_file, verify_payload
from edgesdk.runtime.profile import ProfileReport
from edgesdk.runtime.stats import summarize

JVM_MAIN = ROOT / "build/jvm/main"
STATS = json.loads((ROOT / "tests/vectors/profile_stats.json").read_text())
REPORT = json.loads((ROOT / "tests/vectors/profile_report.json").read_text())

pytestmark = pytest.mark.skipif(
    shutil.which("java") is None or not (JVM_MAIN / "dev/edgesdk/core/Tool.class").is_file(),
    reason="the Java core is not built: run `make test-jvm` (needs javac; `make test` runs it first)")


def java(*args, stdin: str = "", check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run(["java", "-cp", str(JVM_MAIN), "dev.edgesdk.core.Tool", *args], input=stdin,
                       capture_output=True, text=True, timeout=120)
    if check and p.returncode != 0:
        raise AssertionError(f"Tool {args[0]} exited {p.returncode}: {p.stderr.strip()}")
    return p


# ------------------------------------------------------------------ statistics

@pytest.mark.parametrize("case", STATS["cases"], ids=lambda c: c["name"])
def test_java_stats_pass_the_shared_vectors(case):
    got = json.loads(java("summarize", stdin=json.dumps(case["samples_ms"])).stdout)
    tol = STATS["tolerance"]
    assert got["count"] == len(case["samples_ms"])
    for k, v in case["expected"].items():
        assert math.isclose(got[k], v, rel_tol=tol, abs_tol=tol), (k, got[k], v)


def test_java_and_python_stats_agree_to_the_bit():
    """Same definitions, same operation order, fsum on both sides: identical doubles."""
    rng = random.Random(5)
    for n in (1, 2, 3, 10, 37, 101, 1000):
        s = [rng.lognormvariate(0.0, 0.5) for _ in range(n)]
        got = json.loads(java("summarize", stdin=json.dumps(s)).stdout)
        want = summarize(s)
        for k in ("p50", "p90", "p99", "mean", "min", "max"):
            assert got[k] == want[k], (n, k)
        assert math.isclose(got["std"], want["std"], rel_tol=1e-12, abs_tol=1e-12)


# ------------------------------------------------------------------ report writer

def test_report_vector_is_what_python_writes():
    assert ProfileReport(**REPORT["fields"]).to_json() == REPORT["json"]


def test_report_written_by_java_reads_in_python():
    text = java("report", stdin=json.dumps(REPORT["fields"])).stdout
    assert text == REPORT["json"]  # byte-identical to ProfileReport.to_json()
    rep = ProfileReport.from_json(text)
    assert rep.samples_ms == REPORT["fields"]["samples_ms"]
    assert rep.device == REPORT["fields"]["device"] and rep.threads == 4 and rep.verified is True
    assert rep.peak_rss_mb is None  # NaN went out as null
    d = json.loads(text)
    assert d["stats"]["p99_ms"] == rep.p99_ms and d["stats"]["count"] == len(rep.samples_ms)


def test_java_doubles_are_spelled_as_python_repr():
    rng = random.Random(11)
    values = [0.1, 1e16, 1e15, 1e-5, 1e-4, 5e-324, 1.7976931348623157e308, -0.0, 2 / 3, 1e22, 1e23]
    while len(values) < 3000:
        d = struct.unpack("<d", struct.pack("<Q", rng.getrandbits(64)))[0]
        if math.isfinite(d):
            values.append(d)
        values.append(round(rng.random() * 10 ** rng.randint(-6, 6), rng.randint(0, 9)))
    hexes = "\n".join(f"{struct.unpack('<Q', struct.pack('<d', v))[0]:016x}" for v in values)
    got = java("repr", stdin=hexes).stdout.split("\n")[:-1]
    assert got == [repr(v) for v in values]


# ------------------------------------------------------------------ manifest rules

def _good_manifest() -> dict:
    spec = ProgramSpec("forward", "model.pte", "forward",
                       (TensorSpec("x", (2, 32), "float32"), TensorSpec("ids", ("batch", 5), "int64", (3, 9))),
                       (TensorSpec("y", (2, 8), "float32"),))
    m = Manifest(name="mlp", target="executorch-xnnpack", format="pte", programs={"forward": spec},
                 files=[FileEntry("model.pte", 11, "a" * 64)], versions={"edge-sdk": "0.1.0"},
                 created_at="2026-11-30T03:38:49+00:00", verification={"passed": True},
                 extra={"partition": {"delegated": 3}})
    return json.loads(m.to_json())


def _set(path, value):
    def mutate(d):
        *head, last = path
        for k in head:
            d = d[k]
        if value is KeyError:
            del d[last]
        else:
            d[last] = value
    return mutate


_X = ("programs", "forward", "inputs", 0)
MANIFEST_CASES = {
    "good": [],
    "defaults": [_set(("device",), KeyError), _set(("quantization",), KeyError),
                 _set(("programs", "forward", "method"), KeyError)],
    "sub_dir_and_dot_paths": [_set(("files", 0, "path"), "./sub/model.pte"),
                              _set(("programs", "forward", "file"), "./sub/model.pte")],
    "schema": [_set(("schema",), "edgesdk.manifest/0")],
    "no_schema": [_set(("schema",), KeyError)],
    "empty_name": [_set(("name",), "")],
    "target_not_str": [_set(("target",), 7)],
    "format": [_set(("format",), "exe")],
    "no_files": [_set(("files",), [])],
    "files_not_list": [_set(("files",), {"path": "model.pte"})],
    "file_not_object": [_set(("files", 0), "model.pte")],
    "parent_path": [_set(("files", 0, "path"), "../model.pte")],
    "nested_parent": [_set(("files", 0, "path"), "a/../../model.pte")],
    "absolute": [_set(("files", 0, "path"), "/etc/passwd")],
    "backslash": [_set(("files", 0, "path"), "a\\b")],
    "nul": [_set(("files", 0, "path"), "a\x00b")],
    "long_path": [_set(("files", 0, "path"), "a" * 513)],
    "size_bool": [_set(("files", 0, "size"), True)],
    "size_negative": [_set(("files", 0, "size"), -1)],
    "size_float": [_set(("files", 0, "size"), 11.0)],
    "size_huge": [_set(("files", 0, "size"), (1 << 40) + 1)],
    "sha_upper": [_set(("files", 0, "sha256"), "A" * 64)],
    "sha_short": [_set(("files", 0, "sha256"), "a" * 63)],
    "no_programs": [_set(("programs",), {})],
    "unlisted_file": [_set(("programs", "forward", "file"), "other.pte")],
    "method_null": [_set(("programs", "forward", "method"), None)],
    "inputs_not_list": [_set(("programs", "forward", "inputs"), {"x": 1})],
    "spec_not_object": [_set(_X, 5)],
    "spec_name": [_set(_X + ("name",), "")],
    "spec_dtype": [_set(_X + ("dtype",), "float128")],
    "spec_rank": [_set(_X + ("shape",), [1] * 9)],
    "spec_negative_dim": [_set(_X + ("shape",), [2, -1])],
    "spec_bool_dim": [_set(_X + ("shape",), [2, True])],
    "spec_float_dim": [_set(_X + ("shape",), [2, 3.0])],
    "spec_too_many_elements": [_set(_X + ("shape",), [1 << 17, (1 << 17) + 1])],
    "value_range_reversed": [_set(("programs", "forward", "inputs", 1, "value_range"), [9, 3])],
    "value_range_short": [_set(("programs", "forward", "inputs", 1, "value_range"), [3])],
    "value_range_bool": [_set(("programs", "forward", "inputs", 1, "value_range"), [False, 9])],
    "value_range_float_ok": [_set(("programs", "forward", "inputs", 1, "value_range"), [2.5, 3])],
    "value_range_null_ok": [_set(("programs", "forward", "inputs", 1, "value_range"), None)],
    "duplicate_inputs": [_set(("programs", "forward", "inputs", 1, "name"), "x")],
    "versions_not_object": [_set(("versions",), ["0.1"])],
    "verification_null": [_set(("verification",), None)],
}


def test_java_and_python_validate_manifests_alike(tmp_path, monkeypatch):
    import edgesdk.runtime.manifest as manifest_module
    from edgesdk.runtime.backends import BUILTIN_FORMATS
    # the Android core knows the SDK's own formats, not a plug-in target the test suite loaded
    monkeypatch.setattr(manifest_module, "FORMATS", dict(BUILTIN_FORMATS))
    files, verdicts = [], {}
    for name, mutations in MANIFEST_CASES.items():
        d = _good_manifest()
        for mutate in mutations:
            mutate(d)
        f = tmp_path / f"{name}.json"
        f.write_text(json.dumps(d))
        files.append(str(f))
        try:
            parse_manifest(f.read_bytes())
            verdicts[name] = (True, None)
        except IntegrityError as e:
            verdicts[name] = (False, str(e))
    # and text that is not JSON / not an object / NaN where a number must be finite
    for name, text in {"not_json": "{", "array": "[]", "trailing_comma": '{"a": 1,}',
                       "nan_range": json.dumps(_good_manifest()).replace("[3, 9]", "[3, NaN]")}.items():
        f = tmp_path / f"{name}.json"
        f.write_text(text)
        files.append(str(f))
        try:
            parse_manifest(text)
            verdicts[name] = (True, None)
        except IntegrityError as e:
            verdicts[name] = (False, str(e))
    rows = [json.loads(line) for line in java("manifest", *files).stdout.splitlines()]
    assert len(rows) == len(files)
    for row in rows:
        name = row["file"].rsplit("/", 1)[-1][: -len(".json")]
        ok, message = verdicts[name]
        assert row["ok"] is ok, (name, row, message)
        if ok:
            continue
        assert row["kind"] == "IntegrityError"
        if name in ("not_json", "trailing_comma"):  # both say it is not JSON; the parsers' wording differs
            assert row["error"].startswith("manifest is not valid JSON:") and message.startswith(row["error"][:27])
        else:
            assert row["error"] == message, name
    assert sum(1 for ok, _ in verdicts.values() if ok) == 5  # good, defaults, paths, 2 value ranges


# ------------------------------------------------------------------ payload hash on a Python-written artifact

def _artifact(root):
    root.mkdir()
    (root / "model.pte").write_bytes(b"\x00model bytes\xff" * 100)
    d = _good_manifest()
    d["files"][0]["size"] = (root / "model.pte").stat().st_size
    d["files"][0]["sha256"] = sha256_file(root / "model.pte")
    (root / "manifest.json").write_text(json.dumps(d, indent=2))
    return root


def test_java_verifies_an_artifact_written_by_python(tmp_path):
    art = _artifact(tmp_path / "art")
    verify_payload(art, parse_manifest((art / "manifest.json").read_bytes()))
    assert java("verify", str(art)).stdout.startswith("ok mlp executorch-xnnpack")


@pytest.mark.parametrize("tamper,fragment", [
    (lambda p: p.write_bytes(p.read_bytes()[:-1]), "(truncated or replaced file)"),
    (lambda p: p.write_bytes(p.read_bytes()[:-1] + b"!"), "differs from the manifest's"),
    (lambda p: p.unlink(), "payload file listed in the manifest is missing"),
])
def test_java_and_python_refuse_the_same_tampered_payload(tmp_path, tamper, fragment):
    art = _artifact(tmp_path / "art")
    tamper(art / "model.pte")
    with pytest.raises(IntegrityError, match=None) as py:
        verify_payload(art, parse_manifest((art / "manifest.json").read_bytes()))
    p = java("verify", str(art), check=False)
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.startswith("error: IntegrityError: ") and fragment in p.stderr
    assert fragment in str(py.value)
    assert str(py.value) in p.stderr  # same message, word for word
