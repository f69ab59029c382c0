"""Ed25519 signatures over artifact manifests (the manifest pins every payload file's sha256,
so signing it signs the payload).

    edgesdk keygen --out release            # release.key (private, 0600) + release.pub
    edgesdk sign out/mlp-onnx-cpu --key release.key
    edgesdk verify out/mlp-onnx-cpu --public-key release.pub
    runtime.load("out/mlp-onnx-cpu", require_signature=True, public_key="release.pub")

The signed bytes are the manifest's JSON without its ``signature`` field, canonicalised
(sorted keys, no whitespace, UTF-8). A signature proves something only against a key you
trust, so verification always takes the trusted public key; the key embedded in the manifest
only has to match it.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

from edgesdk.runtime.errors import ConfigError, IntegrityError
from edgesdk.runtime.manifest import MANIFEST_NAME, MAX_MANIFEST_BYTES

ALG = "ed25519"


def _crypto():
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise ConfigError("signing needs the 'cryptography' package; fix: pip install 'edge-sdk-runtime[signing]'") from None
    return serialization, ed25519


def canonical_bytes(raw: dict) -> bytes:
    body = {k: v for k, v in raw.items() if k != "signature"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def generate_keypair(prefix: str | os.PathLike) -> tuple[Path, Path]:
    serialization, ed25519 = _crypto()
    key = ed25519.Ed25519PrivateKey.generate()
    priv, pub = Path(f"{prefix}.key"), Path(f"{prefix}.pub")
    if priv.exists():
        raise ConfigError(f"{priv} exists; refusing to overwrite a private key")
    fd = os.open(priv, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
    return priv, pub


def _load_public(public_key):
    serialization, ed25519 = _crypto()
    data = Path(public_key).read_bytes() if isinstance(public_key, (str, os.PathLike)) else public_key
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as e:
        raise ConfigError(f"not a PEM public key: {e}") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise ConfigError("the public key is not an Ed25519 key")
    return key


def _raw_public(key) -> str:
    serialization, _ = _crypto()
    return base64.b64encode(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)).decode()


def _read_raw(artifact: Path) -> dict:
    p = artifact / MANIFEST_NAME
    if not p.is_file():
        raise ConfigError(f"{artifact}: no {MANIFEST_NAME}; sign an artifact directory from `edgesdk convert`")
    if p.stat().st_size > MAX_MANIFEST_BYTES:
        raise IntegrityError(f"{p}: too large for a manifest")
    try:
        raw = json.loads(p.read_bytes())
    except ValueError as e:
        raise IntegrityError(f"{p}: not valid JSON: {e}") from None
    if not isinstance(raw, dict):
        raise IntegrityError(f"{p}: top level must be an object")
    return raw


def sign_artifact(artifact, private_key) -> dict:
    """Add (or replace) the manifest's signature with an Ed25519 private key (PEM file)."""
    serialization, ed25519 = _crypto()
    artifact = Path(artifact)
    try:
        key = serialization.load_pem_private_key(Path(private_key).read_bytes(), password=None)
    except (ValueError, TypeError, OSError) as e:
        raise ConfigError(f"{private_key}: not a readable unencrypted PEM private key: {e}") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ConfigError(f"{private_key}: not an Ed25519 key")
    raw = _read_raw(artifact)
    sig = {"alg": ALG, "public_key": _raw_public(key.public_key()),
           "value": base64.b64encode(key.sign(canonical_bytes(raw))).decode()}
    raw["signature"] = sig
    tmp = artifact / (MANIFEST_NAME + ".tmp")
    tmp.write_text(json.dumps(raw, indent=2) + "\n")
    os.replace(tmp, artifact / MANIFEST_NAME)
    return sig


def verify_signature(raw: dict, public_key) -> None:
    """Raise IntegrityError unless ``raw`` carries a valid signature by ``public_key``."""
    from cryptography.exceptions import InvalidSignature
    if public_key is None:
        raise ConfigError("require_signature needs the trusted public key (public_key= / --public-key, "
                          "or EDGESDK_PUBLIC_KEY)")
    key = _load_public(public_key)
    sig = raw.get("signature")
    if not isinstance(sig, dict):
        raise IntegrityError("the artifact is not signed (manifest has no signature); sign it with `edgesdk sign`")
    if sig.get("alg") != ALG:
        raise IntegrityError(f"unsupported signature algorithm {sig.get('alg')!r} (expected {ALG})")
    if sig.get("public_key") != _raw_public(key):
        raise IntegrityError("the artifact was signed with a different key than the trusted public key")
    try:
        value = base64.b64decode(sig.get("value", ""), validate=True)
        key.verify(value, canonical_bytes(raw))
    except (InvalidSignature, ValueError, TypeError):
        raise IntegrityError("the manifest's signature does not match its content (tampered or re-written "
                             "after signing)") from None
