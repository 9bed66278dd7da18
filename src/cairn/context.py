"""The services one cairn process holds, built by ``app.create_app`` and shared by handlers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cairn.audit.lane import AuditedLane
    from cairn.auth.login import IdentityProvider, LoginService
    from cairn.auth.tokens import TokenService
    from cairn.blobs.store import BlobStore
    from cairn.clock import Clock
    from cairn.config import Settings
    from cairn.crypto import Keyring
    from cairn.db.engine import Database
    from cairn.identity.issuer import Issuer
    from cairn.organizations.service import OrganizationService
    from cairn.state.service import StateService
    from cairn.teams.service import RbacService
    from cairn.workspaces.service import WorkspaceService


@dataclass
class AppContext:
    settings: Settings
    db: Database
    blobs: BlobStore
    keyring: Keyring
    clock: Clock
    tokens: TokenService
    organizations: OrganizationService
    workspaces: WorkspaceService
    states: StateService
    issuer: Issuer
    rbac: RbacService
    login: LoginService
    audited: AuditedLane  # jobs whose audit events commit together (token mints)
    idp: IdentityProvider | None = None
