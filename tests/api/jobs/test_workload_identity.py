"""The agent protocol's workload-identity call (``POST /api/agent/v1/jobs/{id}/workload-identity``)
in-process on SQLite, then PostgreSQL: one token per configuration the job's variables ask for,
verified by an independent verifier (PyJWT with cairn's discovery and JWKS fetched over HTTP);
``run_phase`` per phase and per ``speculative-plan-credentials`` mode; lifetimes; audit events
(jti, never the token); misconfigurations, other jobs and stale attempts refused; the setting
on workspaces and organizations."""

from __future__ import annotations

import dataclasses
import json
from datetime import timedelta
from typing import Any

import httpx
import jwt
import pytest
from sqlalchemy import select

from cairn.audit.model import AuditEvent
from cairn.clock import iso8601
from tests.api.jobs.conftest import JobSide, install
from tests.support.app import CT, InProcessCairn, create_organization, create_workspace, document

pytestmark = pytest.mark.anyio

AGENT = "/api/agent/v1"
ROLE = "arn:aws:iam::123456789012:role/tfc-plan"
AWS_AND_GENERIC = {
    "TFC_AWS_PROVIDER_AUTH": "true",
    "TFC_AWS_RUN_ROLE_ARN": ROLE,
    "TFC_WORKLOAD_IDENTITY_AUDIENCE_TAILSCALE": "tailscale.example",
    "TFC_VAULT_PROVIDER_AUTH": "true",
    "TFC_VAULT_ADDR": "https://vault.example.com:8200",
    "TFC_VAULT_RUN_ROLE": "tfc",
}


@pytest.fixture
def side(any_app: InProcessCairn) -> JobSide:
    return install(any_app)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def workspace(app: InProcessCairn, env: dict[str, str]) -> tuple[str, str, str]:
    """(organization, workspace ID, workspace name) with ``env`` as environment variables."""
    async with app.client(app.admin_token) as admin:
        org = await create_organization(admin)
        ws = await create_workspace(admin, org)
        for key, value in env.items():
            body = {
                "data": {
                    "type": "vars",
                    "attributes": {"key": key, "value": value, "category": "env"},
                }
            }
            document(await admin.post(f"/api/v2/workspaces/{ws.id}/vars", json=body), 201)
    return org, ws.id, ws.name


async def patch(app: InProcessCairn, path: str, kind: str, attributes: dict[str, Any]) -> Any:
    async with app.client(app.admin_token) as admin:
        return await admin.patch(
            path,
            content=json.dumps({"data": {"type": kind, "attributes": attributes}}),
            headers=CT,
        )


async def claim(c: httpx.AsyncClient, session: str) -> dict[str, Any]:
    return document(await c.post(f"{AGENT}/jobs/claim?wait=0", headers=bearer(session)), 200)


async def identity(
    c: httpx.AsyncClient, job: dict[str, Any], *, attempt: int | None = None, url: str = ""
) -> httpx.Response:
    return await c.post(
        url or job["urls"]["workload_identity"],
        json={"attempt": job["attempt"] if attempt is None else attempt},
        headers=bearer(job["job_token"]),
    )


async def verify(c: httpx.AsyncClient, app: InProcessCairn, token: str, audience: str) -> Any:
    """Like a cloud: discovery → jwks_uri → the key named by ``kid``; signature, ``iss`` and
    ``aud`` checked by PyJWT (exp is checked against cairn's clock by the caller: the app's
    clock is frozen in 2026)."""
    discovery = (await c.get("/.well-known/openid-configuration")).json()
    assert discovery["issuer"] == app.url
    jwks = (await c.get(discovery["jwks_uri"])).json()
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "RS256"
    (key,) = [k for k in jwks["keys"] if k["kid"] == header["kid"]]
    return jwt.decode(
        token,
        jwt.PyJWK(key).key,
        algorithms=["RS256"],
        audience=audience,
        issuer=app.url,
        options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
    )


def mint_events(app: InProcessCairn) -> list[dict[str, Any]]:
    with app.ctx.db.unit_of_work() as s:
        rows = s.scalars(
            select(AuditEvent).where(AuditEvent.action == "oidc.token.mint").order_by(AuditEvent.at)
        ).all()
        return [{"subject": r.subject, "actor": r.actor_id, **json.loads(r.details)} for r in rows]


def audit_dump(app: InProcessCairn) -> str:
    with app.ctx.db.unit_of_work() as s:
        return "\n".join(f"{r.subject} {r.details}" for r in s.scalars(select(AuditEvent)).all())


async def test_one_verified_token_per_configuration(side: JobSide) -> None:
    app = side.app
    org, ws_id, ws_name = await workspace(app, AWS_AND_GENERIC)
    session = side.register()
    run_id = side.make_run(ws_id)
    async with app.client() as c:
        job = await claim(c, session)
        assert job["urls"]["workload_identity"].endswith(f"/jobs/{job['job_id']}/workload-identity")
        r = await identity(c, job)
        assert r.status_code == 200, r.text
        assert r.headers["cache-control"] == "no-store"
        answer = r.json()
        kinds = [(x["kind"], x["tag"]) for x in answer["configs"]]
        assert kinds == [("generic", "TAILSCALE"), ("aws", None), ("vault", None)]
        generic, aws, vault = answer["configs"]
        assert aws["role_arn"] == ROLE and aws["audience"] == "aws.workload.identity"
        assert vault["address"] == "https://vault.example.com:8200" and vault["role"] == "tfc"
        assert vault["auth_path"] == "jwt" and vault["client_timeout_s"] == 60
        assert generic["audience"] == "tailscale.example"
        now = int(app.clock.now().timestamp())
        subject = f"organization:{org}:project:Default Project:workspace:{ws_name}:run_phase:plan"
        jtis = set()
        for config in answer["configs"]:
            claims = await verify(c, app, config["token"], config["audience"])
            assert claims["sub"] == subject
            assert claims["aud"] == config["audience"]
            assert claims["terraform_run_phase"] == "plan"
            assert claims["terraform_run_id"] == run_id
            assert claims["terraform_workspace_id"] == ws_id
            assert claims["cairn_run_speculative"] == "false"
            # the plan's timeout (CAIRN_PLAN_TIMEOUT, 2 h), below the 6 h cap
            assert claims["iat"] == claims["nbf"] == now
            assert claims["exp"] == now + int(app.settings.plan_timeout.total_seconds())
            jtis.add(claims["jti"])
        assert len(jtis) == 3
        assert answer["expires_at"] == iso8601(app.clock.now() + app.settings.plan_timeout)
        # A second call (an executor's retry) mints fresh tokens.
        again = (await identity(c, job)).json()["configs"]
        assert {x["token"] for x in again}.isdisjoint({x["token"] for x in answer["configs"]})
    events = mint_events(app)
    assert len(events) == 6
    assert {e["jti"] for e in events[:3]} == jtis
    assert all(e["run_id"] == run_id and e["actor"] == job["job_id"] for e in events)
    assert all(e["subject"] == subject for e in events)
    dump = audit_dump(app)
    for config in answer["configs"] + again:
        assert config["token"] not in dump
        assert config["token"].split(".")[2] not in dump


async def test_apply_tokens_name_the_apply_and_its_role(side: JobSide) -> None:
    app = side.app
    env = AWS_AND_GENERIC | {"TFC_AWS_APPLY_ROLE_ARN": "arn:aws:iam::123456789012:role/apply"}
    _, ws_id, _ = await workspace(app, env)
    session = side.register()
    run_id = side.make_run(ws_id, auto_apply=True)
    async with app.client() as c:
        plan = await claim(c, session)
        plan_aws = (await identity(c, plan)).json()["configs"][1]
        assert plan_aws["role_arn"] == ROLE
        await c.post(plan["urls"]["start"], json={"attempt": 1}, headers=bearer(plan["job_token"]))
        done = await c.post(
            plan["urls"]["finish"],
            json={"attempt": 1, "status": "finished", "has_changes": True},
            headers=bearer(plan["job_token"]),
        )
        document(done, 200)
        apply = await claim(c, session)
        assert apply["phase"] == "apply" and apply["run_id"] == run_id
        # the plan's job token no longer reaches anything
        assert (await identity(c, plan)).status_code in (401, 409)
        configs = (await identity(c, apply)).json()["configs"]
        aws = configs[1]
        assert aws["role_arn"] == "arn:aws:iam::123456789012:role/apply"
        claims = await verify(c, app, aws["token"], "aws.workload.identity")
        assert claims["terraform_run_phase"] == "apply"
        assert claims["sub"].endswith(":run_phase:apply")
        assert claims["terraform_run_id"] == run_id
        assert claims["exp"] - claims["iat"] == int(app.settings.apply_timeout.total_seconds())


async def test_lifetime_is_what_is_left_of_the_phase_capped_by_the_maximum(side: JobSide) -> None:
    app = side.app
    _, ws_id, _ = await workspace(app, {"TFC_WORKLOAD_IDENTITY_AUDIENCE": "aud"})
    session = side.register()
    side.make_run(ws_id)
    issuer = app.ctx.issuer
    async with app.client() as c:
        job = await claim(c, session)
        app.advance(timedelta(minutes=30))
        (config,) = (await identity(c, job)).json()["configs"]
        claims = await verify(c, app, config["token"], "aud")
        assert (
            claims["exp"] - claims["iat"] == int(app.settings.plan_timeout.total_seconds()) - 1800
        )
        original = issuer.policy
        issuer.policy = dataclasses.replace(original, max_token_ttl=timedelta(minutes=20))
        try:
            answer = (await identity(c, job)).json()
        finally:
            issuer.policy = original
        claims = await verify(c, app, answer["configs"][0]["token"], "aud")
        assert claims["exp"] - claims["iat"] == 1200
        assert answer["expires_at"] == iso8601(app.clock.now() + timedelta(minutes=20))
        app.advance(app.settings.plan_timeout)  # past the phase's timeout: nothing is minted
        late = await identity(c, job)
        assert late.status_code in (401, 409), late.text


@pytest.mark.parametrize(
    ("mode", "phase"),
    [("same", "plan"), ("distinct_subject", "speculative_plan")],
)
async def test_speculative_plans(side: JobSide, mode: str, phase: str) -> None:
    app = side.app
    org, ws_id, ws_name = await workspace(app, AWS_AND_GENERIC)
    r = await patch(
        app, f"/api/v2/workspaces/{ws_id}", "workspaces", {"speculative-plan-credentials": mode}
    )
    document(r, 200)
    session = side.register()
    side.make_run(ws_id, speculative=True)
    async with app.client() as c:
        job = await claim(c, session)
        configs = (await identity(c, job)).json()["configs"]
        assert len(configs) == 3
        for config in configs:
            claims = await verify(c, app, config["token"], config["audience"])
            assert claims["terraform_run_phase"] == phase
            assert claims["sub"] == (
                f"organization:{org}:project:Default Project:workspace:{ws_name}:run_phase:{phase}"
            )
            assert claims["cairn_run_speculative"] == "true"


async def test_none_mode_fails_a_speculative_plan_that_asks_and_mints_nothing(
    side: JobSide,
) -> None:
    app = side.app
    org, ws_id, _ = await workspace(app, AWS_AND_GENERIC)
    r = await patch(
        app,
        f"/api/v2/organizations/{org}",
        "organizations",
        {"speculative-plan-credentials": "none"},
    )
    assert document(r, 200)["data"]["attributes"]["speculative-plan-credentials"] == "none"
    session = side.register()
    side.make_run(ws_id, speculative=True)
    async with app.client() as c:
        job = await claim(c, session)
        r = await identity(c, job)
        assert r.status_code == 422, r.text
        body = r.json()
        assert body["error"] == "credentials"
        assert "TFC_WORKLOAD_IDENTITY_AUDIENCE_TAILSCALE" in body["detail"]
        assert "speculative-plan-credentials" in body["detail"]
    assert mint_events(app) == []


async def test_none_mode_leaves_other_runs_alone(side: JobSide) -> None:
    app = side.app
    _, ws_id, _ = await workspace(app, {"TFC_WORKLOAD_IDENTITY_AUDIENCE": "aud"})
    document(
        await patch(
            app,
            f"/api/v2/workspaces/{ws_id}",
            "workspaces",
            {"speculative-plan-credentials": "none"},
        ),
        200,
    )
    session = side.register()
    side.make_run(ws_id)
    async with app.client() as c:
        job = await claim(c, session)
        (config,) = (await identity(c, job)).json()["configs"]
        claims = await verify(c, app, config["token"], "aud")
        assert claims["terraform_run_phase"] == "plan"
        assert claims["cairn_run_speculative"] == "false"


async def test_nothing_asked_nothing_minted(side: JobSide) -> None:
    app = side.app
    _, ws_id, _ = await workspace(app, {"OTHER": "x", "TFC_AWS_PROVIDER_AUTH": "false"})
    session = side.register()
    side.make_run(ws_id)
    async with app.client() as c:
        job = await claim(c, session)
        r = await identity(c, job)
        assert r.status_code == 200 and r.json()["configs"] == []
        assert r.json()["expires_at"].endswith("Z")
    assert mint_events(app) == []


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"TFC_AWS_PROVIDER_AUTH": "true"}, "TFC_AWS_RUN_ROLE_ARN"),
        ({"TFC_AWS_PROVIDER_AUTH_TYPE": "true"}, "TFC_AWS_PROVIDER_AUTH_TYPE"),
        (
            {
                "TFC_GCP_PROVIDER_AUTH": "true",
                "TFC_GCP_WORKLOAD_PROVIDER_NAME": "projects/my-project/pools/p",
                "TFC_GCP_RUN_SERVICE_ACCOUNT_EMAIL": "sa@p.iam.gserviceaccount.com",
            },
            "TFC_GCP_WORKLOAD_PROVIDER_NAME",
        ),
        ({"TFC_VAULT_PROVIDER_AUTH": "true", "TFC_VAULT_RUN_ROLE": "r"}, "TFC_VAULT_ADDR"),
    ],
)
async def test_misconfiguration_is_a_422_naming_the_variable(
    side: JobSide, env: dict[str, str], variable: str
) -> None:
    app = side.app
    _, ws_id, _ = await workspace(app, env | {"TFC_WORKLOAD_IDENTITY_AUDIENCE": "ok"})
    session = side.register()
    side.make_run(ws_id)
    async with app.client() as c:
        job = await claim(c, session)
        r = await identity(c, job)
        assert r.status_code == 422, r.text
        assert r.json()["error"] == "credentials"
        assert variable in r.json()["detail"]
    assert mint_events(app) == []  # not even the configuration that was fine


async def test_fencing_other_jobs_stale_attempts_and_bad_bodies(side: JobSide) -> None:
    app = side.app
    _, ws_a, _ = await workspace(app, {"TFC_WORKLOAD_IDENTITY_AUDIENCE": "aud"})
    _, ws_b, _ = await workspace(app, {"TFC_WORKLOAD_IDENTITY_AUDIENCE": "aud"})
    session = side.register()
    side.make_run(ws_a)
    side.make_run(ws_b)
    async with app.client() as c:
        job_a = await claim(c, session)
        job_b = await claim(c, session)
        # A's token on B's job: not found (no token for another run's workspace)
        r = await identity(c, job_a, url=job_b["urls"]["workload_identity"])
        assert r.status_code == 404 and r.json()["error"] == "not_found"
        r = await identity(c, job_a, attempt=job_a["attempt"] + 1)
        assert r.status_code == 409 and r.json()["error"] == "stale_attempt"
        r = await c.post(job_a["urls"]["workload_identity"], json={"attempt": 1})
        assert r.status_code == 401
        r = await c.post(
            job_a["urls"]["workload_identity"], json={}, headers=bearer(job_a["job_token"])
        )
        assert r.status_code == 422 and r.json()["error"] == "invalid"
        r = await c.post(
            job_a["urls"]["workload_identity"],
            content=b"[1]",
            headers=bearer(job_a["job_token"]),
        )
        assert r.status_code == 400
        r = await c.post(
            job_a["urls"]["workload_identity"],
            content=b'{"attempt": 1, "pad": "' + b"x" * 20000 + b'"}',
            headers=bearer(job_a["job_token"]),
        )
        assert r.status_code == 413
    assert mint_events(app) == []


async def test_the_setting_on_workspaces_and_organizations(side: JobSide) -> None:
    app = side.app
    org, ws_id, _ = await workspace(app, {})
    async with app.client(app.admin_token) as admin:
        attrs = document(await admin.get(f"/api/v2/workspaces/{ws_id}"), 200)["data"]["attributes"]
        assert attrs["speculative-plan-credentials"] == "same"
        assert attrs["setting-overwrites"]["speculative-plan-credentials"] is False
        org_attrs = document(await admin.get(f"/api/v2/organizations/{org}"), 200)["data"][
            "attributes"
        ]
        assert org_attrs["speculative-plan-credentials"] == "same"

    path = f"/api/v2/workspaces/{ws_id}"
    r = await patch(app, path, "workspaces", {"speculative-plan-credentials": "distinct_subject"})
    attrs = document(r, 200)["data"]["attributes"]
    assert attrs["speculative-plan-credentials"] == "distinct_subject"
    assert attrs["setting-overwrites"]["speculative-plan-credentials"] is True

    org_path = f"/api/v2/organizations/{org}"
    document(
        await patch(app, org_path, "organizations", {"speculative-plan-credentials": "none"}), 200
    )
    r = await patch(app, path, "workspaces", {"speculative-plan-credentials": None})
    attrs = document(r, 200)["data"]["attributes"]
    assert attrs["speculative-plan-credentials"] == "none"  # the organization's default again
    assert attrs["setting-overwrites"]["speculative-plan-credentials"] is False

    for target, kind in ((path, "workspaces"), (org_path, "organizations")):
        r = await patch(app, target, kind, {"speculative-plan-credentials": "sometimes"})
        err = document(r, 422)["errors"][0]
        assert err["source"]["pointer"] == "/data/attributes/speculative-plan-credentials"
        assert "distinct_subject" in err["detail"]
        r = await patch(app, target, kind, {"speculative-plan-credentials": 1})
        assert r.status_code == 422
    async with app.client(app.admin_token) as admin:
        attrs = document(await admin.get(path), 200)["data"]["attributes"]
        assert attrs["speculative-plan-credentials"] == "none"  # nothing changed
