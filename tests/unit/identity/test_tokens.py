"""Tokens: HCP Terraform's claim set (golden), input rules, and signatures that independent
verifiers accept through discovery + JWKS."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from cairn.crypto import b64url_decode
from cairn.identity import discovery, keys, tokens
from cairn.identity.errors import IdentityConfigError, InvalidTokenRequest, KeyMaterialError
from cairn.identity.keys import SigningKey
from cairn.identity.tokens import Workload
from tests.unit.identity.verifiers import publish, verify_both, verify_jwcrypto, verify_pyjwt

ISSUER = "https://cairn.example.com"
NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
WORKLOAD = Workload(
    organization_id="org-GHVjcfw2Ym6hW5Hm",
    organization_name="acme",
    project_id="prj-7ZVMkmSAXRkBYM2x",
    project_name="Default Project",
    workspace_id="ws-Lzq4bTT6CPzGxJdS",
    workspace_name="networking-prod",
)


@pytest.fixture(scope="module", params=["RS256", "ES256"])
def signer(request: pytest.FixtureRequest) -> tokens.Signer:
    generated = keys.generate(request.param)
    meta = SigningKey(
        id="key-1",
        version=1,
        kid=generated.kid,
        alg=generated.alg,
        state="active",
        created_at=NOW,
        published_at=NOW,
        activated_at=NOW,
        public_jwk=dict(generated.public_jwk),
    )
    return tokens.Signer(meta, generated.private_key)


def _claims(**overrides: object) -> tokens.Claims:
    args: dict[str, object] = {
        "issuer": ISSUER,
        "audience": "aws.workload.identity",
        "workload": WORKLOAD,
        "run_id": "run-CZcmD7eagjhyX0vN",
        "phase": "plan",
        "now": NOW,
        "ttl": timedelta(minutes=5),
    }
    args.update(overrides)
    return tokens.workload_claims(**args)  # type: ignore[arg-type]


def _segments(token: str) -> tuple[dict[str, object], dict[str, object], bytes]:
    header, payload, signature = token.split(".")
    return (
        json.loads(b64url_decode(header)),
        json.loads(b64url_decode(payload)),
        b64url_decode(signature),
    )


def test_golden_plan_claims() -> None:
    iat = int(NOW.timestamp())
    assert _claims(jti="6a3b1d1e-5e43-4a7e-9a55-3f0b1f7c2d10") == {
        "jti": "6a3b1d1e-5e43-4a7e-9a55-3f0b1f7c2d10",
        "iss": "https://cairn.example.com",
        "aud": "aws.workload.identity",
        "iat": iat,
        "nbf": iat,
        "exp": iat + 300,
        "sub": "organization:acme:project:Default Project:workspace:networking-prod:run_phase:plan",
        "terraform_organization_id": "org-GHVjcfw2Ym6hW5Hm",
        "terraform_organization_name": "acme",
        "terraform_project_id": "prj-7ZVMkmSAXRkBYM2x",
        "terraform_project_name": "Default Project",
        "terraform_workspace_id": "ws-Lzq4bTT6CPzGxJdS",
        "terraform_workspace_name": "networking-prod",
        "terraform_full_workspace": (
            "organization:acme:project:Default Project:workspace:networking-prod"
        ),
        "terraform_run_id": "run-CZcmD7eagjhyX0vN",
        "terraform_run_phase": "plan",
    }


def test_apply_token_differs_only_in_phase_and_jti() -> None:
    plan, apply = _claims(), _claims(phase="apply")
    assert apply["sub"] == (
        "organization:acme:project:Default Project:workspace:networking-prod:run_phase:apply"
    )
    assert apply["terraform_run_phase"] == "apply"
    assert plan["jti"] != apply["jti"]
    differing = {k for k in plan if plan[k] != apply[k]}
    assert differing == {"jti", "sub", "terraform_run_phase"}


def test_claim_names_are_exactly_hcp_terraforms() -> None:
    claims = _claims()
    assert set(claims) == set(tokens.STANDARD_CLAIMS) | set(tokens.TERRAFORM_CLAIMS)
    for name in tokens.TERRAFORM_CLAIMS:
        assert isinstance(claims[name], str)
    for name in ("iat", "nbf", "exp"):
        assert type(claims[name]) is int


def test_speculative_plans_are_marked() -> None:
    assert tokens.SPECULATIVE_CLAIM not in _claims()
    assert _claims(speculative=True)[tokens.SPECULATIVE_CLAIM] == "true"
    with pytest.raises(InvalidTokenRequest, match="speculative"):
        _claims(speculative=True, phase="apply")


def test_run_tokens_always_say_whether_the_run_is_speculative() -> None:
    assert _claims(speculative=False)[tokens.SPECULATIVE_CLAIM] == "false"
    assert _claims(speculative=False, phase="apply")[tokens.SPECULATIVE_CLAIM] == "false"


def test_a_distinct_subject_for_speculative_plans() -> None:
    claims = _claims(speculative=True, phase="speculative_plan")
    assert claims["sub"] == (
        "organization:acme:project:Default Project:workspace:networking-prod"
        ":run_phase:speculative_plan"
    )
    assert claims["terraform_run_phase"] == "speculative_plan"
    for speculative in (None, False):
        with pytest.raises(InvalidTokenRequest, match="speculative_plan"):
            _claims(speculative=speculative, phase="speculative_plan")


@pytest.mark.parametrize(
    "field", ["organization_name", "project_name", "workspace_name", "workspace_id"]
)
def test_names_containing_a_colon_are_rejected(field: str) -> None:
    values = {
        "organization_id": "org-1",
        "organization_name": "acme",
        "project_id": "prj-1",
        "project_name": "Default Project",
        "workspace_id": "ws-1",
        "workspace_name": "app",
    }
    with pytest.raises(InvalidTokenRequest, match="':'"):
        Workload(**(values | {field: "a:b"}))


@pytest.mark.parametrize("bad", ["", "  ", " lead", "trail ", "tab\there", "x" * 256])
def test_empty_padded_or_oversized_names_are_rejected(bad: str) -> None:
    with pytest.raises(InvalidTokenRequest):
        Workload("org-1", "acme", "prj-1", "Default Project", "ws-1", bad)


def test_run_id_and_phase_are_checked() -> None:
    with pytest.raises(InvalidTokenRequest, match="run phase"):
        _claims(phase="destroy")
    with pytest.raises(InvalidTokenRequest, match="run ID"):
        _claims(run_id="")


def test_aud_is_a_string_for_one_audience_and_a_list_for_several() -> None:
    assert _claims(audience="sts.amazonaws.com")["aud"] == "sts.amazonaws.com"
    assert _claims(audience=["sts.amazonaws.com"])["aud"] == "sts.amazonaws.com"
    assert _claims(audience=["a", "b"])["aud"] == ["a", "b"]
    assert _claims(audience=["a", "b", "a"])["aud"] == ["a", "b"]
    assert _claims(audience=("b", "b"))["aud"] == "b"


@pytest.mark.parametrize(
    "audience", [[], "", " x", ["ok", ""], ["a"] * 0 + [str(i) for i in range(11)], "x" * 513]
)
def test_bad_audiences_are_rejected(audience: object) -> None:
    with pytest.raises(InvalidTokenRequest) as caught:
        _claims(audience=audience)
    assert caught.value.pointer == "/audience"


def test_lifetime_is_capped() -> None:
    claims = _claims(ttl=timedelta(hours=72))
    assert claims["exp"] - claims["iat"] == 6 * 3600  # type: ignore[operator]
    claims = _claims(ttl=timedelta(hours=72), max_ttl=timedelta(hours=47))
    assert claims["exp"] - claims["iat"] == 47 * 3600  # type: ignore[operator]
    claims = _claims(ttl=timedelta(minutes=15))
    assert claims["exp"] - claims["iat"] == 900  # type: ignore[operator]
    assert claims["nbf"] <= claims["iat"] < claims["exp"]  # type: ignore[operator]
    assert tokens.expires_at(claims) == NOW + timedelta(minutes=15)


@pytest.mark.parametrize("max_ttl", [timedelta(hours=48), timedelta(days=3), timedelta(0)])
def test_cap_must_stay_below_48_hours(max_ttl: timedelta) -> None:
    with pytest.raises(IdentityConfigError, match="48 h"):
        _claims(max_ttl=max_ttl)


def test_non_positive_lifetimes_and_naive_times_are_rejected() -> None:
    with pytest.raises(InvalidTokenRequest, match="lifetime"):
        _claims(ttl=timedelta(0))
    with pytest.raises(ValueError, match="timezone"):
        _claims(now=datetime(2026, 1, 1))
    with pytest.raises(IdentityConfigError, match="trailing"):
        _claims(issuer=ISSUER + "/")


def test_a_thousand_mints_have_a_thousand_distinct_jtis() -> None:
    jtis = {_claims(phase="apply" if i % 2 else "plan")["jti"] for i in range(1000)}
    assert len(jtis) == 1000


def test_header_and_signature_shape(signer: tokens.Signer) -> None:
    token = signer.sign(_claims())
    header, payload, signature = _segments(token)
    assert header == {"alg": signer.key.alg, "kid": signer.kid, "typ": "JWT"}
    assert payload == _claims(jti=payload["jti"])
    assert "=" not in token
    if signer.key.alg == "ES256":
        assert len(signature) == 64  # raw r || s, not DER
    else:
        assert len(signature) == 256


def test_tokens_verify_with_pyjwt_and_jwcrypto_through_discovery(signer: tokens.Signer) -> None:
    web = publish(ISSUER, discovery.jwks([signer.key], NOW))
    claims = _claims(audience=["aws.workload.identity", "vault.example"])
    token = signer.sign(claims)
    for audience in ("aws.workload.identity", "vault.example"):
        assert verify_both(token, web, issuer=ISSUER, audience=audience, now=NOW) == claims
    with pytest.raises(Exception, match=r"(?i)aud"):
        verify_pyjwt(token, web, issuer=ISSUER, audience="other", now=NOW)
    with pytest.raises(Exception, match=r"(?i)aud"):
        verify_jwcrypto(token, web, issuer=ISSUER, audience="other", now=NOW)


def test_expired_and_tampered_tokens_fail(signer: tokens.Signer) -> None:
    web = publish(ISSUER, discovery.jwks([signer.key], NOW))
    token = signer.sign(_claims())
    later = NOW + timedelta(minutes=5)
    with pytest.raises(Exception, match=r"(?i)expired|not valid"):
        verify_pyjwt(token, web, issuer=ISSUER, audience="aws.workload.identity", now=later)
    with pytest.raises(Exception, match=r"(?i)expired"):
        verify_jwcrypto(token, web, issuer=ISSUER, audience="aws.workload.identity", now=later)
    header, _, signature = token.split(".")
    forged_claims = _claims() | {"terraform_run_phase": "apply"}
    forged = tokens.sign_jwt(forged_claims, keys.generate("ES256").private_key, signer.kid, "ES256")
    tampered = f"{header}.{forged.split('.')[1]}.{signature}"
    for bad in (tampered, forged):
        with pytest.raises(Exception):  # noqa: B017 - each library raises its own error type
            verify_pyjwt(bad, web, issuer=ISSUER, audience="aws.workload.identity", now=NOW)
        with pytest.raises(Exception):  # noqa: B017
            verify_jwcrypto(bad, web, issuer=ISSUER, audience="aws.workload.identity", now=NOW)


def test_the_largest_token_stays_far_below_awss_limit(signer: tokens.Signer) -> None:
    name = "n" * tokens.MAX_NAME_LENGTH
    workload = Workload("org-1", name, "prj-1", name, "ws-1", name)
    audiences = [f"{i}" + "a" * (tokens.MAX_AUDIENCE_LENGTH - 1) for i in range(10)]
    token = signer.sign(_claims(workload=workload, audience=audiences))
    assert len(token) < 20_000


def test_alg_must_match_the_key(signer: tokens.Signer) -> None:
    other: keys.Alg = "ES256" if signer.key.alg == "RS256" else "RS256"
    with pytest.raises(KeyMaterialError):
        tokens.sign_jwt(_claims(), signer._private_key, signer.kid, other)


def test_signer_checks_its_key_and_redacts(signer: tokens.Signer) -> None:
    stranger = keys.generate("ES256").private_key
    with pytest.raises(KeyMaterialError, match=signer.kid):
        tokens.Signer(signer.key, stranger)
    assert "redacted" in repr(signer)
    assert signer.kid in repr(signer)
