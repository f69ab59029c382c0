"""Reliability and security: signatures, hostile files, fuzzing, no unsafe deserialisation,
crash-safe conversion, concurrent sessions, and flat memory over a sustained run."""

import json
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

from edgesdk import runtime
from conftest import ROOT, cpu_targets
from hostile import build_corpus, run_corpus
from edgesdk.runtime.signing import generate_keypair, sign_artifact
from edgesdk.cli import main

CPU = cpu_targets()


@pytest.fixture
def signed(converted, tmp_path):
    art = tmp_path / "art"
    shutil.copytree(converted("mlp", "onnx-cpu")[0].path, art)
    priv, pub = generate_keypair(tmp_path / "release")
    sign_artifact(art, priv)
    return art, priv, pub, tmp_path


def test_signed_artifact_loads_only_with_the_trusted_key(signed):
    art, priv, pub, tmp = signed
    assert runtime.load(art, require_signature=True, public_key=pub).verified
    _, other = generate_keypair(tmp / "other")
    with pytest.raises(runtime.IntegrityError, match="different key"):
        runtime.load(art, require_signature=True, public_key=other)
    with pytest.raises(runtime.ConfigError, match="trusted public key"):
        runtime.load(art, require_signature=True)
    m = json.loads((art / "manifest.json").read_text())
    m["name"] = "tampered"
    (art / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(runtime.IntegrityError, match="does not match its content"):
        runtime.load(art, require_signature=True, public_key=pub)


def test_unsigned_is_refused_and_key_files_are_private(converted, tmp_path):
    priv, pub = generate_keypair(tmp_path / "k")
    assert oct(priv.stat().st_mode & 0o777) == "0o600"
    with pytest.raises(runtime.IntegrityError, match="not signed"):
        runtime.load(converted("mlp", "litert-cpu")[0].path, require_signature=True, public_key=pub)
    with pytest.raises(runtime.ConfigError, match="refusing to overwrite"):
        generate_keypair(tmp_path / "k")


def test_cli_keygen_sign_verify(converted, tmp_path, capsys):
    art = tmp_path / "a"
    shutil.copytree(converted("mlp", "executorch-xnnpack")[0].path, art)
    assert main(["keygen", "--out", str(tmp_path / "rel")]) == 0
    assert main(["sign", str(art), "--key", str(tmp_path / "rel.key")]) == 0
    assert main(["verify", str(art), "--public-key", str(tmp_path / "rel.pub"), "--json"]) == 0
    capsys.readouterr()
    assert main(["run", str(art), "--public-key", str(tmp_path / "rel.pub"), "-q"]) == 0
    payload = art / "model.pte"
    payload.write_bytes(payload.read_bytes()[:-1] + b"\x00")
    assert main(["verify", str(art), "--public-key", str(tmp_path / "rel.pub")]) == 2
    assert "sha256" in capsys.readouterr().err


def test_hostile_files_end_in_typed_errors(converted, tmp_path):
    arts = [converted("mlp", t)[0].path for t in CPU]
    (tmp_path / "cwd").mkdir()
    cases = build_corpus(arts, tmp_path / "corpus", per_artifact=4, seed=7)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    t0 = time.monotonic()
    results = run_corpus(cases, tmp_path / "cwd", timeout_s=60)
    assert time.monotonic() - t0 < 240
    bad = [r for r in results if not (r["status"].startswith("typed:")
                                      or (r["status"] == "loaded" and " bare " in r["kind"]))]
    assert not bad, bad
    assert len(results) >= 60
    # every artifact-level corruption is caught by the integrity check, before any native parser
    assert all(r["status"] == "typed:IntegrityError" for r in results if " artifact " in r["kind"])
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert after == before  # nothing written anywhere (no outside.bin, no stray files)


def test_bounded_fuzz_run_finds_no_crash(tmp_path):
    corpus = tmp_path / "corpus"  # libFuzzer adds inputs to its first corpus dir: never the source tree
    shutil.copytree(ROOT / "tests/fuzz/regressions", corpus)
    r = subprocess.run([sys.executable, str(ROOT / "tests/fuzz/fuzz_runtime.py"), "-runs=5000", "-seed=1",
                        str(corpus)],
                       capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Done 5000 runs" in r.stderr
    assert not list(tmp_path.glob("crash-*"))


UNSAFE = [
    (re.compile(r"\bpickle\.loads?\("), "pickle.load"),
    (re.compile(r"\btorch\.load\((?![^)]*weights_only\s*=\s*True)"), "torch.load without weights_only=True"),
    (re.compile(r"allow_pickle\s*=\s*True"), "np.load(allow_pickle=True)"),
    (re.compile(r"\byaml\.load\("), "yaml.load (use yaml.safe_load)"),
    (re.compile(r"\bmarshal\.loads?\("), "marshal.load"),
]


def test_no_unsafe_deserialisation_in_the_tree():
    hits = []
    for p in ROOT.rglob("*.py"):
        if any(part in (".venv", "build", ".cache") for part in p.parts) or p.name == "test_reliability.py":
            continue
        for n, line in enumerate(p.read_text(errors="replace").splitlines(), 1):
            for pat, what in UNSAFE:
                if pat.search(line):
                    hits.append(f"{p.relative_to(ROOT)}:{n}: {what}")
    assert not hits, hits


CONVERT = textwrap.dedent('''
    import sys, torch
    sys.path.insert(0, {root!r})
    import edgesdk
    torch.manual_seed(int(sys.argv[2]))
    model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 8))
    edgesdk.convert(model, (torch.randn(1, 64),), sys.argv[3], out_dir=sys.argv[1], name="m")
''')


@pytest.mark.parametrize("target", ["onnx-cpu", pytest.param("executorch-xnnpack", marks=pytest.mark.slow)])
def test_kill_9_mid_conversion_leaves_the_previous_artifact_or_none(tmp_path, target):
    script = CONVERT.format(root=str(ROOT))
    out = tmp_path / "out"
    subprocess.run([sys.executable, "-c", script, str(out), "0", target], check=True, capture_output=True)
    good = (out / "m" / "manifest.json").read_bytes()
    for delay in (1.0, 2.5, 4.0):
        p = subprocess.Popen([sys.executable, "-c", script, str(out), "1", target],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        p.send_signal(signal.SIGKILL)
        p.wait()
        visible = [x.name for x in out.iterdir() if not x.name.startswith(".")]
        assert visible == ["m"]
        manifest = (out / "m" / "manifest.json").read_bytes()
        assert runtime.load(out / "m").verified  # complete: old or new, never half
        if manifest != good:
            good = manifest
    subprocess.run([sys.executable, "-c", script, str(out), "2", target], check=True, capture_output=True)
    assert [x.name for x in out.iterdir()] == ["m"]  # the next conversion cleans stale partials


@pytest.mark.parametrize("target", CPU)
def test_one_session_from_8_threads_is_bit_identical(converted, target):
    sess = runtime.load(converted("transformer", target)[0].path)
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal(sess.inputs[0].shape).astype(np.float32) for _ in range(16)]
    expected = [sess.run([x])[0] for x in inputs]
    errors, results = [], {}

    def work(tid):
        try:
            for rep in range(10):
                for i, x in enumerate(inputs):
                    y = sess.run([x])[0]
                    if not np.array_equal(y, expected[i]):
                        errors.append((tid, rep, i))
            results[tid] = True
        except Exception as e:  # pragma: no cover - reported below
            errors.append((tid, repr(e)))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 8


def test_several_sessions_in_parallel(converted):
    sessions = [runtime.load(converted("convnet", t)[0].path) for t in CPU]
    x = np.random.default_rng(1).standard_normal(sessions[0].inputs[0].shape).astype(np.float32)
    expected = [s.run([x])[0] for s in sessions]
    mismatches = []

    def work(i):
        for _ in range(30):
            if not np.array_equal(sessions[i].run([x])[0], expected[i]):
                mismatches.append(i)

    threads = [threading.Thread(target=work, args=(i % 3,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not mismatches


RSS = textwrap.dedent('''
    import sys, json
    sys.path.insert(0, {root!r})
    import numpy as np
    from edgesdk import runtime
    from edgesdk.runtime.profile import rss_mb
    sess = runtime.load(sys.argv[1])
    xs = runtime.example_inputs(sess.inputs)
    for _ in range(1000):
        sess.run(xs)
    start = rss_mb()
    for _ in range(10000):
        sess.run(xs)
    print(json.dumps({{"start_mb": start, "end_mb": rss_mb()}}))
''')


@pytest.mark.parametrize("target", CPU)
def test_rss_stays_flat_over_10000_runs(converted, target):
    art = converted("mlp", target)[0].path
    r = subprocess.run([sys.executable, "-c", RSS.format(root=str(ROOT)), str(art)], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    m = json.loads(r.stdout.strip().splitlines()[-1])
    assert m["end_mb"] - m["start_mb"] < 5.0, m
