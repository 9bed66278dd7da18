"""Variable sets

``variable_sets``: an organization's sets (unique names per organization; ``global``: applied
to every workspace; ``priority``: beats the workspaces' own variables). ``variable_set_variables``:
their Terraform and environment variables, one key per set and category, every value sealed
under CAIRN_SECRET_KEY. ``variable_set_workspaces`` / ``variable_set_projects``: the
workspaces and projects a set is applied to. All cascade from the set, the organization, the
workspace or the project (``cairn.variables.sets_model``).

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-01 07:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from cairn.db.base import UTCDateTime

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "variable_sets",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("organization_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("description", sa.String(length=1000), nullable=False),
        sa.Column("is_global", sa.Boolean(), nullable=False),
        sa.Column("priority", sa.Boolean(), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_variable_sets_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_variable_sets")),
        sa.UniqueConstraint(
            "organization_id", "name", name=op.f("uq_variable_sets_organization_id_name")
        ),
    )
    op.create_table(
        "variable_set_variables",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("varset_id", sa.String(length=32), nullable=False),
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("category", sa.String(length=16), nullable=False),
        sa.Column("hcl", sa.Boolean(), nullable=False),
        sa.Column("sensitive", sa.Boolean(), nullable=False),
        sa.Column("description", sa.String(length=512), nullable=True),
        sa.Column("value_sealed", sa.LargeBinary(), nullable=False),
        sa.Column("version_id", sa.String(length=64), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["varset_id"],
            ["variable_sets.id"],
            name=op.f("fk_variable_set_variables_varset_id_variable_sets"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_variable_set_variables")),
        sa.UniqueConstraint(
            "varset_id",
            "category",
            "key",
            name=op.f("uq_variable_set_variables_varset_id_category_key"),
        ),
    )
    op.create_table(
        "variable_set_workspaces",
        sa.Column("varset_id", sa.String(length=32), nullable=False),
        sa.Column("workspace_id", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["varset_id"],
            ["variable_sets.id"],
            name=op.f("fk_variable_set_workspaces_varset_id_variable_sets"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_variable_set_workspaces_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "varset_id", "workspace_id", name=op.f("pk_variable_set_workspaces")
        ),
    )
    with op.batch_alter_table("variable_set_workspaces", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_variable_set_workspaces_workspace_id"), ["workspace_id"], unique=False
        )
    op.create_table(
        "variable_set_projects",
        sa.Column("varset_id", sa.String(length=32), nullable=False),
        sa.Column("project_id", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["varset_id"],
            ["variable_sets.id"],
            name=op.f("fk_variable_set_projects_varset_id_variable_sets"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_variable_set_projects_project_id_projects"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("varset_id", "project_id", name=op.f("pk_variable_set_projects")),
    )
    with op.batch_alter_table("variable_set_projects", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_variable_set_projects_project_id"), ["project_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("variable_set_projects", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_variable_set_projects_project_id"))
    op.drop_table("variable_set_projects")
    with op.batch_alter_table("variable_set_workspaces", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_variable_set_workspaces_workspace_id"))
    op.drop_table("variable_set_workspaces")
    op.drop_table("variable_set_variables")
    op.drop_table("variable_sets")
