"""Keys: RFC 7638 thumbprints, public JWKs, PKCS#8 round trips, sealing, and no leaks."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwcrypto import jwk as jc_jwk

from cairn.crypto import Keyring, b64url_decode
from cairn.errors import SealError
from cairn.identity import keys
from cairn.identity.errors import KeyMaterialError, KeySetCorrupt

# RFC 7638 §3.1: the example RSA key and its thumbprint.
RFC7638_N = (
    "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECP"
    "ebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2Qvzq"
    "Y368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu"
    "0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
)
RFC7638_JWK = {"kty": "RSA", "n": RFC7638_N, "e": "AQAB", "alg": "RS256", "kid": "2011-04-29"}
RFC7638_THUMBPRINT = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"

KEYRING = Keyring("identity-test-secret-0123456789abcdef")
T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def rsa_key() -> keys.GeneratedKey:
    return keys.generate("RS256")


@pytest.fixture(scope="module")
def ec_key() -> keys.GeneratedKey:
    return keys.generate("ES256")


def test_thumbprint_of_the_rfc7638_example() -> None:
    assert keys.thumbprint(RFC7638_JWK) == RFC7638_THUMBPRINT


def test_public_jwk_of_the_rfc7638_key_has_the_rfc_thumbprint_as_kid() -> None:
    n = int.from_bytes(b64url_decode(RFC7638_N), "big")
    public = rsa.RSAPublicNumbers(65537, n).public_key()
    jwk = keys.public_jwk(public)
    assert jwk == {
        "kty": "RSA",
        "use": "sig",
        "alg": "RS256",
        "kid": RFC7638_THUMBPRINT,
        "n": RFC7638_N,
        "e": "AQAB",
    }


@pytest.mark.parametrize(
    "member, value",
    [("n", RFC7638_N + "=="), ("e", "AQAB="), ("e", "AQ+B"), ("n", ""), ("kty", "oct")],
)
def test_thumbprint_rejects_padding_and_bad_members(member: str, value: str) -> None:
    with pytest.raises(KeyMaterialError):
        keys.thumbprint(RFC7638_JWK | {member: value})


def test_thumbprint_ignores_optional_members() -> None:
    extra = RFC7638_JWK | {"use": "sig", "kid": "other", "alg": "PS256"}
    assert keys.thumbprint(extra) == RFC7638_THUMBPRINT


def test_rsa_key_shape(rsa_key: keys.GeneratedKey) -> None:
    jwk = rsa_key.public_jwk
    assert set(jwk) == {"kty", "use", "alg", "kid", "n", "e"}
    assert (jwk["kty"], jwk["use"], jwk["alg"], jwk["e"]) == ("RSA", "sig", "RS256", "AQAB")
    assert len(b64url_decode(jwk["n"])) == 256  # 2048 bits, no leading zero octet
    assert isinstance(rsa_key.private_key, rsa.RSAPrivateKey)
    assert rsa_key.private_key.key_size == 2048
    assert rsa_key.kid == jwk["kid"] == keys.thumbprint(jwk)


def test_ec_key_shape(ec_key: keys.GeneratedKey) -> None:
    jwk = ec_key.public_jwk
    assert set(jwk) == {"kty", "use", "alg", "kid", "crv", "x", "y"}
    assert (jwk["kty"], jwk["crv"], jwk["alg"]) == ("EC", "P-256", "ES256")
    assert len(b64url_decode(jwk["x"])) == len(b64url_decode(jwk["y"])) == 32
    assert ec_key.kid == keys.thumbprint(jwk)


@pytest.mark.parametrize("alg", ["RS256", "ES256"])
def test_members_are_base64url_without_padding_and_kid_matches_jwcrypto(
    alg: keys.Alg, rsa_key: keys.GeneratedKey, ec_key: keys.GeneratedKey
) -> None:
    key = rsa_key if alg == "RS256" else ec_key
    for name, value in key.public_jwk.items():
        if name not in ("kty", "use", "alg", "crv"):
            assert "=" not in value and "+" not in value and "/" not in value
    independent = jc_jwk.JWK(**key.public_jwk)
    assert independent.thumbprint() == key.kid
    assert not independent.has_private


def test_ec_coordinates_keep_leading_zero_octets() -> None:
    # About 1 key in 128 has a coordinate below 2**248; RFC 7518 §6.2.1.2 wants 32 octets anyway.
    for _ in range(2000):
        key = ec.generate_private_key(ec.SECP256R1())
        numbers = key.public_key().public_numbers()
        if numbers.x < 2**248 or numbers.y < 2**248:
            break
    else:
        pytest.skip("no short coordinate found")
    jwk = keys.public_jwk(key.public_key())
    assert len(b64url_decode(jwk["x"])) == len(b64url_decode(jwk["y"])) == 32
    assert jc_jwk.JWK(**jwk).thumbprint() == jwk["kid"]


def test_only_supported_keys() -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(KeyMaterialError):
        keys.from_private_key(small)
    with pytest.raises(KeyMaterialError):
        keys.from_private_key(ec.generate_private_key(ec.SECP384R1()))
    with pytest.raises(KeyMaterialError):
        keys.generate("HS256")  # type: ignore[arg-type]


@pytest.mark.parametrize("alg", ["RS256", "ES256"])
def test_pkcs8_der_round_trip(
    alg: keys.Alg, rsa_key: keys.GeneratedKey, ec_key: keys.GeneratedKey
) -> None:
    key = rsa_key if alg == "RS256" else ec_key
    der = key.private_der()
    assert der[:1] == b"\x30"  # a DER SEQUENCE, not PEM
    assert keys.from_private_key(keys.load_private_key(der)).kid == key.kid
    with pytest.raises(KeyMaterialError):
        keys.load_private_key(der[:-5])


def _meta(key: keys.GeneratedKey, version: int = 1) -> keys.SigningKey:
    return keys.SigningKey(
        id=f"key-{version}",
        version=version,
        kid=key.kid,
        alg=key.alg,
        state="active",
        created_at=T0,
        published_at=T0,
        activated_at=T0,
        public_jwk=dict(key.public_jwk),
    )


def test_seal_and_open(rsa_key: keys.GeneratedKey) -> None:
    sealed = keys.seal_private_key(KEYRING, rsa_key)
    assert rsa_key.private_der() not in sealed
    opened = keys.open_private_key(KEYRING, _meta(rsa_key), sealed)
    assert keys.from_private_key(opened).kid == rsa_key.kid


def test_a_flipped_byte_does_not_open(ec_key: keys.GeneratedKey) -> None:
    sealed = bytearray(keys.seal_private_key(KEYRING, ec_key))
    sealed[20] ^= 0x01
    with pytest.raises(SealError, match=ec_key.kid):
        keys.open_private_key(KEYRING, _meta(ec_key), bytes(sealed))


def test_a_swapped_row_does_not_open(rsa_key: keys.GeneratedKey, ec_key: keys.GeneratedKey) -> None:
    sealed_for_ec = keys.seal_private_key(KEYRING, ec_key)
    with pytest.raises(SealError):
        keys.open_private_key(KEYRING, _meta(rsa_key), sealed_for_ec)


def test_a_wrong_secret_key_does_not_open(ec_key: keys.GeneratedKey) -> None:
    sealed = keys.seal_private_key(KEYRING, ec_key)
    with pytest.raises(SealError, match="CAIRN_SECRET_KEY"):
        keys.open_private_key(Keyring("another-secret-0123456789abcdef0123"), _meta(ec_key), sealed)


def test_a_private_key_sealed_under_the_wrong_kid_is_refused(
    rsa_key: keys.GeneratedKey, ec_key: keys.GeneratedKey
) -> None:
    # Sealed with the right associated data but the wrong key inside: caught by the kid check.
    forged = KEYRING.seal(ec_key.private_der(), aad=keys.sealing_aad(rsa_key.kid))
    with pytest.raises(KeyMaterialError, match=rsa_key.kid):
        keys.open_private_key(KEYRING, _meta(rsa_key), forged)


def test_reprs_never_show_private_material(rsa_key: keys.GeneratedKey) -> None:
    numbers = rsa_key.private_key.private_numbers()
    assert isinstance(numbers, rsa.RSAPrivateNumbers)
    meta = _meta(rsa_key)
    for text in (repr(rsa_key), str(rsa_key), repr(meta), str(meta.describe())):
        assert str(numbers.d) not in text and str(numbers.p) not in text
        assert "PRIVATE" not in text
    assert "redacted" in repr(rsa_key)
    assert "d" not in meta.public_jwk and "p" not in meta.public_jwk


def test_describe_lists_metadata_only(ec_key: keys.GeneratedKey) -> None:
    described = _meta(ec_key, 10).describe()
    assert described["version"] == 10
    assert described["kid"] == ec_key.kid
    assert described["activated-at"] == "2026-01-01T00:00:00.000Z"
    assert described["revoked-at"] is None
    assert not {"x", "y", "n", "e", "d"} & set(described)


def test_signing_key_refuses_text_versions_and_broken_metadata(ec_key: keys.GeneratedKey) -> None:
    meta = _meta(ec_key)
    with pytest.raises(KeySetCorrupt, match="version"):
        replace(meta, version="10")  # type: ignore[arg-type]
    with pytest.raises(KeySetCorrupt, match="version"):
        replace(meta, version=True)
    with pytest.raises(KeySetCorrupt, match="activated_at"):
        replace(meta, activated_at=None)
    with pytest.raises(KeySetCorrupt, match="retire_until"):
        replace(meta, state="retired", retired_at=T0)
    with pytest.raises(KeySetCorrupt, match="private"):
        replace(meta, public_jwk=dict(meta.public_jwk) | {"d": "AAAA"})
    with pytest.raises(KeySetCorrupt, match="not the key of kid"):
        replace(meta, public_jwk=dict(meta.public_jwk) | {"x": meta.public_jwk["y"]})
    with pytest.raises(KeySetCorrupt, match="malformed"):
        replace(meta, public_jwk={})
    with pytest.raises(KeySetCorrupt, match="alg=ES256"):
        replace(meta, public_jwk=dict(meta.public_jwk) | {"alg": "RS256"})
    with pytest.raises(KeySetCorrupt, match="timezone"):
        replace(meta, created_at=datetime(2026, 1, 1))
    with pytest.raises(KeySetCorrupt):
        keys.as_state("Active")
    assert keys.as_state("retired") == "retired"
    assert keys.as_alg("ES256") == "ES256"
    with pytest.raises(KeyMaterialError):
        keys.as_alg("EdDSA")
