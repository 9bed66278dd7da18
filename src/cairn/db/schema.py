"""Every table, imported in one place so Alembic and tests see the whole schema."""

from cairn.auth.model import ApiToken, User
from cairn.blobs.model import Blob, BlobChunk
from cairn.db.base import Base
from cairn.db.meta import Meta
from cairn.organizations.model import Organization, Project
from cairn.state.model import StateVersion, StateVersionOutput
from cairn.workspaces.model import Tag, Workspace, WorkspaceTag

metadata = Base.metadata

__all__ = [
    "ApiToken",
    "Blob",
    "BlobChunk",
    "Meta",
    "Organization",
    "Project",
    "StateVersion",
    "StateVersionOutput",
    "Tag",
    "User",
    "Workspace",
    "WorkspaceTag",
    "metadata",
]
