"""cairn.tfeapi.signed: signed URL tokens, on the injected clock (expiry by moving time)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from cairn.clock import FrozenClock
from cairn.crypto import Keyring
from cairn.errors import Unauthorized
from cairn.tfeapi.signed import Signer, redact

MASTER = "unit-test-master-secret-0123456789abcdef"
TTL = timedelta(hours=1)
REFUSED = "this URL is not valid or has expired"


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
def signer(clock: FrozenClock) -> Signer:
    return Signer(Keyring(MASTER), clock)


def verify(signer: Signer, token: str, bound_to: str = "sv-1", purpose: str = "up") -> list[str]:
    return signer.verify(purpose, bound_to, token, fields=2, refused=REFUSED)


def test_a_token_gives_its_fields_back(signer: Signer) -> None:
    token = signer.sign("up", "sv-1", ["state", "nonce0"], TTL)
    assert verify(signer, token) == ["state", "nonce0"]
    assert "/" not in token and "=" not in token and "+" not in token


def test_a_token_expires_when_the_clock_passes_its_ttl(signer: Signer, clock: FrozenClock) -> None:
    token = signer.sign("up", "sv-1", ["state", "nonce0"], TTL)
    clock.advance(TTL - timedelta(seconds=1))
    assert verify(signer, token) == ["state", "nonce0"]
    clock.advance(timedelta(seconds=2))
    with pytest.raises(Unauthorized) as caught:
        verify(signer, token)
    assert caught.value.detail == REFUSED


def test_a_token_works_only_for_its_purpose_and_resource(signer: Signer) -> None:
    token = signer.sign("up", "sv-1", ["state", "nonce0"], TTL)
    for purpose, bound_to in (("logs", "sv-1"), ("up", "sv-2")):
        with pytest.raises(Unauthorized):
            verify(signer, token, bound_to=bound_to, purpose=purpose)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda t: "json." + t.split(".", 1)[1],  # a field swapped
        lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),  # the signature altered
        lambda t: t.replace(t.split(".")[2], str(int(t.split(".")[2]) + 3600)),  # expiry moved
        lambda t: t.rsplit(".", 1)[0],  # no signature
        lambda t: "garbage",
        lambda t: "",
    ],
)
def test_a_changed_token_is_refused(signer: Signer, tamper: object) -> None:
    token = signer.sign("up", "sv-1", ["state", "nonce0"], TTL)
    assert callable(tamper)
    with pytest.raises(Unauthorized):
        verify(signer, tamper(token))


def test_another_key_does_not_verify(clock: FrozenClock) -> None:
    token = Signer(Keyring(MASTER), clock).sign("up", "sv-1", ["state", "n"], TTL)
    other = Signer(Keyring("another-master-secret-0123456789abcdefgh"), clock)
    with pytest.raises(Unauthorized):
        verify(other, token)


def test_fields_cannot_hold_the_separator(signer: Signer) -> None:
    with pytest.raises(ValueError):
        signer.sign("up", "sv-1", ["a.b", "c"], TTL)


def test_redact_hides_tokens_in_a_path(signer: Signer) -> None:
    token = signer.sign("up", "sv-1", ["state", "nonce0"], TTL)
    path = f"/api/v2/state-versions/sv-1/hosted-upload/{token}"
    assert redact(path) == "/api/v2/state-versions/sv-1/hosted-upload/<redacted>"
    assert Signer.redact("/api/v2/workspaces/ws-1") == "/api/v2/workspaces/ws-1"
    assert "Keyring" not in repr(signer) and MASTER not in repr(signer)
