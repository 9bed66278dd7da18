"""What a run's job token may do (``authz`` with a ``RunJob`` subject), and how the pipeline's
token authenticator hands job tokens over (``TokenService.add_prefix``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from cairn import authz
from cairn.auth.tokens import TokenAuthenticator, TokenService
from cairn.authz.access import Access, WorkspaceGrant
from cairn.authz.permissions import (
    ORG_MANAGE,
    ORG_READ,
    RUN_APPLY,
    STATE_READ,
    STATE_WRITE,
    VARIABLES_READ,
    WORKSPACE_LOCK,
    WORKSPACE_MANAGE,
    WORKSPACE_READ,
)
from cairn.authz.subject import Holder, RunJob, holder_of
from cairn.errors import Forbidden
from cairn.runs.job_tokens import OWN, SHARED, new_value

ORG = "org-aaaaaaaaaaaaaaaa"
OWN_WS = authz.Ws(ORG, "acme", "ws-own0000000000000", "app")
SHARING_WS = authz.Ws(ORG, "acme", "ws-shared000000000", "network")
OTHER_WS = authz.Ws(ORG, "acme", "ws-other0000000000", "secret")


def job(phase: str, *, extra: frozenset[str] = frozenset()) -> RunJob:
    own = OWN | ({STATE_WRITE} if phase == "apply" else set()) | extra
    grants = (
        WorkspaceGrant(ORG, frozenset(own), workspace_id=OWN_WS.id),
        WorkspaceGrant(ORG, SHARED | extra, workspace_id=SHARING_WS.id),
    )
    return RunJob(
        id="job-aaaaaaaaaaaaaaaa",
        run_id="run-aaaaaaaaaaaaaaaa",
        workspace_id=OWN_WS.id,
        organization_id=ORG,
        phase=phase,  # type: ignore[arg-type]
        token_id="jt-aaaaaaaaaaaaaaaa",
        attempt=1,
        access=Access(grants=grants),
    )


def test_a_plan_job_reads_its_workspace_and_never_writes_state() -> None:
    plan = job("plan")
    for perm in (WORKSPACE_READ, STATE_READ, VARIABLES_READ):
        assert authz.allowed(plan, perm, OWN_WS)
    assert not authz.allowed(plan, STATE_WRITE, OWN_WS)
    with pytest.raises(Forbidden):
        authz.require(plan, STATE_WRITE, OWN_WS)


def test_an_apply_job_writes_its_own_workspace_state_only() -> None:
    apply = job("apply")
    assert authz.allowed(apply, STATE_WRITE, OWN_WS)
    assert not authz.allowed(apply, STATE_WRITE, SHARING_WS)
    assert authz.allowed(apply, STATE_READ, SHARING_WS)
    assert not authz.allowed(apply, VARIABLES_READ, SHARING_WS)


def test_the_cap_holds_whatever_the_access_says() -> None:
    greedy = job(
        "apply", extra=frozenset({WORKSPACE_MANAGE, WORKSPACE_LOCK, RUN_APPLY, ORG_MANAGE})
    )
    for perm in (WORKSPACE_MANAGE, WORKSPACE_LOCK, RUN_APPLY, ORG_MANAGE):
        assert not authz.allowed(greedy, perm, OWN_WS)
    assert authz.permissions(greedy, ORG) == frozenset({ORG_READ})
    assert not authz.allowed(greedy, ORG_MANAGE, authz.Org(ORG, "acme"))


def test_nothing_outside_its_grants_or_its_organization() -> None:
    apply = job("apply")
    assert authz.permissions_on(apply, OTHER_WS) == frozenset()
    elsewhere = authz.Ws("org-bbbbbbbbbbbbbbbb", "other", OWN_WS.id, "app")
    assert authz.permissions_on(apply, elsewhere) == frozenset()
    assert authz.permissions(apply, "org-bbbbbbbbbbbbbbbb") == frozenset()
    assert not authz.allowed(apply, authz.SITE_READ, authz.SITE)


def test_a_job_holds_locks_as_its_run() -> None:
    assert holder_of(job("apply")) == Holder("runs", "run-aaaaaaaaaaaaaaaa")
    assert job("plan").name == "run run-aaaaaaaaaaaaaaaa (plan)"


def test_job_token_values() -> None:
    value = new_value()
    assert value.startswith("cairn_job_") and len(value) == 53 and value[10:].isalnum()
    assert new_value() != value


@dataclass
class _Found:
    subject: Any

    def after(self) -> None:
        return None


class _Prefixed:
    def __init__(self) -> None:
        self.seen: list[str] = []

    def authenticate(self, credential: str) -> _Found:
        self.seen.append(credential)
        return _Found(job("plan"))


def test_the_token_authenticator_hands_job_tokens_over() -> None:
    tokens = TokenService.__new__(TokenService)
    tokens._prefixed = {}
    prefixed = _Prefixed()
    tokens.add_prefix("cairn_job_", prefixed)
    found = TokenAuthenticator(tokens).authenticate("cairn_job_" + "a" * 43)
    assert isinstance(found.subject, RunJob) and prefixed.seen == ["cairn_job_" + "a" * 43]
    with pytest.raises(ValueError, match="already registered"):
        tokens.add_prefix("cairn_job_", prefixed)
    with pytest.raises(ValueError, match="extends"):
        tokens.add_prefix("job_", prefixed)
    with pytest.raises(ValueError, match="extends"):
        tokens.add_prefix("cairn_", prefixed)
