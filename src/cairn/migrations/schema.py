"""Every table, imported in one place so Alembic and tests see the whole schema."""

from cairn.audit.model import AuditEvent
from cairn.auth.model import ApiToken, LoginState, OAuthCode, User
from cairn.authz.model import Grant, Role, Team, TeamMembership, TeamProject
from cairn.blobs.model import Blob, BlobChunk
from cairn.db.base import Base
from cairn.db.meta import Meta
from cairn.identity.model import OidcSigningKey
from cairn.organizations.model import Organization, Project
from cairn.state.model import StateVersion, StateVersionOutput
from cairn.teams.memberships import OrganizationMembership
from cairn.workspaces.consumers import RemoteStateConsumer
from cairn.workspaces.model import Tag, Workspace, WorkspaceTag

metadata = Base.metadata

__all__ = [
    "ApiToken",
    "AuditEvent",
    "Blob",
    "BlobChunk",
    "Grant",
    "LoginState",
    "Meta",
    "OAuthCode",
    "OidcSigningKey",
    "Organization",
    "OrganizationMembership",
    "Project",
    "RemoteStateConsumer",
    "Role",
    "StateVersion",
    "StateVersionOutput",
    "Tag",
    "Team",
    "TeamMembership",
    "TeamProject",
    "User",
    "Workspace",
    "WorkspaceTag",
    "metadata",
]
