"""Workload-identity key rotation, in-process, by moving the clock: a graceful rotation is
refused until the next key has been published for the pre-publication window and accepted
right after it; the JWKS served then holds the retired, active and new next keys; tokens
minted before and after verify against the JWKS the app serves (PyJWT, key chosen by `kid`);
the retired key leaves the JWKS once every token it signed has expired (plus two JWKS cache
periods); the scheduler rotates once the rotation period is over. (The same against real
servers, with jwcrypto too: tests/integration/test_identity.py.)

PyJWT checks `exp`/`nbf`/`iat` against the wall clock, so `verify` lets it check signature,
issuer and audience and checks the times against the app's clock itself.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import httpx
import jwt
import pytest

from tests.support.app import InProcessCairn, Workspace, document, organization_and_workspace

pytestmark = pytest.mark.anyio

DISCOVERY = "/.well-known/openid-configuration"
JWKS = "/.well-known/jwks"
KEYS = "/api/cairn/v1/admin/oidc/keys"
ROTATE = "/api/cairn/v1/admin/oidc/keys/rotate"


async def jwks_of(client: httpx.AsyncClient) -> dict[str, Any]:
    return document(await client.get(JWKS), 200)


def kids(jwks: dict[str, Any]) -> set[str]:
    return {key["kid"] for key in jwks["keys"]}


async def key_states(client: httpx.AsyncClient) -> dict[str, str]:
    """kid → state, from the admin key list."""
    return {k["kid"]: k["state"] for k in document(await client.get(KEYS), 200)["data"]}


async def mint(client: httpx.AsyncClient, ws: Workspace) -> dict[str, Any]:
    response = await client.post(
        f"/api/cairn/v1/workspaces/{ws.id}/id-tokens", json={"audience": "x", "run_phase": "plan"}
    )
    return document(response, 201)


def verify(token: str, jwks: dict[str, Any], issuer: str, now: datetime) -> dict[str, Any]:
    """Verify `token` against `jwks` as a cloud would (key by `kid`, RS256 only, issuer and
    audience), with the times checked at `now`. Raises KeyError when the JWKS has no key for
    the token's `kid`."""
    key = jwt.PyJWKSet.from_dict(jwks)[jwt.get_unverified_header(token)["kid"]]
    claims: dict[str, Any] = jwt.decode(
        token,
        key=key,
        algorithms=["RS256"],
        audience="x",
        issuer=issuer,
        options={
            "require": ["exp", "iat", "nbf", "iss", "aud", "sub", "jti"],
            "verify_exp": False,
            "verify_nbf": False,
            "verify_iat": False,
        },
    )
    assert claims["iat"] <= now.timestamp()
    assert claims["nbf"] <= now.timestamp() < claims["exp"]
    return claims


async def test_discovery_names_the_app_as_issuer(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    doc = document(await admin.get(DISCOVERY), 200)
    assert doc["issuer"] == app.url
    assert doc["jwks_uri"] == app.url + JWKS
    assert doc["id_token_signing_alg_values_supported"] == ["RS256"]


async def test_graceful_rotation_by_moving_time(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    ws = await organization_and_workspace(admin)
    states = await key_states(admin)
    (first,) = [kid for kid, state in states.items() if state == "active"]
    (second,) = [kid for kid, state in states.items() if state == "next"]
    before = await admin.get(JWKS)
    assert kids(document(before, 200)) == {first, second}, "the next key is published early"

    # The next key has not been published for the whole window: promoting it could break
    # verifiers that fetched the JWKS before it appeared.
    app.advance(app.settings.oidc_prepublish - timedelta(seconds=1))
    refused = await admin.post(ROTATE, json={"mode": "graceful"})
    assert refused.status_code == 409, refused.text
    assert "published for" in refused.json()["errors"][0]["detail"]
    assert await key_states(admin) == states, "a refused rotation changes nothing"
    old = await mint(admin, ws)
    assert old["kid"] == first

    app.advance(timedelta(seconds=2))
    rotation = document(await admin.post(ROTATE, json={"mode": "graceful"}), 200)
    assert rotation["data"]["rotation"]["forced"] is False
    after = await key_states(admin)
    (third,) = set(after) - {first, second}
    assert after == {first: "retired", second: "active", third: "next"}

    served = await admin.get(JWKS)
    jwks = document(served, 200)
    assert kids(jwks) == {first, second, third}
    assert served.headers["etag"] != before.headers["etag"]
    new = await mint(admin, ws)
    assert new["kid"] == second
    claims = verify(new["token"], jwks, app.url, app.clock.now())
    assert claims["sub"].startswith(f"organization:{ws.org}:")
    assert claims["terraform_workspace_id"] == ws.id
    # A token signed just before the rotation still verifies against the new JWKS.
    assert verify(old["token"], jwks, app.url, app.clock.now())["jti"] == old["jti"]

    # The retired key stays published until every token it signed has expired, plus two JWKS
    # cache periods; then the served JWKS drops it (at the refresher's next step).
    retire_after = app.ctx.issuer.policy.retire_after
    app.advance(retire_after - timedelta(seconds=3))
    app.refresh_keys()
    assert kids(await jwks_of(admin)) == {first, second, third}
    app.advance(timedelta(seconds=4))
    app.refresh_keys()
    jwks = await jwks_of(admin)
    assert kids(jwks) == {second, third}
    with pytest.raises(KeyError, match="no key for kid"):
        verify(old["token"], jwks, app.url, app.clock.now())
    verify((await mint(admin, ws))["token"], jwks, app.url, app.clock.now())


async def test_the_scheduler_rotates_when_the_period_is_over(
    app: InProcessCairn, admin: httpx.AsyncClient
) -> None:
    ws = await organization_and_workspace(admin)
    states = await key_states(admin)
    (first,) = [kid for kid, state in states.items() if state == "active"]
    (second,) = [kid for kid, state in states.items() if state == "next"]

    app.advance(app.settings.oidc_rotation_period - timedelta(seconds=1))
    assert app.rotate_when_due() is None
    assert await key_states(admin) == states

    app.advance(timedelta(seconds=1))
    assert app.rotate_when_due() is not None
    after = await key_states(admin)
    (third,) = set(after) - {first, second}
    assert after == {first: "retired", second: "active", third: "next"}
    jwks = await jwks_of(admin)
    assert kids(jwks) == {first, second, third}
    token = await mint(admin, ws)
    assert token["kid"] == second
    verify(token["token"], jwks, app.url, app.clock.now())
