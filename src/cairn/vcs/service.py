"""VCS connections (TFE's OAuth clients) and their tokens, managed through the TFE API.

Who may: everything here, reading included, needs ``org:manage-vcs-settings`` on the
organization (HCP Terraform shows VCS providers only to those who manage VCS settings; owners
and ``org:manage`` have it). A caller who may see the organization but lacks it is answered
403; one who may not see it, 404.

Secrets (OAuth client secret, GitHub App private key, webhook secret, token strings, SSH keys)
are sealed (``crypto.Keyring``) under the aads of ``vcs.model`` and never returned.

A token given at create (``oauth-token-string``) is checked with the forge first (``whoami``:
the user it belongs to and its expiry). That call is made by the API handler *outside* any
database transaction (``check_create`` → forge → ``create_client``), so a slow forge never
holds a transaction or SQLite's writer lock.

Deleting a connection or a token disconnects the workspaces that use it (their ``vcs-repo``
becomes null), as HCP Terraform does when a VCS provider is removed: they keep their runs
and state and can be connected again.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from sqlalchemy import delete
from sqlalchemy.orm import Session

from cairn import authz, ids
from cairn.audit.log import Actor, record
from cairn.authz.permissions import ORG_MANAGE_VCS
from cairn.authz.subject import Subject, User
from cairn.clock import Clock
from cairn.crypto import Keyring
from cairn.db.engine import Database
from cairn.errors import Invalid, Unavailable
from cairn.organizations import store as orgs
from cairn.organizations.model import Organization
from cairn.paging import Page
from cairn.vcs import store
from cairn.vcs.github_app import GitHubApp, Installation, list_installations
from cairn.vcs.model import (
    SERVICE_PROVIDERS,
    TOKEN_KINDS,
    KindError,
    OAuthClient,
    OAuthToken,
    access_aad,
    app_key_aad,
    derive_kind,
    secret_aad,
    ssh_key_aad,
    webhook_secret_aad,
)

MAX_NAME: Final = 255
MAX_URL: Final = 500
MAX_SECRET: Final = 4096
MAX_PEM: Final = 16 * 1024
MAX_PROJECTS: Final = 1000
_ATTR = "/data/attributes/"

InstallationsOf = Callable[[GitHubApp, datetime], list[Installation]]
"""``(app, now) -> installations``: GitHub's list of a GitHub App's installations."""

TokenCheck = Callable[[str, str, str, str, str], tuple[str, datetime | None]]
"""``(kind, service_provider, api_url, http_url, token) -> (username, expires_at)``: asks the
forge whom a token belongs to (``vcs.forges`` ``whoami``); raises an ``ApiError`` when the
forge refuses it or cannot be reached. Bound in ``app.py``."""


@dataclass
class ClientSpec:
    """What a create or update may set; None: leave as is (or the default)."""

    service_provider: str | None = None
    name: str | None = None
    http_url: str | None = None
    api_url: str | None = None
    key: str | None = None
    secret: str | None = field(default=None, repr=False)
    token_string: str | None = field(default=None, repr=False)
    app_id: str | None = None
    private_key: str | None = field(default=None, repr=False)
    webhook_secret: str | None = field(default=None, repr=False)
    organization_scoped: bool | None = None
    allow_fork_plans: bool | None = None
    project_ids: list[str] | None = None


@dataclass(frozen=True)
class Checked:
    """A create that passed the checks that need no forge: its kind."""

    kind: str
    org_name: str


@dataclass(frozen=True)
class ClientView:
    client: OAuthClient
    org: Organization
    project_ids: list[str]
    token_ids: list[str]


@dataclass(frozen=True)
class TokenView:
    token: OAuthToken
    client: OAuthClient
    org: Organization


@dataclass(frozen=True)
class _Audit:
    caller: Subject
    source: str
    at: datetime

    def __call__(self, s: Session, action: str, subject: str, **details: Any) -> None:
        record(
            s,
            at=self.at,
            actor=Actor(self.caller.id, self.caller.name, self.source),
            action=action,
            subject=subject,
            **details,
        )


def manage(caller: Subject, org: Organization, doing: str) -> None:
    authz.require(caller, ORG_MANAGE_VCS, orgs.target(org), doing=doing)


def check_url(value: str, name: str) -> str:
    """An http(s) URL without credentials, query or fragment; trailing ``/`` dropped."""
    parts = urlsplit(value)
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.username
        or parts.password
        or parts.query
        or parts.fragment
        or any(c.isspace() for c in value)
    ):
        raise Invalid(
            f"{name} must be an http(s) URL without credentials or query, like "
            f"https://gitlab.example.com; got {value!r}",
            pointer=_ATTR + name,
        )
    return value.rstrip("/")


def _check_pem(pem: str) -> None:
    try:
        key = load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError):
        key = None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise Invalid(
            "private-key must be the GitHub App's RSA private key in PEM "
            "(-----BEGIN RSA PRIVATE KEY----- …), unencrypted",
            pointer=_ATTR + "private-key",
        )


_APP_ID = re.compile(r"^[0-9]{1,20}$")


class VcsConnections:
    """OAuth clients and OAuth tokens (one unit of work per call)."""

    def __init__(
        self,
        db: Database,
        keyring: Keyring,
        clock: Clock,
        public_url: str,
        check_token: TokenCheck | None = None,
    ) -> None:
        self._db = db
        self._keys = keyring
        self._clock = clock
        self.public_url = public_url.rstrip("/")
        # Ask the forge about a token given at create, and for a GitHub App's installations;
        # called outside any transaction.
        self.check_token: TokenCheck = check_token or forge_whoami
        self.list_installations: InstallationsOf = _installations_of

    def webhook_url(self, client_id: str) -> str:
        """Where a connection's forge sends webhooks (``webhooks.receiver``)."""
        return f"{self.public_url}/api/cairn/v1/vcs-hooks/{client_id}"

    # ---- clients ----------------------------------------------------------------------------

    def list_clients(
        self, caller: Subject, org_name: str, page: Page
    ) -> tuple[list[ClientView], int]:
        with self._db.unit_of_work() as s:
            org = orgs.readable(s, caller, org_name)
            manage(caller, org, "list the VCS connections of")
            rows, total = store.clients_of(s, org, page)
            return self._views(s, org, rows), total

    def get_client(self, caller: Subject, client_id: str) -> ClientView:
        with self._db.unit_of_work() as s:
            org, row = store.client(s, caller, client_id)
            manage(caller, org, "read the VCS connections of")
            return self._views(s, org, [row])[0]

    def check_create(self, caller: Subject, org_name: str, spec: ClientSpec) -> Checked:
        """Everything a create checks before the forge is asked (read-only)."""
        kind = self._kind(spec)
        with self._db.unit_of_work() as s:
            org = orgs.readable(s, caller, org_name)
            manage(caller, org, "create VCS connections in")
            if spec.project_ids:
                self._check_projects(s, org, spec.project_ids)
        return Checked(kind=kind, org_name=org.name)

    def create_client(
        self,
        caller: Subject,
        org_name: str,
        spec: ClientSpec,
        *,
        validated: tuple[str, datetime | None] | None = None,
        installations: list[Installation] | None = None,
        source: str = "",
    ) -> ClientView:
        """Store a connection (and, for the token kinds, its token: ``validated`` is the
        forge's answer to ``whoami``; for a GitHub App, its ``installations`` as GitHub listed
        them)."""
        kind = self._kind(spec)
        if kind in TOKEN_KINDS and validated is None:
            raise ValueError("a token connection is created only after the forge checked it")
        now = self._clock.now()
        with self._db.unit_of_work(write=True) as s:
            org = orgs.readable(s, caller, org_name)
            manage(caller, org, "create VCS connections in")
            cid = ids.new_id("oauth_client")
            webhook_secret = spec.webhook_secret or secrets.token_urlsafe(32)
            row = OAuthClient(
                id=cid,
                organization_id=org.id,
                name=spec.name or None,
                service_provider=spec.service_provider or "",
                kind=kind,
                http_url=spec.http_url or "",
                api_url=spec.api_url or "",
                key=spec.key or None,
                secret_sealed=self._seal(spec.secret, secret_aad(cid)),
                app_id=spec.app_id or None,
                app_key_sealed=self._seal(spec.private_key, app_key_aad(cid)),
                webhook_secret_sealed=self._keys.seal(
                    webhook_secret.encode(), aad=webhook_secret_aad(cid)
                ),
                organization_scoped=True
                if spec.organization_scoped is None
                else spec.organization_scoped,
                allow_fork_plans=bool(spec.allow_fork_plans),
                created_at=now,
                created_by=caller.id if isinstance(caller, User) else None,
            )
            s.add(row)
            s.flush()
            if spec.project_ids:
                self._check_projects(s, org, spec.project_ids)
                store.add_projects(s, cid, spec.project_ids)
            if validated is not None and spec.token_string:
                self._add_token(s, row, spec.token_string, validated, now)
            if installations:
                _sync_rows(s, self._keys, row, installations, now)
            _Audit(caller, source, now)(
                s,
                "vcs.connection.create",
                cid,
                organization=org.name,
                kind=kind,
                service_provider=row.service_provider,
            )
            s.commit()
            return self._views(s, org, [row])[0]

    def _add_token(
        self,
        s: Session,
        client: OAuthClient,
        value: str,
        validated: tuple[str, datetime | None],
        now: datetime,
    ) -> OAuthToken:
        tid = ids.new_id("oauth_token")
        user, expires_at = validated
        row = OAuthToken(
            id=tid,
            oauth_client_id=client.id,
            organization_id=client.organization_id,
            service_provider_user=user[:255],
            access_token_sealed=self._keys.seal(value.encode(), aad=access_aad(tid, 0)),
            refresh_token_sealed=None,
            expires_at=expires_at,
            generation=0,
            status="ok",
            created_at=now,
        )
        s.add(row)
        s.flush()
        return row

    def update_client(
        self, caller: Subject, client_id: str, spec: ClientSpec, *, source: str = ""
    ) -> ClientView:
        now = self._clock.now()
        with self._db.unit_of_work(write=True) as s:
            org, row = store.client(s, caller, client_id)
            manage(caller, org, "change the VCS connections of")
            if spec.service_provider is not None and spec.service_provider != row.service_provider:
                raise Invalid(
                    "service-provider cannot be changed; create a new connection instead",
                    pointer=_ATTR + "service-provider",
                )
            if spec.token_string is not None:
                raise Invalid(
                    "oauth-token-string cannot be changed on an existing connection; create a "
                    "new connection with the new token (and point workspaces at its token)",
                    pointer=_ATTR + "oauth-token-string",
                )
            if spec.name is not None:
                row.name = spec.name or None
            if spec.http_url is not None:
                row.http_url = spec.http_url
            if spec.api_url is not None:
                row.api_url = spec.api_url
            if spec.key is not None:
                row.key = spec.key or None
            if spec.secret is not None:
                row.secret_sealed = self._seal(spec.secret, secret_aad(row.id))
            if spec.app_id is not None or spec.private_key is not None:
                if row.kind != "github_app":
                    raise Invalid(
                        "app-id and private-key belong to GitHub App connections only",
                        pointer=_ATTR + "app-id",
                    )
                if spec.app_id is not None:
                    row.app_id = spec.app_id
                if spec.private_key is not None:
                    row.app_key_sealed = self._seal(spec.private_key, app_key_aad(row.id))
            if spec.webhook_secret is not None:
                row.webhook_secret_sealed = self._keys.seal(
                    spec.webhook_secret.encode(), aad=webhook_secret_aad(row.id)
                )
            if spec.organization_scoped is not None:
                row.organization_scoped = spec.organization_scoped
            if spec.allow_fork_plans is not None:
                row.allow_fork_plans = spec.allow_fork_plans
            if spec.project_ids is not None:
                self._check_projects(s, org, spec.project_ids)
                store.remove_projects(s, row.id, store.project_ids(s, [row.id]).get(row.id, []))
                store.add_projects(s, row.id, spec.project_ids)
            s.flush()
            _Audit(caller, source, now)(
                s, "vcs.connection.update", row.id, organization=org.name, kind=row.kind
            )
            s.commit()
            return self._views(s, org, [row])[0]

    def delete_client(self, caller: Subject, client_id: str, *, source: str = "") -> None:
        now = self._clock.now()
        with self._db.unit_of_work(write=True) as s:
            org, row = store.client(s, caller, client_id)
            manage(caller, org, "delete the VCS connections of")
            n = store.disconnect_workspaces(s, client_id=row.id)
            s.execute(delete(OAuthClient).where(OAuthClient.id == row.id))
            _Audit(caller, source, now)(
                s,
                "vcs.connection.delete",
                row.id,
                organization=org.name,
                kind=row.kind,
                workspaces_disconnected=n,
            )
            s.commit()

    def change_projects(
        self,
        caller: Subject,
        client_id: str,
        project_ids: list[str],
        *,
        add: bool,
        source: str = "",
    ) -> None:
        now = self._clock.now()
        with self._db.unit_of_work(write=True) as s:
            org, row = store.client(s, caller, client_id)
            manage(caller, org, "change the VCS connections of")
            if add:
                self._check_projects(s, org, project_ids, pointer="/data")
                store.add_projects(s, row.id, project_ids)
            else:
                store.remove_projects(s, row.id, project_ids)
            _Audit(caller, source, now)(
                s,
                "vcs.connection.projects.add" if add else "vcs.connection.projects.remove",
                row.id,
                organization=org.name,
                projects=",".join(project_ids),
            )
            s.commit()

    # ---- tokens -----------------------------------------------------------------------------

    def list_tokens(
        self, caller: Subject, client_id: str, page: Page
    ) -> tuple[list[TokenView], int]:
        with self._db.unit_of_work() as s:
            org, row = store.client(s, caller, client_id)
            manage(caller, org, "read the VCS connections of")
            tokens, total = store.tokens_where(s, page, client_id=row.id)
            return [TokenView(t, row, org) for t in tokens], total

    def list_org_tokens(
        self, caller: Subject, org_name: str, page: Page
    ) -> tuple[list[TokenView], int]:
        with self._db.unit_of_work() as s:
            org = orgs.readable(s, caller, org_name)
            manage(caller, org, "read the VCS connections of")
            tokens, total = store.tokens_where(s, page, org_id=org.id)
            clients = {c.id: c for c in store.clients_of(s, org, Page(1, 10_000))[0]}
            return [TokenView(t, clients[t.oauth_client_id], org) for t in tokens], total

    def get_token(self, caller: Subject, token_id: str) -> TokenView:
        with self._db.unit_of_work() as s:
            org, client, row = store.token(s, caller, token_id)
            manage(caller, org, "read the VCS connections of")
            return TokenView(row, client, org)

    def update_token(
        self, caller: Subject, token_id: str, ssh_key: str | None, *, source: str = ""
    ) -> TokenView:
        now = self._clock.now()
        with self._db.unit_of_work(write=True) as s:
            org, client, row = store.token(s, caller, token_id)
            manage(caller, org, "change the VCS connections of")
            if ssh_key is not None:
                row.ssh_key_sealed = (
                    self._keys.seal(ssh_key.encode(), aad=ssh_key_aad(row.id)) if ssh_key else None
                )
            s.flush()
            _Audit(caller, source, now)(
                s,
                "vcs.token.update",
                row.id,
                organization=org.name,
                has_ssh_key=row.ssh_key_sealed is not None,
            )
            s.commit()
            return TokenView(row, client, org)

    def delete_token(self, caller: Subject, token_id: str, *, source: str = "") -> None:
        now = self._clock.now()
        with self._db.unit_of_work(write=True) as s:
            org, client, row = store.token(s, caller, token_id)
            manage(caller, org, "delete the VCS connections of")
            n = store.disconnect_workspaces(s, token_id=row.id)
            s.execute(delete(OAuthToken).where(OAuthToken.id == row.id))
            _Audit(caller, source, now)(
                s,
                "vcs.token.delete",
                row.id,
                organization=org.name,
                oauth_client=client.id,
                workspaces_disconnected=n,
            )
            s.commit()

    # ---- GitHub App installations -------------------------------------------------------------

    def installations(self, caller: Subject, page: Page) -> tuple[list[TokenView], int]:
        """The installations of the GitHub App connections of every organization where the
        caller manages VCS settings."""
        found: list[TokenView] = []
        with self._db.unit_of_work() as s:
            for org, client, tok in store.all_installations(s):
                if authz.allowed(caller, ORG_MANAGE_VCS, orgs.target(org)):
                    found.append(TokenView(tok, client, org))
        return found[page.offset : page.offset + page.size], len(found)

    def installation(self, caller: Subject, ghain_id: str) -> TokenView:
        with self._db.unit_of_work() as s:
            found = store.installation(s, ghain_id)
            missing = authz.not_found("GitHub App installation", repr(ghain_id))
            if found is None:
                raise missing
            org, client, tok = found
            if not authz.allowed(caller, ORG_MANAGE_VCS, orgs.target(org)):
                raise missing
            return TokenView(tok, client, org)

    def github_app(self, caller: Subject, client_id: str) -> GitHubApp:
        """A GitHub App connection's credentials, for listing its installations (read-only)."""
        with self._db.unit_of_work() as s:
            org, row = store.client(s, caller, client_id)
            manage(caller, org, "sync the installations of the VCS connections of")
            if row.kind != "github_app" or row.app_key_sealed is None or not row.app_id:
                raise Invalid(
                    f"VCS connection {row.id} is not a GitHub App; only a GitHub App has "
                    "installations to sync"
                )
            pem = self._keys.open(row.app_key_sealed, aad=app_key_aad(row.id)).decode()
            return GitHubApp(app_id=row.app_id, api_url=row.api_url, private_key=pem)

    def sync_installations(
        self,
        caller: Subject,
        client_id: str,
        installations: list[Installation],
        *,
        source: str = "",
    ) -> list[TokenView]:
        """Make the connection's installation rows what GitHub listed: new ones added (their
        token is minted on first use), gone ones deleted (their workspaces disconnected)."""
        now = self._clock.now()
        with self._db.unit_of_work(write=True) as s:
            org, row = store.client(s, caller, client_id)
            manage(caller, org, "sync the installations of the VCS connections of")
            added, removed = _sync_rows(s, self._keys, row, installations, now)
            _Audit(caller, source, now)(
                s,
                "vcs.connection.sync-installations",
                row.id,
                organization=org.name,
                added=added,
                removed=removed,
            )
            s.commit()
            tokens, _ = store.tokens_where(s, Page(1, 10_000), client_id=row.id)
            return [TokenView(t, row, org) for t in tokens]

    # ---- helpers ------------------------------------------------------------------------------

    def _seal(self, value: str | None, aad: str) -> bytes | None:
        return self._keys.seal(value.encode(), aad=aad) if value else None

    @staticmethod
    def _kind(spec: ClientSpec) -> str:
        sp = spec.service_provider
        if sp not in SERVICE_PROVIDERS:
            raise Invalid(
                f"service-provider must be one of {', '.join(SERVICE_PROVIDERS)}"
                + (f"; cairn does not connect to {sp!r}" if sp else ""),
                pointer=_ATTR + "service-provider",
            )
        has_app = spec.app_id is not None or spec.private_key is not None
        has_oauth = spec.key is not None or spec.secret is not None
        try:
            kind = derive_kind(
                sp,
                has_token=bool(spec.token_string),
                has_app=has_app,
                has_oauth_app=has_oauth and not has_app,
            )
        except KindError as err:
            raise Invalid(str(err), pointer="/data/attributes") from None
        if not spec.http_url or not spec.api_url:
            raise Invalid(
                "http-url and api-url are required (e.g. https://gitlab.com and "
                "https://gitlab.com/api/v4, or https://github.com and https://api.github.com)",
                pointer=_ATTR + ("http-url" if not spec.http_url else "api-url"),
            )
        if kind in ("gitlab_oauth", "github_oauth") and not (spec.key and spec.secret):
            raise Invalid(
                "an OAuth application connection needs both key (the application ID) and secret",
                pointer=_ATTR + ("key" if not spec.key else "secret"),
            )
        if kind == "github_app":
            if not spec.app_id or not _APP_ID.fullmatch(spec.app_id):
                raise Invalid(
                    "app-id must be the GitHub App's numeric ID", pointer=_ATTR + "app-id"
                )
            if not spec.private_key:
                raise Invalid(
                    "a GitHub App connection needs private-key", pointer=_ATTR + "private-key"
                )
            _check_pem(spec.private_key)
            if not spec.webhook_secret:
                raise Invalid(
                    "a GitHub App connection needs webhook-secret: the secret set in the "
                    "App's webhook settings (cairn checks deliveries with it)",
                    pointer=_ATTR + "webhook-secret",
                )
        return kind

    @staticmethod
    def _check_projects(
        s: Session, org: Organization, project_ids: list[str], *, pointer: str = ""
    ) -> None:
        where = pointer or "/data/relationships/projects"
        if len(project_ids) > MAX_PROJECTS:
            raise Invalid(f"at most {MAX_PROJECTS} projects per connection", pointer=where)
        known = store.projects_named(s, org.id, project_ids)
        for i, pid in enumerate(project_ids):
            if pid not in known:
                raise Invalid(
                    f"project {pid!r} does not exist in organization {org.name}",
                    pointer=f"{where}/data/{i}" if not pointer else f"{where}/{i}",
                )

    @staticmethod
    def _views(s: Session, org: Organization, rows: list[OAuthClient]) -> list[ClientView]:
        cids = [r.id for r in rows]
        projects = store.project_ids(s, cids)
        tokens = store.token_ids(s, cids)
        return [ClientView(r, org, projects.get(r.id, []), tokens.get(r.id, [])) for r in rows]


def _installations_of(app: GitHubApp, now: datetime) -> list[Installation]:
    return list_installations(app, now=now)


def _sync_rows(
    s: Session, keys: Keyring, client: OAuthClient, found: list[Installation], now: datetime
) -> tuple[int, int]:
    """Installation rows of ``client`` made equal to ``found``; (added, removed).

    A new row holds no token yet: its sealed access token is empty and ``expires_at`` is now,
    so ``vcs.tokens`` mints one on first use (never an empty bearer)."""
    have = {
        t.github_installation_id: t
        for t in store.tokens_where(s, Page(1, 10_000), client_id=client.id)[0]
        if t.github_installation_id is not None
    }
    wanted = {i.id: i for i in found}
    added = 0
    for inst_id, inst in wanted.items():
        row = have.get(inst_id)
        if row is not None:
            row.github_account = inst.account or None
            row.github_account_type = inst.account_type or None
            continue
        tid = ids.new_id("oauth_token")
        s.add(
            OAuthToken(
                id=tid,
                oauth_client_id=client.id,
                organization_id=client.organization_id,
                service_provider_user=inst.account[:255],
                access_token_sealed=keys.seal(b"", aad=access_aad(tid, 0)),
                expires_at=now,
                generation=0,
                status="ok",
                github_installation_id=inst_id,
                ghain_id=ids.new_id("github_app_installation"),
                github_account=inst.account or None,
                github_account_type=inst.account_type or None,
                created_at=now,
            )
        )
        added += 1
    gone = [t for inst_id, t in have.items() if inst_id not in wanted]
    for t in gone:
        store.disconnect_workspaces(s, token_id=t.id)
        s.execute(delete(OAuthToken).where(OAuthToken.id == t.id))
    s.flush()
    return added, len(gone)


def forge_whoami(
    kind: str, service_provider: str, api_url: str, http_url: str, token: str
) -> tuple[str, datetime | None]:
    """``TokenCheck`` through the forge clients (``vcs.forges``): the token's user and expiry.
    A token the forge refuses is bad input (422 on ``oauth-token-string``); a forge that does
    not answer is a 503 (nothing is stored either way). Imported when first used: only a
    create with ``oauth-token-string`` needs the clients."""
    from cairn.vcs.forges import forge_for
    from cairn.vcs.oauth import ForgeUnreachable
    from cairn.vcs.tokens import ForgeCredential, ForgeError

    credential = ForgeCredential(
        token_id="",
        kind=kind,
        service_provider=service_provider,
        api_url=api_url,
        http_url=http_url,
        token=token,
    )
    try:
        user, expires_at = forge_for(credential).whoami()
    except ForgeUnreachable as err:
        raise Unavailable(f"{err}; check api-url, or try again in a moment") from None
    except ForgeError as err:
        if err.forge_status in (401, 403):
            raise Invalid(
                f"the forge at {api_url} refused the token ({err.forge_status}): check that it "
                "is valid, not expired, and has the api scope (GitLab) or repo and "
                "admin:repo_hook (GitHub)",
                pointer=_ATTR + "oauth-token-string",
            ) from None
        raise
    return str(user), expires_at
