"""Every table, imported in one place so Alembic and tests see the whole schema."""

from cairn.agents.model import Agent, AgentPool, AgentPoolWorkspace, AgentToken
from cairn.audit.model import AuditEvent
from cairn.auth.model import ApiToken, LoginState, OAuthCode, User
from cairn.authz.model import Grant, Role, Team, TeamMembership, TeamProject
from cairn.blobs.model import Blob, BlobChunk
from cairn.configversions.model import ConfigurationVersion, ConfigurationVersionIngress
from cairn.db.base import Base
from cairn.db.meta import Meta
from cairn.identity.model import OidcSigningKey
from cairn.organizations.model import Organization, Project
from cairn.runs.jobs_model import Job, JobToken, LogChunk
from cairn.runs.model import Run, RunEvent, RunPhase
from cairn.s3api.model import S3Object
from cairn.state.model import StateVersion, StateVersionOutput
from cairn.teams.memberships import OrganizationMembership
from cairn.variables.model import Variable
from cairn.variables.sets_model import (
    VariableSet,
    VariableSetProject,
    VariableSetVariable,
    VariableSetWorkspace,
)
from cairn.vcs.model import ConnectState, OAuthClient, OAuthClientProject, OAuthToken
from cairn.webhooks.archives import VcsCommitArchive
from cairn.webhooks.model import VcsDelivery, VcsRepoHook
from cairn.webhooks.statuses import VcsStatus
from cairn.workspaces.consumers import RemoteStateConsumer
from cairn.workspaces.model import Tag, Workspace, WorkspaceTag

metadata = Base.metadata

__all__ = [
    "Agent",
    "AgentPool",
    "AgentPoolWorkspace",
    "AgentToken",
    "ApiToken",
    "AuditEvent",
    "Blob",
    "BlobChunk",
    "ConfigurationVersion",
    "ConfigurationVersionIngress",
    "ConnectState",
    "Grant",
    "Job",
    "JobToken",
    "LogChunk",
    "LoginState",
    "Meta",
    "OAuthClient",
    "OAuthClientProject",
    "OAuthCode",
    "OAuthToken",
    "OidcSigningKey",
    "Organization",
    "OrganizationMembership",
    "Project",
    "RemoteStateConsumer",
    "Role",
    "Run",
    "RunEvent",
    "RunPhase",
    "S3Object",
    "StateVersion",
    "StateVersionOutput",
    "Tag",
    "Team",
    "TeamMembership",
    "TeamProject",
    "User",
    "Variable",
    "VariableSet",
    "VariableSetProject",
    "VariableSetVariable",
    "VariableSetWorkspace",
    "VcsCommitArchive",
    "VcsDelivery",
    "VcsRepoHook",
    "VcsStatus",
    "Workspace",
    "WorkspaceTag",
    "metadata",
]
