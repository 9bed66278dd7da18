"""cairn.auth with an organization token's service account (finding H3): the token form
refuses its token, no code is issued or redeemed for it, and ``TokenService.issue`` never makes
a person's kind of token for it. (Over HTTP: tests/api/login/test_service_account_tokens.py.)"""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from cairn import ids
from cairn.auth.login import CODE_TTL, SERVICE_ACCOUNT_REFUSED
from cairn.auth.model import ApiToken, OAuthCode, User
from cairn.auth.tokens import KIND_ADMIN_ENV, KIND_BOOTSTRAP, KIND_LOGIN, KIND_USER
from cairn.authz.subject import ServiceAccount
from cairn.errors import Forbidden, Unauthorized
from cairn.organizations.model import Organization
from tests.unit.auth.test_login import (
    Login,
    login,
    redeem_fails,
    request,
    terraform_verifier,
    token_form,
)

__all__ = ["login"]  # the fixture


def _service_account(login: Login) -> tuple[str, str]:
    """An organization, its token's service account and an organization token: (user id,
    token value)."""
    now = login.clock.now()
    org_id, user_id = ids.new_id("organization"), ids.new_id("user")
    login.tokens.kinds.register("organization", "an organization's token")
    with login.db.unit_of_work(write=True) as s:
        s.add(Organization(id=org_id, name="acme", created_at=now, updated_at=now))
        s.flush()
        s.add(
            User(
                id=user_id,
                username="api-org-acme",
                is_service_account=True,
                organization_id=org_id,
                created_at=now,
            )
        )
        s.flush()
        _, value = login.tokens.issue(s, user_id, "organization", "")
        s.commit()
    return user_id, value


def _count(login: Login, table: type[ApiToken] | type[OAuthCode]) -> int:
    with login.db.unit_of_work() as s:
        return int(s.scalar(select(func.count()).select_from(table)) or 0)


def test_the_token_form_refuses_an_organization_token(login: Login) -> None:
    _, value = _service_account(login)
    assert isinstance(login.tokens.authenticate(value), ServiceAccount)
    with pytest.raises(Unauthorized) as caught:
        login.service.login_with_token(value, request(terraform_verifier()), source="")
    assert caught.value.detail == SERVICE_ACCOUNT_REFUSED
    assert _count(login, OAuthCode) == 0


def test_no_code_is_issued_for_a_service_account(login: Login) -> None:
    user_id, _ = _service_account(login)
    with pytest.raises(Unauthorized):
        login.service.issue_code(user_id, request(terraform_verifier()), source="", via="x")
    assert _count(login, OAuthCode) == 0


def test_a_code_of_a_service_account_is_never_redeemed(login: Login) -> None:
    """A code an earlier cairn issued for a service account (within its 5 minutes)."""
    user_id, _ = _service_account(login)
    verifier = terraform_verifier()
    req = request(verifier)
    code = "c" * 43
    now = login.clock.now()
    with login.db.unit_of_work(write=True) as s:
        s.add(
            OAuthCode(
                code_hash=login.service._keys.token_hash(code),
                user_id=user_id,
                client_id=req.client_id,
                redirect_uri=req.redirect_uri,
                code_challenge=req.code_challenge,
                created_at=now,
                expires_at=now + CODE_TTL,
            )
        )
        s.commit()
    tokens_before = _count(login, ApiToken)
    assert redeem_fails(login, token_form(code, verifier)) == SERVICE_ACCOUNT_REFUSED
    assert _count(login, ApiToken) == tokens_before


@pytest.mark.parametrize("kind", [KIND_USER, KIND_LOGIN, KIND_BOOTSTRAP, KIND_ADMIN_ENV])
def test_issue_never_makes_a_persons_token_for_a_service_account(login: Login, kind: str) -> None:
    user_id, _ = _service_account(login)
    tokens_before = _count(login, ApiToken)
    with login.db.unit_of_work(write=True) as s, pytest.raises(Forbidden):
        login.tokens.issue(s, user_id, kind, "laundered")
    assert _count(login, ApiToken) == tokens_before
