"""Workload-identity tokens: HCP Terraform's claim set, and compact JWS signing.

The claims follow HCP Terraform's documented workspace-run token exactly (reference WI-01..08)
so that trust policies written for HCP Terraform work unchanged: ``sub`` is
``organization:{org}:project:{project}:workspace:{ws}:run_phase:{plan|apply}`` built from the
current names, every ``terraform_*`` claim is a string, ``aud`` is a plain string when there is
one audience (some verifiers reject one-element arrays), ``nbf = iat`` (HCP Terraform's
documented value), and ``exp - iat`` never exceeds the configured cap (< 48 h: Google STS
rejects longer tokens).

Signing uses ``cryptography`` only: RS256 is RSASSA-PKCS1-v1_5 with SHA-256 (RFC 7518 §3.3),
ES256 is ECDSA P-256 with SHA-256 whose signature is the 64-byte ``r || s`` (RFC 7518 §3.4),
not the DER that ``cryptography`` returns.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, get_args

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from cairn.crypto import b64url
from cairn.identity.errors import IdentityConfigError, InvalidTokenRequest, KeyMaterialError
from cairn.identity.keys import Alg, PrivateKey, SigningKey, alg_of, public_jwk
from cairn.identity.lifecycle import DEFAULT_MAX_TOKEN_TTL, TOKEN_TTL_LIMIT, human

RunPhase = Literal["plan", "apply"]
RUN_PHASES: tuple[RunPhase, ...] = get_args(RunPhase)
# The ``run_phase`` a token may carry: a run's phase, or ``speculative_plan`` for a speculative
# plan whose workspace asks for a distinct subject (``speculative-plan-credentials:
# distinct_subject``), so that trust policies written for ``…:run_phase:plan`` fail closed.
TokenPhase = Literal["plan", "apply", "speculative_plan"]
TOKEN_PHASES: tuple[TokenPhase, ...] = get_args(TokenPhase)

Claims = dict[str, str | int | list[str]]

STANDARD_CLAIMS = ("sub", "aud", "exp", "iat", "iss", "jti", "nbf")
TERRAFORM_CLAIMS = (
    "terraform_organization_id",
    "terraform_organization_name",
    "terraform_project_id",
    "terraform_project_name",
    "terraform_workspace_id",
    "terraform_workspace_name",
    "terraform_full_workspace",
    "terraform_run_id",
    "terraform_run_phase",
)
# Not an HCP Terraform claim: "true" or "false" on every token minted for a cairn run (a
# speculative plan's `sub` is the same as a normal plan's although it may run unreviewed code,
# reference WI-06). Absent from tokens minted for pipelines outside cairn's runs, which carry
# exactly HCP Terraform's claim set.
SPECULATIVE_CLAIM = "cairn_run_speculative"

# Bounds that keep every token far below the 20,000 characters AWS accepts (WI-10).
MAX_NAME_LENGTH = 255
MAX_AUDIENCES = 10
MAX_AUDIENCE_LENGTH = 512


# C0 controls and DEL (one regex scan: checked for every name of every token minted).
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _check_text(what: str, value: object, pointer: str | None, *, forbid_colon: bool) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidTokenRequest(f"{what} must be a non-empty string", pointer=pointer)
    if len(value) > MAX_NAME_LENGTH:
        raise InvalidTokenRequest(
            f"{what} is longer than {MAX_NAME_LENGTH} characters", pointer=pointer
        )
    if value != value.strip() or _CONTROL.search(value):
        raise InvalidTokenRequest(
            f"{what} {value!r} has leading or trailing spaces or control characters",
            pointer=pointer,
        )
    if forbid_colon and ":" in value:
        raise InvalidTokenRequest(
            f"{what} {value!r} contains ':', which would make the token subject "
            "(organization:…:project:…:workspace:…) ambiguous; rename it",
            pointer=pointer,
        )
    return value


@dataclass(frozen=True)
class Workload:
    """Whose token it is: the workspace's organization, project and workspace, by ID and by
    current name. Names may not contain ``:`` (they are ``sub`` segments); a project name may
    contain spaces (``Default Project``)."""

    organization_id: str
    organization_name: str
    project_id: str
    project_name: str
    workspace_id: str
    workspace_name: str

    def __post_init__(self) -> None:
        for attr in ("organization", "project", "workspace"):
            _check_text(f"{attr} name", getattr(self, f"{attr}_name"), None, forbid_colon=True)
            _check_text(f"{attr} ID", getattr(self, f"{attr}_id"), None, forbid_colon=True)

    @property
    def full_workspace(self) -> str:
        return (
            f"organization:{self.organization_name}:project:{self.project_name}"
            f":workspace:{self.workspace_name}"
        )

    def subject(self, phase: TokenPhase) -> str:
        return f"{self.full_workspace}:run_phase:{phase}"


def audience_claim(audience: str | Sequence[str]) -> str | list[str]:
    """``aud`` as emitted: a string for one audience, a list for several (duplicates dropped,
    order kept). Raises InvalidTokenRequest for none, too many, or empty/oversized ones."""
    values = [audience] if isinstance(audience, str) else list(audience)
    unique = list(dict.fromkeys(values))
    if not unique:
        raise InvalidTokenRequest("audience is required", pointer="/audience")
    if len(unique) > MAX_AUDIENCES:
        raise InvalidTokenRequest(
            f"at most {MAX_AUDIENCES} audiences per token", pointer="/audience"
        )
    for value in unique:
        if not isinstance(value, str) or not value.strip() or value != value.strip():
            raise InvalidTokenRequest(
                "each audience must be a non-empty string without surrounding spaces",
                pointer="/audience",
            )
        if len(value) > MAX_AUDIENCE_LENGTH:
            raise InvalidTokenRequest(
                f"an audience is longer than {MAX_AUDIENCE_LENGTH} characters",
                pointer="/audience",
            )
    return unique[0] if len(unique) == 1 else unique


def check_max_ttl(max_ttl: timedelta) -> timedelta:
    """The token lifetime cap must be positive and below 48 h (IdentityConfigError)."""
    if not timedelta(0) < max_ttl < TOKEN_TTL_LIMIT:
        raise IdentityConfigError(
            f"the maximum token lifetime is {human(max_ttl)}; it must be positive and below 48 h"
        )
    return max_ttl


def workload_claims(
    *,
    issuer: str,
    audience: str | Sequence[str],
    workload: Workload,
    run_id: str,
    phase: TokenPhase,
    now: datetime,
    ttl: timedelta,
    max_ttl: timedelta = DEFAULT_MAX_TOKEN_TTL,
    speculative: bool | None = None,
    jti: str | None = None,
) -> Claims:
    """The claims of one run phase's token, minted at ``now``.

    ``ttl`` is the phase's timeout (or the lifetime a client asked for); it is capped at
    ``max_ttl`` (pass ``RotationPolicy.max_token_ttl``: retired keys stay published exactly
    long enough for tokens this long). ``iat = nbf = now`` (whole seconds), ``jti`` a fresh
    UUID4 unless given (tests). ``speculative``: None for a token outside cairn's runs (no
    ``cairn_run_speculative`` claim), else whether the run is speculative (the claim says
    "true" or "false"); ``phase`` ``speculative_plan`` only for a speculative run. Raises
    InvalidTokenRequest for bad inputs."""
    if not issuer or issuer.endswith("/"):
        raise IdentityConfigError(f"issuer {issuer!r} must be a URL without a trailing '/'")
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if phase not in TOKEN_PHASES:
        raise InvalidTokenRequest(
            f"run phase {phase!r} is not one of: {', '.join(RUN_PHASES)}", pointer="/run_phase"
        )
    if speculative and phase == "apply":
        raise InvalidTokenRequest("only a plan can be speculative", pointer="/run_phase")
    if phase == "speculative_plan" and not speculative:
        raise InvalidTokenRequest(
            "only a speculative run's plan has the run phase speculative_plan",
            pointer="/run_phase",
        )
    _check_text("run ID", run_id, "/run_id", forbid_colon=True)
    if ttl <= timedelta(0):
        raise InvalidTokenRequest("the token lifetime must be positive", pointer="/ttl_seconds")
    lifetime = min(ttl, check_max_ttl(max_ttl))
    iat = int(now.timestamp())
    claims: Claims = {
        "jti": jti or str(uuid.uuid4()),
        "iss": issuer,
        "aud": audience_claim(audience),
        "iat": iat,
        "nbf": iat,
        "exp": iat + max(1, int(lifetime.total_seconds())),
        "sub": workload.subject(phase),
        "terraform_organization_id": workload.organization_id,
        "terraform_organization_name": workload.organization_name,
        "terraform_project_id": workload.project_id,
        "terraform_project_name": workload.project_name,
        "terraform_workspace_id": workload.workspace_id,
        "terraform_workspace_name": workload.workspace_name,
        "terraform_full_workspace": workload.full_workspace,
        "terraform_run_id": run_id,
        "terraform_run_phase": phase,
    }
    if speculative is not None:
        claims[SPECULATIVE_CLAIM] = "true" if speculative else "false"
    return claims


def expires_at(claims: Mapping[str, Any]) -> datetime:
    """The token's ``exp`` as an aware UTC datetime (for API responses)."""
    return datetime.fromtimestamp(int(claims["exp"]), UTC)


def _json(value: Mapping[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def sign_jwt(claims: Mapping[str, Any], private_key: PrivateKey, kid: str, alg: Alg) -> str:
    """A compact JWS (``header.payload.signature``) with header ``{alg, kid, typ: "JWT"}``.

    ``alg`` must be the key's algorithm (RS256 for RSA ≥ 2048 bits, ES256 for P-256):
    a mismatch raises KeyMaterialError rather than signing something no verifier accepts."""
    if alg_of(private_key) != alg:
        raise KeyMaterialError(f"cannot sign {alg} with this key")
    header = {"alg": alg, "kid": kid, "typ": "JWT"}
    signing_input = f"{b64url(_json(header))}.{b64url(_json(claims))}".encode("ascii")
    if isinstance(private_key, rsa.RSAPrivateKey):
        signature = private_key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    else:
        r, s = decode_dss_signature(private_key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    return f"{signing_input.decode('ascii')}.{b64url(signature)}"


class Signer:
    """The active key ready to sign: its metadata and its opened private key.

    Built once per rotation and cached by each replica (drop it on NOTIFY, or after the
    in-process cache TTL). The constructor checks that the private key is the one the
    metadata names. Its repr never shows the private key."""

    def __init__(self, key: SigningKey, private_key: PrivateKey) -> None:
        if key.state != "active":
            raise KeyMaterialError(f"signing key version {key.version} is {key.state}, not active")
        if alg_of(private_key) != key.alg or public_jwk(private_key.public_key())["kid"] != key.kid:
            raise KeyMaterialError(f"the private key does not belong to kid {key.kid}")
        self.key = key
        self._private_key = private_key

    @property
    def kid(self) -> str:
        return self.key.kid

    def sign(self, claims: Mapping[str, Any]) -> str:
        return sign_jwt(claims, self._private_key, self.key.kid, self.key.alg)

    def __repr__(self) -> str:
        return (
            f"Signer(kid={self.key.kid!r}, version={self.key.version}, alg={self.key.alg!r}, "
            "private_key=<redacted>)"
        )
