"""The workload-identity issuer on real `cairn serve` processes.

* discovery and JWKS contract (HTTPS with the dev CA, as a cloud fetches them);
* minting: tokens verified through discovery with PyJWT and with jwcrypto, golden claims,
  input errors, one audit event per mint with its `jti` and never the token;
* the admin key API: metadata only, graceful rotation refused before the pre-publication
  window unless forced, emergency rotation withdrawing the active key at once, idempotent trim;
* sealing: no private key material in a database dump, the server log or any API response; a
  damaged sealed key or a wrong CAIRN_SECRET_KEY stops the server from starting and changes
  nothing;
* replicas on one PostgreSQL: one key set when they start at once, a rotation on one reaches
  the other within 1 s (listener) or within the 60 s cache TTL (listener cut), concurrent
  rotations on two replicas: exactly one wins.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from jwcrypto import jwk as jc_jwk
from jwcrypto import jwt as jc_jwt

from tests.conftest import TEST_SECRET_KEY, start_server
from tests.support import api as tfe
from tests.support import processes
from tests.support.concurrency import simultaneously
from tests.support.identity import (
    ADMIN_KEYS,
    DISCOVERY,
    JWKS,
    JWKS_JSON,
    PRIVATE_JWK_MEMBERS,
    TRIM,
    KeyMaterial,
    ResponseLog,
    active_kid,
    admin_keys,
    assert_opaque,
    claims_of,
    header_of,
    jwks_of,
    kids_of,
    mint,
    minted,
    minted_with_kid,
    postgres_dump,
    postgres_rows,
    private_keys,
    rotate,
    secret_of,
    sqlite_dump,
    sqlite_execute,
    sqlite_rows,
    sqlite_url,
    verifier_for,
    wait_for,
)
from tests.support.postgres import PostgresCluster
from tests.support.server import CairnServer

SIX_HOURS = 6 * 3600
B64URL = re.compile(r"^[A-Za-z0-9_-]+$")
TERRAFORM_CLAIMS = {
    "terraform_organization_id",
    "terraform_organization_name",
    "terraform_project_id",
    "terraform_project_name",
    "terraform_workspace_id",
    "terraform_workspace_name",
    "terraform_full_workspace",
    "terraform_run_id",
    "terraform_run_phase",
}
GOLDEN_CLAIM_NAMES = {"jti", "iss", "aud", "iat", "nbf", "exp", "sub", *TERRAFORM_CLAIMS}
ONLY_POSTGRES = [pytest.param("postgres", id="postgres", marks=pytest.mark.postgres)]


# --- one HTTPS server on SQLite for the contract tests ----------------------------------------


@pytest.fixture(scope="module")
def issuer_server(
    request: pytest.FixtureRequest, admin_token: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CairnServer]:
    srv = start_server(request, tmp_path_factory.mktemp("cairn-identity"), "sqlite", admin_token)
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def received() -> ResponseLog:
    """Every API response the contract tests received (checked for key material at the end)."""
    return ResponseLog()


@pytest.fixture(scope="module")
def seen_keys() -> dict[str, KeyMaterial]:
    """Private keys the contract tests' server held at some point, by kid."""
    return {}


@pytest.fixture(scope="module")
def minted_tokens() -> list[str]:
    return []


@pytest.fixture(scope="module")
def admin(
    issuer_server: CairnServer, admin_token: str, received: ResponseLog
) -> Iterator[httpx.Client]:
    with received.client(issuer_server, admin_token) as client:
        yield client


@pytest.fixture(scope="module")
def workspace(admin: httpx.Client) -> dict[str, str]:
    """An organization and a workspace in its Default Project, with their ids."""
    org = tfe.create_organization(admin, tfe.unique_name("identity"))
    ws_name = "network-prod"
    ws_id = tfe.create_workspace(admin, org, ws_name)
    org_doc = tfe.document(admin.get(f"/api/v2/organizations/{org}"), 200)
    org_id = org_doc["data"]["attributes"]["external-id"]  # the JSON:API id is the name
    ws = tfe.read_workspace(admin, org, ws_name)
    project_id = ws["relationships"]["project"]["data"]["id"]
    return {"org": org, "org_id": org_id, "ws": ws_name, "ws_id": ws_id, "project_id": project_id}


def remember_keys(server: CairnServer, seen: dict[str, KeyMaterial]) -> None:
    for material in private_keys(sqlite_url(server.data_dir), secret_of(server)):
        seen.setdefault(material.kid, material)


def mint_ok(
    admin: httpx.Client, workspace: dict[str, str], tokens: list[str], **kwargs: Any
) -> dict[str, Any]:
    doc = minted(admin, workspace["ws_id"], **kwargs)
    tokens.append(doc["token"])
    return doc


# --- 1. discovery and JWKS --------------------------------------------------------------------


def test_discovery_document(issuer_server: CairnServer, admin: httpx.Client) -> None:
    response = admin.get(DISCOVERY)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["cache-control"] == "public, max-age=300"
    doc = response.json()
    assert doc["issuer"] == issuer_server.url
    assert doc["jwks_uri"] == issuer_server.url + JWKS
    assert doc["response_types_supported"] == ["id_token"]
    assert doc["subject_types_supported"] == ["public"]
    assert doc["id_token_signing_alg_values_supported"] == ["RS256"]
    assert doc["scopes_supported"] == ["openid"]
    assert set(doc["claims_supported"]) >= GOLDEN_CLAIM_NAMES

    unauthenticated = httpx.get(
        issuer_server.url + DISCOVERY, verify=issuer_server.ssl_context(), timeout=10.0
    )
    assert unauthenticated.status_code == 200
    assert unauthenticated.content == response.content

    etag = response.headers["etag"]
    again = admin.get(DISCOVERY, headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == etag


def test_jwks_paths_identical_with_cache_headers_and_etag(
    issuer_server: CairnServer, admin: httpx.Client
) -> None:
    plain = httpx.get(issuer_server.url + JWKS, verify=issuer_server.ssl_context(), timeout=10.0)
    dotted = admin.get(JWKS_JSON)
    for response in (plain, dotted):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/json")
        assert response.headers["cache-control"] == "public, max-age=300"
        assert response.headers["etag"].startswith('"')
    assert plain.content == dotted.content
    assert plain.headers["etag"] == dotted.headers["etag"]

    etag = plain.headers["etag"]
    for path in (JWKS, JWKS_JSON):
        not_modified = admin.get(path, headers={"If-None-Match": etag})
        assert not_modified.status_code == 304, path
        assert not_modified.content == b""
        assert not_modified.headers["etag"] == etag
        assert not_modified.headers["cache-control"] == "public, max-age=300"
        other = admin.get(path, headers={"If-None-Match": '"something-else"'})
        assert other.status_code == 200
        assert other.content == plain.content


def test_jwks_keys_are_public_rsa_signing_keys(admin: httpx.Client) -> None:
    jwks = jwks_of(admin)
    assert set(jwks) == {"keys"}
    keys = jwks["keys"]
    assert 2 <= len(keys) <= 8
    for key in keys:
        assert set(key) == {"kty", "use", "alg", "kid", "n", "e"}, key
        assert (key["kty"], key["use"], key["alg"]) == ("RSA", "sig", "RS256")
        for member in PRIVATE_JWK_MEMBERS:
            assert member not in key
        for member in ("kid", "n", "e"):
            assert B64URL.match(key[member]), f"{member} is not base64url without padding"
        assert key["e"] == "AQAB"
        assert len(base64.urlsafe_b64decode(key["n"] + "==")) == 256  # RSA-2048
        # RFC 7638 thumbprint, computed by jwcrypto.
        assert jc_jwk.JWK(**key).thumbprint() == key["kid"]
    assert len(set(kids_of(jwks))) == len(keys)


# --- 2. minting -------------------------------------------------------------------------------


def test_minted_token_verifies_through_discovery_with_pyjwt_and_jwcrypto(
    issuer_server: CairnServer,
    admin: httpx.Client,
    workspace: dict[str, str],
    minted_tokens: list[str],
) -> None:
    doc = mint_ok(admin, workspace, minted_tokens, audience="sts.amazonaws.com")
    assert set(doc) >= {"token", "expires_at", "run_id"}
    token = doc["token"]
    header = header_of(token)
    assert header == {"alg": "RS256", "kid": header["kid"], "typ": "JWT"}
    assert header["kid"] == active_kid(admin_keys(admin))
    assert header["kid"] in kids_of(jwks_of(admin))

    claims = verifier_for(issuer_server).verify(token, "sts.amazonaws.com")
    assert claims["iss"] == issuer_server.url
    assert claims["aud"] == "sts.amazonaws.com"
    assert doc["run_id"] == claims["terraform_run_id"]
    assert re.fullmatch(r"run-[A-Za-z0-9]+", doc["run_id"])
    assert datetime.fromisoformat(doc["expires_at"]).timestamp() == claims["exp"]

    with pytest.raises(jwt.InvalidAudienceError):
        verifier_for(issuer_server).with_pyjwt(token, "another-audience")
    with pytest.raises(jc_jwt.JWTInvalidClaimValue):
        verifier_for(issuer_server).with_jwcrypto(token, "another-audience")


@pytest.mark.parametrize("phase", ["plan", "apply"])
def test_golden_claims(
    issuer_server: CairnServer,
    admin: httpx.Client,
    workspace: dict[str, str],
    minted_tokens: list[str],
    phase: str,
) -> None:
    doc = mint_ok(
        admin, workspace, minted_tokens, audience="vault.example.com", phase=phase, run_id="run-X1"
    )
    claims = verifier_for(issuer_server).verify(doc["token"], "vault.example.com")
    assert set(claims) == GOLDEN_CLAIM_NAMES
    full = f"organization:{workspace['org']}:project:Default Project:workspace:{workspace['ws']}"
    expected = {
        "iss": issuer_server.url,
        "aud": "vault.example.com",
        "sub": f"{full}:run_phase:{phase}",
        "terraform_organization_id": workspace["org_id"],
        "terraform_organization_name": workspace["org"],
        "terraform_project_id": workspace["project_id"],
        "terraform_project_name": "Default Project",
        "terraform_workspace_id": workspace["ws_id"],
        "terraform_workspace_name": workspace["ws"],
        "terraform_full_workspace": full,
        "terraform_run_id": "run-X1",
        "terraform_run_phase": phase,
    }
    assert {name: claims[name] for name in expected} == expected
    assert doc["run_id"] == "run-X1"
    for name in TERRAFORM_CLAIMS | {"jti", "sub", "iss"}:
        assert isinstance(claims[name], str), name
    assert re.fullmatch(
        r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", claims["jti"]
    )


def test_audience_is_a_string_for_one_and_a_list_for_two(
    issuer_server: CairnServer,
    admin: httpx.Client,
    workspace: dict[str, str],
    minted_tokens: list[str],
) -> None:
    verifier = verifier_for(issuer_server)
    one = mint_ok(admin, workspace, minted_tokens, audience="api://AzureADTokenExchange")
    assert verifier.verify(one["token"], "api://AzureADTokenExchange")["aud"] == (
        "api://AzureADTokenExchange"
    )
    one_in_list = mint_ok(admin, workspace, minted_tokens, audience=["only-one"])
    assert claims_of(one_in_list["token"])["aud"] == "only-one"
    two = mint_ok(admin, workspace, minted_tokens, audience=["aud-a", "aud-b"])
    for audience in ("aud-a", "aud-b"):
        assert verifier.verify(two["token"], audience)["aud"] == ["aud-a", "aud-b"]


@pytest.mark.parametrize(
    ("ttl", "lifetime"),
    [(60, 60), (900, 900), (24 * 3600, SIX_HOURS)],
    ids=["1min", "15min", "24h-capped"],
)
def test_lifetime_and_time_claims(
    admin: httpx.Client,
    workspace: dict[str, str],
    minted_tokens: list[str],
    ttl: int,
    lifetime: int,
) -> None:
    before = int(time.time())
    doc = mint_ok(admin, workspace, minted_tokens, ttl_seconds=ttl)
    after = int(time.time())
    claims = claims_of(doc["token"])
    assert claims["nbf"] <= claims["iat"] < claims["exp"]
    assert before - 2 <= claims["iat"] <= after + 2
    assert claims["exp"] - claims["iat"] == lifetime


def test_72h_lifetime_is_capped_at_6h(
    admin: httpx.Client, workspace: dict[str, str], minted_tokens: list[str]
) -> None:
    response = mint(admin, workspace["ws_id"], ttl_seconds=72 * 3600)
    assert response.status_code == 201, response.text
    minted_tokens.append(response.json()["token"])
    claims = claims_of(response.json()["token"])
    assert claims["exp"] - claims["iat"] == SIX_HOURS


def test_jti_unique_over_50_mints(
    admin: httpx.Client, workspace: dict[str, str], minted_tokens: list[str]
) -> None:
    docs = [mint_ok(admin, workspace, minted_tokens) for _ in range(50)]
    jtis = [claims_of(doc["token"])["jti"] for doc in docs]
    assert len(set(jtis)) == 50
    assert len({doc["run_id"] for doc in docs}) == 50


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        ({"run_phase": "plan"}, "/audience"),
        ({"audience": [], "run_phase": "plan"}, "/audience"),
        ({"audience": "a", "run_phase": "destroy"}, "/run_phase"),
        ({"audience": "a"}, "/run_phase"),
        ({"audience": "a", "run_phase": "plan", "ttl_seconds": 0}, "/ttl_seconds"),
        ({"audience": "a", "run_phase": "plan", "ttl_seconds": -5}, "/ttl_seconds"),
        ({"audience": "a", "run_phase": "plan", "run_id": "build-7"}, "/run_id"),
        ({"audience": "a", "run_phase": "plan", "run_id": "run-a:b"}, "/run_id"),
    ],
    ids=[
        "no-audience",
        "empty-audience-list",
        "bad-phase",
        "no-phase",
        "ttl-0",
        "ttl-negative",
        "run-id-malformed",
        "run-id-colon",
    ],
)
def test_mint_rejects_bad_input_with_jsonapi_422(
    admin: httpx.Client, workspace: dict[str, str], body: dict[str, Any], pointer: str
) -> None:
    response = admin.post(f"/api/cairn/v1/workspaces/{workspace['ws_id']}/id-tokens", json=body)
    assert response.status_code == 422, response.text
    (error,) = response.json()["errors"]
    assert error["status"] == "422"
    assert error["detail"]
    assert error["source"] == {"pointer": pointer}
    assert "token" not in response.json()


def test_mint_unknown_workspace_404_and_no_token_401(
    issuer_server: CairnServer, admin: httpx.Client, workspace: dict[str, str]
) -> None:
    body = {"audience": "a", "run_phase": "plan"}
    missing = admin.post("/api/cairn/v1/workspaces/ws-doesnotexist0000/id-tokens", json=body)
    assert missing.status_code == 404, missing.text
    assert missing.json()["errors"][0]["status"] == "404"

    url = f"{issuer_server.url}/api/cairn/v1/workspaces/{workspace['ws_id']}/id-tokens"
    for headers in ({}, {"Authorization": "Bearer not-a-token"}):
        anonymous = httpx.post(
            url, json=body, headers=headers, verify=issuer_server.ssl_context(), timeout=10.0
        )
        assert anonymous.status_code == 401, anonymous.text
        assert anonymous.json()["errors"][0]["status"] == "401"
        assert "token" not in anonymous.json()


def test_each_mint_is_audited_with_its_jti_and_never_the_token(
    issuer_server: CairnServer,
    admin: httpx.Client,
    workspace: dict[str, str],
    minted_tokens: list[str],
) -> None:
    docs = [mint_ok(admin, workspace, minted_tokens, phase=p) for p in ("plan", "apply", "plan")]
    events = sqlite_rows(
        issuer_server.data_dir / "cairn.db",
        "SELECT action, subject, details, actor_name FROM audit_events "
        "WHERE action = 'oidc.token.mint'",
    )
    for doc in docs:
        claims = claims_of(doc["token"])
        matching = [e for e in events if claims["jti"] in e[2]]
        assert len(matching) == 1, f"audit events for jti {claims['jti']}: {matching}"
        _, subject, details, actor = matching[0]
        assert subject == claims["sub"]
        assert actor, "the audit event does not name who minted"
        recorded = json.loads(details)
        assert recorded["jti"] == claims["jti"]
        assert recorded["kid"] == header_of(doc["token"])["kid"]
        assert recorded["run_id"] == claims["terraform_run_id"]
        assert recorded["exp"] == claims["exp"]
    # No audit row anywhere holds a token (or its signature) minted so far.
    dump = sqlite_dump(issuer_server.data_dir / "cairn.db")
    for token in minted_tokens:
        assert token not in dump
        assert token.rsplit(".", 1)[1] not in dump


# --- 3. the admin key API ---------------------------------------------------------------------

METADATA = {
    "kid",
    "version",
    "alg",
    "state",
    "created-at",
    "published-at",
    "activated-at",
    "retired-at",
    "retire-until",
    "revoked-at",
}


def test_admin_key_list_is_metadata_only(
    issuer_server: CairnServer, admin: httpx.Client, seen_keys: dict[str, KeyMaterial]
) -> None:
    remember_keys(issuer_server, seen_keys)
    keys = admin_keys(admin)
    for key in keys:
        assert set(key) == METADATA, key
        assert type(key["version"]) is int
        assert key["alg"] == "RS256"
    assert sorted(k["state"] for k in keys).count("active") == 1
    assert [k["state"] for k in keys].count("next") == 1
    published = {k["kid"] for k in keys if k["state"] in ("active", "next", "retired")}
    assert published <= set(kids_of(jwks_of(admin)))


def test_graceful_rotation_refused_before_prepublication_then_forced(
    issuer_server: CairnServer,
    admin: httpx.Client,
    workspace: dict[str, str],
    minted_tokens: list[str],
    seen_keys: dict[str, KeyMaterial],
) -> None:
    remember_keys(issuer_server, seen_keys)
    before = admin_keys(admin)
    jwks_before = jwks_of(admin)
    old_active = active_kid(before)
    (old_next,) = [k["kid"] for k in before if k["state"] == "next"]
    token = mint_ok(admin, workspace, minted_tokens)["token"]

    for body in ({"mode": "graceful"}, {"mode": "graceful", "force": False}, {}):
        refused = admin.post("/api/cairn/v1/admin/oidc/keys/rotate", json=body)
        assert refused.status_code == 409, refused.text
        (error,) = refused.json()["errors"]
        assert error["status"] == "409"
        assert old_next in error["detail"]
        assert "force" in error["detail"]
        assert "24 h" in error["detail"]
    assert admin_keys(admin) == before
    assert jwks_of(admin) == jwks_before

    forced = rotate(admin, "graceful", force=True)
    assert forced.status_code == 200, forced.text
    data = forced.json()["data"]
    assert data["rotation"]["action"] == "graceful"
    assert data["rotation"]["forced"] is True
    states = {k["kid"]: k["state"] for k in data["keys"]}
    assert states[old_active] == "retired"
    assert states[old_next] == "active"  # the pre-published key signs now
    (new_next,) = [kid for kid, state in states.items() if state == "next"]
    assert new_next not in (old_active, old_next)
    retired = next(k for k in data["keys"] if k["kid"] == old_active)
    assert retired["retire-until"] is not None
    remember_keys(issuer_server, seen_keys)

    jwks_after = kids_of(jwks_of(admin))
    assert {old_active, old_next, new_next} <= set(jwks_after)
    assert header_of(mint_ok(admin, workspace, minted_tokens)["token"])["kid"] == old_next
    verifier_for(issuer_server).verify(token, "sts.amazonaws.com")  # signed by the retired key

    sealed = dict(
        sqlite_rows(
            issuer_server.data_dir / "cairn.db",
            "SELECT kid, sealed_private_key FROM oidc_signing_keys",
        )
    )
    assert sealed[old_active] is None, "a retired key's private key must be erased"
    events = sqlite_rows(
        issuer_server.data_dir / "cairn.db",
        "SELECT details FROM audit_events WHERE action = 'oidc.key.graceful'",
    )
    assert events and all('"forced":true' in e[0] for e in events)


def test_emergency_rotation_withdraws_the_active_key_at_once(
    issuer_server: CairnServer,
    admin: httpx.Client,
    workspace: dict[str, str],
    minted_tokens: list[str],
    seen_keys: dict[str, KeyMaterial],
) -> None:
    verifier = verifier_for(issuer_server)
    remember_keys(issuer_server, seen_keys)
    from_retired = mint_ok(admin, workspace, minted_tokens)["token"]
    assert rotate(admin, "graceful", force=True).status_code == 200
    remember_keys(issuer_server, seen_keys)
    compromised = active_kid(admin_keys(admin))
    (compromised_next,) = [k["kid"] for k in admin_keys(admin) if k["state"] == "next"]
    from_compromised = mint_ok(admin, workspace, minted_tokens)["token"]
    assert header_of(from_compromised)["kid"] == compromised
    verifier.verify(from_compromised, "sts.amazonaws.com")

    response = rotate(admin, "emergency")
    assert response.status_code == 200, response.text
    assert response.json()["data"]["rotation"]["action"] == "emergency"
    remember_keys(issuer_server, seen_keys)

    # The very next JWKS (both paths) no longer holds the revoked keys.
    for path in (JWKS, JWKS_JSON):
        served = admin.get(path).json()
        assert compromised not in kids_of(served), path
        assert compromised_next not in kids_of(served), path
    states = {k["kid"]: k["state"] for k in admin_keys(admin)}
    assert states[compromised] == "revoked"
    assert states[compromised_next] == "revoked"
    new_active = active_kid(admin_keys(admin))
    assert new_active in kids_of(jwks_of(admin))

    with pytest.raises(jwt.PyJWKClientError):
        verifier.with_pyjwt(from_compromised, "sts.amazonaws.com")
    with pytest.raises(jc_jwt.JWTMissingKey):
        verifier.with_jwcrypto(from_compromised, "sts.amazonaws.com")
    # A token of a gracefully retired key still verifies.
    assert header_of(from_retired)["kid"] in kids_of(jwks_of(admin))
    verifier.verify(from_retired, "sts.amazonaws.com")
    fresh = mint_ok(admin, workspace, minted_tokens)["token"]
    assert header_of(fresh)["kid"] == new_active
    verifier.verify(fresh, "sts.amazonaws.com")

    db = issuer_server.data_dir / "cairn.db"
    sealed = dict(sqlite_rows(db, "SELECT kid, sealed_private_key FROM oidc_signing_keys"))
    assert sealed[compromised] is None and sealed[compromised_next] is None
    assert (
        sqlite_rows(db, "SELECT count(*) FROM audit_events WHERE action = 'oidc.key.emergency'")[0][
            0
        ]
        >= 1
    )


def test_trim_is_idempotent_and_keeps_needed_keys(admin: httpx.Client) -> None:
    keys_before = admin_keys(admin)
    jwks_before = jwks_of(admin)
    for _ in range(2):
        response = admin.post(TRIM)
        assert response.status_code == 200, response.text
        trim = response.json()["data"]["trim"]
        assert trim["action"] == "trim"
        assert trim["changes"] == []  # retired keys are all within their retention
        assert response.json()["data"]["keys"] == keys_before
    assert admin_keys(admin) == keys_before
    assert jwks_of(admin) == jwks_before


# --- 4. sealing -------------------------------------------------------------------------------


def test_no_private_key_material_in_dump_log_or_responses(
    issuer_server: CairnServer,
    admin: httpx.Client,
    received: ResponseLog,
    seen_keys: dict[str, KeyMaterial],
    minted_tokens: list[str],
) -> None:
    remember_keys(issuer_server, seen_keys)
    admin_keys(admin)
    jwks_of(admin)
    assert len(seen_keys) >= 2
    db = issuer_server.data_dir / "cairn.db"

    for kid, blob in sqlite_rows(db, "SELECT kid, sealed_private_key FROM oidc_signing_keys"):
        if blob is not None:
            assert_opaque(kid, blob)
    dump = sqlite_dump(db)
    wal = db.with_name(db.name + "-wal")
    raw_db = db.read_bytes() + (wal.read_bytes() if wal.exists() else b"")
    log = issuer_server.log_path.read_bytes()
    leaks: list[str] = []
    for material in seen_keys.values():
        leaks += [f"dump: {x}" for x in material.leaks(text=dump, data=raw_db)]
        leaks += [f"server log: {x}" for x in material.leaks(data=log)]
        for i, response in enumerate(received.responses):
            leaks += [f"response #{i}: {x}" for x in material.leaks(data=response)]
    assert not leaks
    assert "PRIVATE KEY" not in dump
    assert b"PRIVATE KEY" not in log
    assert received.responses, "no responses were recorded"
    for token in minted_tokens:
        assert token.rsplit(".", 1)[1].encode() not in log, "a minted token is in the server log"


def run_once(server: CairnServer, timeout: float = 60.0) -> tuple[int | None, str]:
    """Start `server`'s command once: (exit status, output) if it exits before it is ready;
    (None, output) if it became ready (then it is stopped again)."""
    out_path = server.data_dir.parent / f"{server.data_dir.name}-run-once.log"
    with open(out_path, "wb") as out:
        proc = subprocess.Popen(
            server.command(),
            env=server.environment(),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    processes.register(proc)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return proc.returncode, out_path.read_text(errors="replace")
            try:
                ready = httpx.get(f"{server.url}/readyz", verify=server.ssl_context(), timeout=1.0)
                if ready.status_code == 200:
                    return None, out_path.read_text(errors="replace")
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"cairn neither exited nor became ready: {out_path.read_text()}")
    finally:
        processes.stop(proc)


def test_damaged_sealed_key_stops_the_server_and_nothing_changes(
    server_factory: Any, admin_token: str
) -> None:
    srv: CairnServer = server_factory("sqlite", plain_http=True)
    with srv.client(admin_token) as client:
        keys = admin_keys(client)
        jwks = jwks_of(client)
        org = tfe.create_organization(client, tfe.unique_name("sealed"))
        ws_id = tfe.create_workspace(client, org, "w")
        token = minted(client, ws_id)["token"]
    srv.stop()
    db = srv.data_dir / "cairn.db"
    active = active_kid(keys)
    (nxt,) = [k["kid"] for k in keys if k["state"] == "next"]
    sealed = dict(sqlite_rows(db, "SELECT kid, sealed_private_key FROM oidc_signing_keys"))

    def store(values: dict[str, bytes]) -> None:
        for kid, blob in values.items():
            sqlite_execute(
                db, "UPDATE oidc_signing_keys SET sealed_private_key = ? WHERE kid = ?", (blob, kid)
            )

    flipped = bytearray(sealed[active])
    flipped[len(flipped) // 2] ^= 0x01
    damages = {
        "flipped byte": {active: bytes(flipped)},
        "swapped rows": {active: sealed[nxt], nxt: sealed[active]},
    }
    for what, damage in damages.items():
        store(damage)
        status, output = run_once(srv)
        assert status is not None, f"{what}: cairn started and serves with a damaged key"
        assert status != 0, f"{what}: exit status 0"
        assert active in output, f"{what}: the error does not name kid {active}:\n{output}"
        assert "does not open" in output, f"{what}: no clear unseal error:\n{output}"
        store(sealed)

    srv.start()
    with srv.client(admin_token) as client:
        assert admin_keys(client) == keys
        assert jwks_of(client) == jwks
        again = minted(client, ws_id)["token"]
    assert header_of(again)["kid"] == active
    verifier_for(srv).verify(token, "sts.amazonaws.com")


def test_damaged_next_key_is_caught_before_it_signs(server_factory: Any, admin_token: str) -> None:
    """The next key's seal is only opened when it becomes active: a damaged one must be
    caught at start or by refusing the rotation, never by a rotation that leaves no signer."""
    srv: CairnServer = server_factory("sqlite", plain_http=True)
    with srv.client(admin_token) as client:
        keys = admin_keys(client)
        org = tfe.create_organization(client, tfe.unique_name("sealed-next"))
        ws_id = tfe.create_workspace(client, org, "w")
    srv.stop()
    db = srv.data_dir / "cairn.db"
    active = active_kid(keys)
    (nxt,) = [k["kid"] for k in keys if k["state"] == "next"]
    (blob,) = sqlite_rows(
        db, "SELECT sealed_private_key FROM oidc_signing_keys WHERE kid = ?", (nxt,)
    )[0]
    flipped = bytearray(blob)
    flipped[len(flipped) // 2] ^= 0x01
    sqlite_execute(
        db,
        "UPDATE oidc_signing_keys SET sealed_private_key = ? WHERE kid = ?",
        (bytes(flipped), nxt),
    )

    try:
        srv.start()
    except RuntimeError as exc:  # refusing to start is as good as for a damaged active key
        assert nxt in str(exc) and "does not open" in str(exc), exc
        return
    with srv.client(admin_token) as client:
        response = rotate(client, "graceful", force=True)
        assert response.status_code == 409, response.text
        assert nxt in response.json()["errors"][0]["detail"]
        assert admin_keys(client) == keys
        assert header_of(minted(client, ws_id)["token"])["kid"] == active


def test_wrong_secret_key_is_a_startup_error_and_changes_nothing(
    server_factory: Any, admin_token: str
) -> None:
    srv: CairnServer = server_factory("sqlite", plain_http=True)
    with srv.client(admin_token) as client:
        keys = admin_keys(client)
        jwks = jwks_of(client)
    srv.stop()
    db = srv.data_dir / "cairn.db"
    dump_before = sqlite_dump(db)

    wrong = CairnServer(
        data_dir=srv.data_dir,
        plain_http=True,
        admin_token=admin_token,
        env={"CAIRN_SECRET_KEY": "a-different-secret-key-0123456789abcdef"},
        port=srv.port,
    )
    status, output = run_once(wrong)
    assert status == 2, f"exit status {status}:\n{output}"
    assert "CAIRN_SECRET_KEY" in output
    assert "Traceback" not in output
    assert sqlite_dump(db) == dump_before

    srv.start()
    with srv.client(admin_token) as client:
        assert admin_keys(client) == keys
        assert jwks_of(client) == jwks


# --- 5. replicas on one PostgreSQL ------------------------------------------------------------


def pg_replica(
    root: Path, database_url: str, admin_token: str, name: str, **env: str
) -> CairnServer:
    return CairnServer(
        data_dir=root / name,
        database_url=database_url,
        plain_http=True,
        admin_token=admin_token,
        env={"CAIRN_SECRET_KEY": TEST_SECRET_KEY, **env},
    )


def key_states(database_url: str) -> list[tuple[int, str, str]]:
    rows = postgres_rows(
        database_url, "SELECT version, state, kid FROM oidc_signing_keys ORDER BY version"
    )
    return [(int(v), str(s), str(k)) for v, s, k in rows]


def assert_one_active_one_next(database_url: str) -> str:
    states = [s for _, s, _ in key_states(database_url)]
    assert states.count("active") == 1, states
    assert states.count("next") == 1, states
    (kid,) = [k for _, s, k in key_states(database_url) if s == "active"]
    return kid


def start_at_once(servers: list[CairnServer]) -> None:
    """Start every server at the same instant (distinct ports chosen beforehand)."""
    ports: set[int] = set()
    for srv in servers:
        while not srv.port or srv.port in ports:
            srv.port = processes.free_port()
        ports.add(srv.port)
    simultaneously([partial(srv.start, timeout=120.0) for srv in servers], timeout=150.0)


def assert_one_initial_key_set(servers: list[CairnServer], admin_token: str) -> None:
    """Replicas that started together on an empty database: exactly one key set (version 1
    active, version 2 next, two audit events), served and used for signing by every one."""
    url = servers[0].database_url
    assert url is not None
    rows = key_states(url)
    assert [(v, s) for v, s, _ in rows] == [(1, "active"), (2, "next")], rows
    initial = postgres_rows(
        url, "SELECT count(*) FROM audit_events WHERE action = 'oidc.key.initial'"
    )
    assert initial[0][0] == 2
    with servers[0].client(admin_token) as first:
        org = tfe.create_organization(first, tfe.unique_name("start"))
        ws_id = tfe.create_workspace(first, org, "w")
    for srv in servers:
        with srv.client(admin_token) as client:
            assert set(kids_of(jwks_of(client))) == {rows[0][2], rows[1][2]}, srv.url
            assert header_of(minted(client, ws_id)["token"])["kid"] == rows[0][2], srv.url


@pytest.mark.postgres
def test_four_replicas_starting_at_once_create_one_key_set(
    pg: PostgresCluster, admin_token: str, tmp_path: Path
) -> None:
    # Two at once: test_replica_without_listener_converges_within_the_cache_ttl.
    url = pg.create_database("identity_start")
    servers = [pg_replica(tmp_path, url, admin_token, f"r{i}") for i in range(4)]
    try:
        start_at_once(servers)
        assert_one_initial_key_set(servers, admin_token)
    finally:
        for srv in servers:
            srv.stop()


@pytest.fixture
def pair(replicas: list[CairnServer], admin_token: str) -> Iterator[dict[str, Any]]:
    """Admin clients on replicas A and B and a workspace, all warm."""
    a, b = replicas
    with a.client(admin_token) as ca, b.client(admin_token) as cb:
        org = tfe.create_organization(ca, tfe.unique_name("replicas"))
        ws_id = tfe.create_workspace(ca, org, "w")
        jwks_of(cb)
        yield {"a": a, "b": b, "ca": ca, "cb": cb, "ws_id": ws_id, "db": a.database_url}


def converged(client: httpx.Client, reference: bytes) -> bool | None:
    return True if client.get(JWKS).content == reference else None


def serves(client: httpx.Client, kids: set[str]) -> bool | None:
    return True if set(kids_of(jwks_of(client))) == kids else None


def divergence(pair: dict[str, Any]) -> Callable[[], str]:
    """Describes how replica B differs from A and the database (for failure messages)."""

    def describe() -> str:
        rows = key_states(pair["db"])
        return (
            f"B's JWKS is not A's.\n database: {rows}\n"
            f" A serves {kids_of(jwks_of(pair['ca']))}\n B serves {kids_of(jwks_of(pair['cb']))}\n"
            f" B's log tail:\n{pair['b'].output(3000)}"
        )

    return describe


@pytest.mark.parametrize("replicas", ONLY_POSTGRES, indirect=True)
@pytest.mark.parametrize("mode", ["graceful", "emergency"])
def test_rotation_on_one_replica_reaches_the_other_within_1s(
    pair: dict[str, Any], mode: str
) -> None:
    ca, cb, ws_id = pair["ca"], pair["cb"], pair["ws_id"]
    old_active = active_kid(admin_keys(cb))
    response = rotate(ca, mode, force=True)
    assert response.status_code == 200, response.text
    new_active = active_kid(response.json()["data"]["keys"])
    reference = ca.get(JWKS).content
    assert new_active in kids_of(httpx.Response(200, content=reference).json())

    _, jwks_after = wait_for(partial(converged, cb, reference), timeout=5.0, what=divergence(pair))
    doc, mint_after = wait_for(
        partial(minted_with_kid, cb, ws_id, new_active),
        timeout=5.0,
        what="B signing with the new key",
    )
    print(f"{mode}: B's JWKS after {jwks_after:.3f} s, mint after {mint_after:.3f} s")
    assert jwks_after <= 1.0, f"B served the new JWKS after {jwks_after:.2f} s"
    assert mint_after <= 1.0, f"B signed with the new key after {mint_after:.2f} s"
    if mode == "emergency":
        assert old_active not in kids_of(jwks_of(cb))
    verifier_for(pair["b"]).verify(doc["token"], "sts.amazonaws.com")
    assert assert_one_active_one_next(pair["db"]) == new_active


@pytest.mark.parametrize("replicas", ONLY_POSTGRES, indirect=True)
def test_concurrent_rotations_on_two_replicas_one_wins(pair: dict[str, Any]) -> None:
    ca, cb = pair["ca"], pair["cb"]
    for mode_a, mode_b in [
        ("graceful", "graceful"),
        ("emergency", "emergency"),
        ("graceful", "emergency"),
    ]:
        results = simultaneously(
            [
                partial(rotate, ca, mode_a, force=True),
                partial(rotate, cb, mode_b, force=True),
            ]
        )
        statuses = sorted(r.status_code for r in results)
        bodies = [r.text for r in results]
        assert statuses == [200, 409], f"{mode_a}/{mode_b}: {statuses} {bodies}"
        winner = next(r for r in results if r.status_code == 200)
        loser = next(r for r in results if r.status_code == 409)
        assert "another rotation" in loser.json()["errors"][0]["detail"]
        active = assert_one_active_one_next(pair["db"])
        assert active == active_kid(winner.json()["data"]["keys"])
        # Both replicas (the loser heard of the winner's rotation by NOTIFY) serve the
        # published keys of the database: next, active and retired ones, never revoked ones.
        published = {k for _, s, k in key_states(pair["db"]) if s in ("active", "next", "retired")}
        for client in (ca, cb):
            wait_for(partial(serves, client, published), timeout=1.0, what=divergence(pair))


@pytest.mark.parametrize("replicas", ONLY_POSTGRES, indirect=True)
def test_no_private_key_material_in_postgres(replicas: list[CairnServer], admin_token: str) -> None:
    url = replicas[0].database_url
    assert url is not None
    materials = private_keys(url, TEST_SECRET_KEY)
    assert len(materials) == 2  # active and next
    for kid, blob in postgres_rows(url, "SELECT kid, sealed_private_key FROM oidc_signing_keys"):
        if blob is not None:
            assert_opaque(kid, bytes(blob))
    text, binary = postgres_dump(url)
    assert "PRIVATE KEY" not in text
    leaks: list[str] = []
    for material in materials:
        leaks += [f"dump: {x}" for x in material.leaks(text=text, data=binary)]
        for srv in replicas:
            leaks += [
                f"log of {srv.url}: {x}" for x in material.leaks(data=srv.log_path.read_bytes())
            ]
        with replicas[0].client(admin_token) as client:
            for path in (ADMIN_KEYS, JWKS):
                leaks += [f"{path}: {x}" for x in material.leaks(data=client.get(path).content)]
    assert not leaks


@pytest.mark.postgres
def test_replica_without_listener_converges_within_the_cache_ttl(
    pg: PostgresCluster, admin_token: str, tmp_path: Path
) -> None:
    url = pg.create_database("identity_nolisten")
    a = pg_replica(tmp_path, url, admin_token, "a")
    b = pg_replica(tmp_path, url, admin_token, "b", CAIRN_OIDC_LISTEN="0")
    try:
        # Both at once on the empty database: one key set (the 2-replica case of
        # test_four_replicas_starting_at_once_create_one_key_set, here to save a start).
        start_at_once([a, b])
        assert_one_initial_key_set([a, b], admin_token)
        with a.client(admin_token) as ca, b.client(admin_token) as cb:
            org = tfe.create_organization(ca, tfe.unique_name("nolisten"))
            ws_id = tfe.create_workspace(ca, org, "w")
            stale = cb.get(JWKS).content
            assert stale == ca.get(JWKS).content
            response = rotate(ca, "graceful", force=True)
            assert response.status_code == 200, response.text
            rotated = time.monotonic()
            new_active = active_kid(response.json()["data"]["keys"])
            reference = ca.get(JWKS).content

            # Without a listener B does not hear of the rotation...
            time.sleep(1.0)
            assert cb.get(JWKS).content == stale, "B converged at once: is the listener cut?"
            # ... and its cache TTL (60 s) catches up.
            wait_for(partial(converged, cb, reference), timeout=65.0, interval=0.25, what="B")
            jwks_after = time.monotonic() - rotated
            doc, _ = wait_for(
                partial(minted_with_kid, cb, ws_id, new_active),
                timeout=5.0,
                interval=0.25,
                what="B signing with the new key",
            )
            mint_after = time.monotonic() - rotated
            # The TTL runs from B's last load (before the rotation); its refresher polls every
            # 0.2 s: allow one second of slack over the 60 s.
            print(f"listener cut: B's JWKS after {jwks_after:.1f} s, mint after {mint_after:.1f} s")
            assert jwks_after <= 61.0, f"B served the new JWKS after {jwks_after:.1f} s"
            assert mint_after <= 61.0, f"B signed with the new key after {mint_after:.1f} s"
            verifier_for(b).verify(doc["token"], "sts.amazonaws.com")
    finally:
        b.stop()
        a.stop()
