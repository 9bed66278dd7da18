"""Secrets at rest and in URLs, all derived from CAIRN_SECRET_KEY.

* ``Keyring.seal`` / ``open``: AES-256-GCM under an HKDF-derived key, with the row identity as
  associated data, so a sealed value copied to another row does not open.
* ``Keyring.token_hash``: a keyed hash (HMAC-SHA256) for API tokens; a database dump alone
  does not allow offline guessing.
* ``Keyring.sign`` / ``verify``: purpose-bound MACs, the primitive under self-authorising URLs;
  ``tfeapi.signed.Signer`` builds the URL tokens on it (fields, expiry on the injected clock).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import stat
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from cairn.errors import ConfigError, SealError

_SEAL_VERSION = b"\x01"


def _hkdf(secret: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"cairn/v1", info=info).derive(secret)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(data: str) -> bytes:
    return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))


class Keyring:
    """Keys derived from one master secret. Its repr never shows them."""

    def __init__(self, master: str) -> None:
        secret = master.encode("utf-8")
        self._seal_key = AESGCM(_hkdf(secret, b"seal"))
        self._token_key = _hkdf(secret, b"api-token-hash")
        self._sign_key = _hkdf(secret, b"url-signature")
        self._check = hmac.new(_hkdf(secret, b"key-check"), b"cairn", hashlib.sha256).hexdigest()

    def __repr__(self) -> str:
        return "Keyring(<redacted>)"

    @property
    def fingerprint(self) -> str:
        """A value stored in the database to detect a changed CAIRN_SECRET_KEY at start.
        It reveals nothing about the key (HMAC under a separately derived key)."""
        return self._check

    def seal(self, plaintext: bytes, *, aad: str) -> bytes:
        nonce = os.urandom(12)
        return _SEAL_VERSION + nonce + self._seal_key.encrypt(nonce, plaintext, aad.encode())

    def open(self, sealed: bytes, *, aad: str) -> bytes:
        if len(sealed) < 13 + 16 or sealed[:1] != _SEAL_VERSION:
            raise SealError(f"sealed value for {aad} is malformed")
        try:
            return self._seal_key.decrypt(sealed[1:13], sealed[13:], aad.encode())
        except InvalidTag:
            raise SealError(
                f"sealed value for {aad} does not open: it was altered, belongs to another row, "
                "or CAIRN_SECRET_KEY is not the key it was sealed with"
            ) from None

    def token_hash(self, token: str) -> str:
        return hmac.new(self._token_key, token.encode("utf-8"), hashlib.sha256).hexdigest()

    def sign(self, purpose: str, message: str) -> str:
        mac = hmac.new(self._sign_key, f"{purpose}\n{message}".encode(), hashlib.sha256)
        return b64url(mac.digest())

    def verify(self, purpose: str, message: str, signature: str) -> bool:
        return hmac.compare_digest(self.sign(purpose, message), signature)


def load_or_create_secret(data_dir: Path, configured: str | None) -> tuple[str, bool]:
    """The master secret: CAIRN_SECRET_KEY if set, else ``<data-dir>/secret.key`` (created once,
    mode 0600). Returns (secret, created_now)."""
    if configured:
        return configured, False
    path = data_dir / "secret.key"
    if path.exists():
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise ConfigError(
                f"{path} is readable by other users (mode {mode:o}); run: chmod 600 {path}"
            )
        value = path.read_text().strip()
        if len(value) < 32:
            raise ConfigError(f"{path} is damaged (too short); restore it from a backup")
        return value, False
    data_dir.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    return value, True
