"""service accounts belong to their organization and team by real columns

Organization and team tokens act as service accounts. They were tied to their organization or
team only by a username prefix; now ``users.organization_id`` / ``users.team_id`` say so, with
``ON DELETE CASCADE``, so a service account (and its tokens) dies with its organization/team.
Existing rows are backfilled from their display names.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 00:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from cairn.authz.subject import ORG_SERVICE_PREFIX, TEAM_SERVICE_PREFIX

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("organization_id", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("team_id", sa.String(length=32), nullable=True))
        batch_op.create_index(batch_op.f("ix_users_organization_id"), ["organization_id"])
        batch_op.create_index(batch_op.f("ix_users_team_id"), ["team_id"])
        batch_op.create_foreign_key(
            batch_op.f("fk_users_organization_id_organizations"),
            "organizations",
            ["organization_id"],
            ["id"],
            ondelete="CASCADE",
        )
        batch_op.create_foreign_key(
            batch_op.f("fk_users_team_id_teams"), "teams", ["team_id"], ["id"], ondelete="CASCADE"
        )
    conn = op.get_bind()
    users = sa.table(
        "users",
        sa.column("id", sa.String),
        sa.column("username", sa.String),
        sa.column("is_service_account", sa.Boolean),
        sa.column("organization_id", sa.String),
        sa.column("team_id", sa.String),
    )
    orgs = sa.table("organizations", sa.column("id", sa.String), sa.column("name", sa.String))
    teams = sa.table("teams", sa.column("id", sa.String), sa.column("organization_id", sa.String))
    accounts = conn.execute(
        sa.select(users.c.id, users.c.username).where(users.c.is_service_account)
    ).all()
    for user_id, username in accounts:
        org_id = team_id = None
        if username.startswith(ORG_SERVICE_PREFIX):
            org_id = conn.scalar(
                sa.select(orgs.c.id).where(orgs.c.name == username[len(ORG_SERVICE_PREFIX) :])
            )
        elif username.startswith(TEAM_SERVICE_PREFIX):
            team_id = username[len(TEAM_SERVICE_PREFIX) :]
            org_id = conn.scalar(sa.select(teams.c.organization_id).where(teams.c.id == team_id))
        if org_id is None:  # its organization or team is gone: so is the account
            conn.execute(sa.delete(users).where(users.c.id == user_id))
            continue
        conn.execute(
            sa.update(users)
            .where(users.c.id == user_id)
            .values(organization_id=org_id, team_id=team_id)
        )


def downgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_users_team_id_teams"), type_="foreignkey")
        batch_op.drop_constraint(
            batch_op.f("fk_users_organization_id_organizations"), type_="foreignkey"
        )
        batch_op.drop_index(batch_op.f("ix_users_team_id"))
        batch_op.drop_index(batch_op.f("ix_users_organization_id"))
        batch_op.drop_column("team_id")
        batch_op.drop_column("organization_id")
