"""cairn.crypto: sealing secrets at rest, API-token hashes, URL signatures, the master secret."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cairn.crypto import Keyring, b64url, b64url_decode, load_or_create_secret
from cairn.errors import ConfigError, SealError

MASTER = "unit-test-master-secret-0123456789abcdef"
OTHER_MASTER = "another-master-secret-0123456789abcdefgh"
SECRET = b"-----BEGIN PRIVATE KEY----- very secret material"
AAD = "signing_keys:sk-0000000000000001:private_key"


@pytest.fixture(scope="module")
def keyring() -> Keyring:
    return Keyring(MASTER)


def assert_reveals_nothing(message: str) -> None:
    assert SECRET.decode() not in message
    assert MASTER not in message
    assert OTHER_MASTER not in message


# ---- seal / open ----------------------------------------------------------------------------


def test_seal_open_roundtrip(keyring: Keyring) -> None:
    sealed = keyring.seal(SECRET, aad=AAD)
    assert SECRET not in sealed
    assert keyring.open(sealed, aad=AAD) == SECRET
    # A fresh keyring from the same master opens it too (keys are derived, not random).
    assert Keyring(MASTER).open(sealed, aad=AAD) == SECRET


def test_sealing_twice_gives_different_ciphertexts(keyring: Keyring) -> None:
    assert keyring.seal(SECRET, aad=AAD) != keyring.seal(SECRET, aad=AAD)


@given(plaintext=st.binary(max_size=2048), aad=st.text(max_size=200))
def test_seal_open_roundtrip_any_input(plaintext: bytes, aad: str) -> None:
    keyring = Keyring(MASTER)
    assert keyring.open(keyring.seal(plaintext, aad=aad), aad=aad) == plaintext


@pytest.mark.parametrize("position", [0, 1, 12, 13, 20, -17, -1])
def test_flipped_byte_does_not_open(keyring: Keyring, position: int) -> None:
    sealed = bytearray(keyring.seal(SECRET, aad=AAD))
    sealed[position] ^= 0x01
    with pytest.raises(SealError) as caught:
        keyring.open(bytes(sealed), aad=AAD)
    assert_reveals_nothing(str(caught.value))


def test_swapped_aad_does_not_open(keyring: Keyring) -> None:
    """A sealed value copied to another row does not open there."""
    sealed = keyring.seal(SECRET, aad=AAD)
    with pytest.raises(SealError) as caught:
        keyring.open(sealed, aad="signing_keys:sk-0000000000000002:private_key")
    assert_reveals_nothing(str(caught.value))
    assert "sk-0000000000000002" in str(caught.value)  # says which row failed


def test_other_master_does_not_open(keyring: Keyring) -> None:
    sealed = keyring.seal(SECRET, aad=AAD)
    with pytest.raises(SealError) as caught:
        Keyring(OTHER_MASTER).open(sealed, aad=AAD)
    assert_reveals_nothing(str(caught.value))
    assert "CAIRN_SECRET_KEY" in str(caught.value)


@pytest.mark.parametrize("sealed", [b"", b"\x01", b"\x02" + b"\x00" * 40, b"\x01" + b"\x00" * 27])
def test_malformed_sealed_value_is_a_seal_error(keyring: Keyring, sealed: bytes) -> None:
    with pytest.raises(SealError) as caught:
        keyring.open(sealed, aad=AAD)
    assert_reveals_nothing(str(caught.value))


def test_keyring_repr_hides_keys(keyring: Keyring) -> None:
    assert MASTER not in repr(keyring)
    assert "redacted" in repr(keyring)


# ---- token hashes, fingerprints ---------------------------------------------------------------


def test_token_hash_is_stable_and_keyed(keyring: Keyring) -> None:
    token = "cairn_" + "a" * 43
    digest = keyring.token_hash(token)
    assert digest == keyring.token_hash(token) == Keyring(MASTER).token_hash(token)
    assert len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)
    assert token not in digest
    assert keyring.token_hash(token + "b") != digest
    assert Keyring(OTHER_MASTER).token_hash(token) != digest  # a dump alone is not enough


def test_fingerprint_identifies_the_master_without_revealing_it(keyring: Keyring) -> None:
    assert keyring.fingerprint == Keyring(MASTER).fingerprint
    assert keyring.fingerprint != Keyring(OTHER_MASTER).fingerprint
    assert MASTER not in keyring.fingerprint
    # Derived under its own label: not the same as any other value derived from the master.
    assert keyring.fingerprint != keyring.token_hash("cairn")


# ---- URL signatures -------------------------------------------------------------------------


def test_sign_and_verify(keyring: Keyring) -> None:
    message = "sv-0000000000000001.state.1999999999.nonce"
    signature = keyring.sign("state-upload", message)
    assert keyring.verify("state-upload", message, signature)
    assert Keyring(MASTER).verify("state-upload", message, signature)
    assert b64url_decode(signature)  # URL-safe base64 without padding
    assert "=" not in signature and "/" not in signature and "+" not in signature


@pytest.mark.parametrize(
    ("purpose", "message"),
    [
        ("login-code", "sv-0000000000000001.state.1999999999.nonce"),  # other purpose
        ("state-upload", "sv-0000000000000002.state.1999999999.nonce"),  # other message
        ("state-upload", "sv-0000000000000001.json.1999999999.nonce"),
    ],
)
def test_signature_is_bound_to_purpose_and_message(
    keyring: Keyring, purpose: str, message: str
) -> None:
    signature = keyring.sign("state-upload", "sv-0000000000000001.state.1999999999.nonce")
    assert not keyring.verify(purpose, message, signature)


def test_tampered_or_foreign_signature_fails(keyring: Keyring) -> None:
    message = "sv-0000000000000001.state.1999999999.nonce"
    signature = keyring.sign("state-upload", message)
    tampered = signature[:-1] + ("A" if signature[-1] != "A" else "B")
    assert not keyring.verify("state-upload", message, tampered)
    assert not keyring.verify("state-upload", message, "")
    assert not Keyring(OTHER_MASTER).verify("state-upload", message, signature)


@given(st.binary(max_size=100))
def test_b64url_roundtrip(data: bytes) -> None:
    assert b64url_decode(b64url(data)) == data


# ---- the master secret on disk --------------------------------------------------------------


def test_secret_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    value, created = load_or_create_secret(tmp_path / "data", None)
    assert created and len(value) >= 32
    path = tmp_path / "data" / "secret.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again, created_again = load_or_create_secret(tmp_path / "data", None)
    assert (again, created_again) == (value, False)


def test_configured_secret_wins_and_writes_nothing(tmp_path: Path) -> None:
    assert load_or_create_secret(tmp_path, MASTER) == (MASTER, False)
    assert not (tmp_path / "secret.key").exists()


def test_secret_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    value, _ = load_or_create_secret(tmp_path, None)
    os.chmod(tmp_path / "secret.key", 0o644)
    with pytest.raises(ConfigError) as caught:
        load_or_create_secret(tmp_path, None)
    assert "chmod 600" in str(caught.value)
    assert value not in str(caught.value)


def test_damaged_secret_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "secret.key"
    path.write_text("short\n")
    os.chmod(path, 0o600)
    with pytest.raises(ConfigError, match="damaged"):
        load_or_create_secret(tmp_path, None)
