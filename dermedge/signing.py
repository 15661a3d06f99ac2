"""Ed25519 signatures over a bundle's manifest (which pins every file by sha256).

``sign_bundle`` writes ``manifest.sig`` (raw 64-byte signature, base64) beside ``manifest.json``;
``verify_signature`` checks it against trusted public keys. Needs ``cryptography``
(``pip install 'dermedge[signing]'``).
"""

from __future__ import annotations

import base64
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dermedge.bundle import MANIFEST_NAME, SIGNATURE_NAME, Bundle
from dermedge.errors import BundleError, DermedgeError


def _crypto() -> Any:
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError as exc:
        raise DermedgeError(
            "bundle signatures need the 'cryptography' package: pip install 'dermedge[signing]'"
        ) from exc
    return ed25519, serialization


def generate_keypair(private_path: str | os.PathLike[str], public_path: str | os.PathLike[str]) -> None:
    """Write a new ed25519 private key (PEM, mode 0600) and its public key (PEM)."""
    ed25519, ser = _crypto()
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.NoEncryption())
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    Path(public_path).write_bytes(
        key.public_key().public_bytes(ser.Encoding.PEM, ser.PublicFormat.SubjectPublicKeyInfo)
    )


def _load_public(key: str | os.PathLike[str] | bytes) -> Any:
    ed25519, ser = _crypto()
    data = key if isinstance(key, bytes) else Path(key).read_bytes()
    try:
        pub = (
            ser.load_pem_public_key(data)
            if data.lstrip().startswith(b"-----")
            else ed25519.Ed25519PublicKey.from_public_bytes(data)
        )
    except ValueError as exc:
        raise BundleError(
            f"trusted key {key if not isinstance(key, bytes) else '<bytes>'}: not an ed25519 public key ({exc})"
        ) from exc
    if not isinstance(pub, ed25519.Ed25519PublicKey):
        raise BundleError("trusted keys must be ed25519 public keys")
    return pub


def sign_bundle(bundle_dir: str | os.PathLike[str], private_key: str | os.PathLike[str]) -> Path:
    """Sign ``manifest.json`` of a bundle directory with a PEM ed25519 private key; returns the .sig path."""
    _, ser = _crypto()
    root = Path(bundle_dir)
    if not (root / MANIFEST_NAME).is_file():
        raise BundleError(f"{root}: not a bundle directory (no {MANIFEST_NAME}); unzip .dermedge files first")
    key = ser.load_pem_private_key(Path(private_key).read_bytes(), password=None)
    sig = key.sign((root / MANIFEST_NAME).read_bytes())
    out = root / SIGNATURE_NAME
    out.write_text(base64.b64encode(sig).decode() + "\n")
    return out


def verify_signature(bundle: Bundle, trusted_keys: Sequence[str | os.PathLike[str] | bytes]) -> None:
    """Require a valid signature on the bundle's manifest by one of ``trusted_keys``.

    Raises:
        BundleError: no keys given, signature missing or malformed, or no key verifies it.
    """
    if not trusted_keys:
        raise BundleError("trusted_keys is empty; pass at least one public key or None to skip signature checks")
    sig_path = bundle.root / SIGNATURE_NAME
    if not sig_path.is_file():
        raise BundleError(f"bundle {bundle.source} is not signed (no {SIGNATURE_NAME}) but trusted keys were given")
    try:
        sig = base64.b64decode(sig_path.read_text().strip(), validate=True)
    except ValueError as exc:
        raise BundleError(f"bundle {bundle.source}: {SIGNATURE_NAME} is not valid base64") from exc
    message = (bundle.root / MANIFEST_NAME).read_bytes()
    from cryptography.exceptions import InvalidSignature

    for key in trusted_keys:
        try:
            _load_public(key).verify(sig, message)
            return
        except InvalidSignature:
            continue
    raise BundleError(
        f"bundle {bundle.source}: signature does not match any trusted key (tampered or signed by another key)"
    )
