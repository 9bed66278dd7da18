"""The key → workspace mapping, and stateless credentials (derivation, expiry, binding)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cairn.crypto import Keyring
from cairn.s3api import keys
from cairn.s3api.credentials import Credentials
from cairn.s3api.sigv4 import SigError

NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("key", "name"),
    [
        ("terraform.tfstate", "terraform"),
        ("network/terraform.tfstate", "network-terraform"),
        ("env:/dev/network/terraform.tfstate", "env-dev-network-terraform"),
        ("a b//c.d.tfstate", "a-b-c-d"),
        ("état_1", "tat_1"),
    ],
)
def test_workspace_names(key: str, name: str) -> None:
    assert keys.workspace_name(key) == name


def test_bad_keys_and_lock_objects() -> None:
    with pytest.raises(keys.BadKey):
        keys.workspace_name("///.tfstate")
    with pytest.raises(keys.BadKey):
        keys.workspace_name("x" * 91)
    with pytest.raises(keys.BadKey):
        keys.parse("k" * 1025)
    lock = keys.parse("a/b.tfstate.tflock")
    assert lock.lock and lock.state_key == "a/b.tfstate" and lock.key == "a/b.tfstate.tflock"
    assert not keys.parse(".tflock").lock


def test_credentials_are_derived_bound_and_expire() -> None:
    creds = Credentials(Keyring("k" * 40))
    issued = creds.issue(user_id="user-1", token_id="at-1", organization="acme", now=NOW)
    assert issued.access_key_id.startswith("CAIRN") and len(issued.access_key_id) == 20
    assert "SecretAccessKey" not in repr(issued) and issued.secret_access_key not in repr(issued)
    # Another replica with the same key derives the same secret; another key does not.
    assert Credentials(Keyring("k" * 40)).secret_for(issued.access_key_id) == (
        issued.secret_access_key
    )
    assert Credentials(Keyring("j" * 40)).secret_for(issued.access_key_id) != (
        issued.secret_access_key
    )
    session = creds.session(issued.session_token, issued.access_key_id, NOW)
    assert (session.user_id, session.token_id, session.organization) == ("user-1", "at-1", "acme")
    other = creds.issue(user_id="user-1", token_id="at-1", organization=None, now=NOW)
    with pytest.raises(SigError) as err:
        creds.session(issued.session_token, other.access_key_id, NOW)
    assert err.value.code == "InvalidAccessKeyId"
    with pytest.raises(SigError) as err:
        creds.session(issued.session_token, issued.access_key_id, NOW + timedelta(hours=1))
    assert err.value.code == "ExpiredToken"
    forged = Credentials(Keyring("j" * 40)).issue(
        user_id="admin", token_id="at-9", organization=None, now=NOW
    )
    with pytest.raises(SigError) as err:
        creds.session(forged.session_token, forged.access_key_id, NOW)
    assert err.value.code == "InvalidToken"
    with pytest.raises(ValueError):
        creds.issue(user_id="u", token_id="t", organization=None, now=NOW, ttl=timedelta(hours=13))
