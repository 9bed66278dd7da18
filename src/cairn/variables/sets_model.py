"""Variable sets (HCP Terraform's ``varsets``): tables, limits and the precedence rule.

A variable set belongs to an organization and holds Terraform and environment variables,
validated and sealed as workspace variables are (``variables.model``: the same key rules,
value limit and keyring; sealed under associated data naming the set and the variable, so a
value does not open in another row). It applies to every workspace of the organization
(``global``), or to the workspaces it is applied to and to every workspace of the projects it
is applied to. A ``priority`` set beats the workspace's own variables.

Precedence (HCP Terraform's, highest first), for variables of the same category and key:
priority global sets, priority project-scoped sets, priority workspace-scoped sets, the
workspace's variables, workspace-scoped sets, project-scoped sets, global sets. Between sets
of one level the set whose name comes first (Unicode code points) wins. A set applied both to
a workspace and to its project counts at the workspace level (the more specific). Different
global sets may not hold a variable of the same category and key (a 422, as in HCP
Terraform), so global sets never conflict.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from enum import IntEnum
from typing import Final, TypeVar

from sqlalchemy import Boolean, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from cairn.db.base import Base, UTCDateTime
from cairn.variables.model import (
    MAX_PER_WORKSPACE,
    VariableColumns,
    sealing_aad,
)

MAX_NAME: Final = 128
MAX_SET_DESCRIPTION: Final = 1000
MAX_SETS_PER_ORGANIZATION: Final = 100
MAX_VARS_PER_SET: Final = MAX_PER_WORKSPACE
MAX_SET_BYTES: Final = 2 * 1024 * 1024  # all values of one set, UTF-8
MAX_TARGETS_PER_REQUEST: Final = 100  # workspaces or projects named by one request


class VariableSet(Base):
    __tablename__ = "variable_sets"
    __table_args__ = (UniqueConstraint("organization_id", "name"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(MAX_NAME))
    description: Mapped[str] = mapped_column(String(MAX_SET_DESCRIPTION), default="")
    is_global: Mapped[bool] = mapped_column(Boolean, default=False)
    priority: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    def __repr__(self) -> str:
        return f"VariableSet(id={self.id!r}, name={self.name!r}, global={self.is_global!r})"


class VariableSetVariable(VariableColumns, Base):
    __tablename__ = "variable_set_variables"
    # The unique index (set first) is also how a set's variables are looked up.
    __table_args__ = (UniqueConstraint("varset_id", "category", "key"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    varset_id: Mapped[str] = mapped_column(ForeignKey("variable_sets.id", ondelete="CASCADE"))

    def __repr__(self) -> str:  # never the value, sealed or not
        return (
            f"VariableSetVariable(id={self.id!r}, varset_id={self.varset_id!r}, "
            f"key={self.key!r}, category={self.category!r}, sensitive={self.sensitive!r})"
        )


class VariableSetWorkspace(Base):
    __tablename__ = "variable_set_workspaces"
    varset_id: Mapped[str] = mapped_column(
        ForeignKey("variable_sets.id", ondelete="CASCADE"), primary_key=True
    )
    workspace_id: Mapped[str] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class VariableSetProject(Base):
    __tablename__ = "variable_set_projects"
    varset_id: Mapped[str] = mapped_column(
        ForeignKey("variable_sets.id", ondelete="CASCADE"), primary_key=True
    )
    project_id: Mapped[str] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True, index=True
    )


def set_sealing_aad(varset_id: str, var_id: str, *, sensitive: bool) -> str:
    """The associated data a set variable's value is sealed under (workspace variables' rule,
    naming the set too)."""
    return sealing_aad(f"{varset_id}/{var_id}", sensitive=sensitive)


# ---- precedence --------------------------------------------------------------------------------


class Level(IntEnum):
    """Where a variable comes from; a lower level wins."""

    PRIORITY_GLOBAL = 0
    PRIORITY_PROJECT = 1
    PRIORITY_WORKSPACE = 2
    WORKSPACE_VARIABLES = 3
    WORKSPACE_SETS = 4
    PROJECT_SETS = 5
    GLOBAL_SETS = 6


def set_level(*, is_global: bool, priority: bool, on_workspace: bool) -> Level:
    """The level of a set that applies to a workspace: ``on_workspace`` when applied to the
    workspace itself (else through its project, or globally)."""
    if is_global:
        return Level.PRIORITY_GLOBAL if priority else Level.GLOBAL_SETS
    if on_workspace:
        return Level.PRIORITY_WORKSPACE if priority else Level.WORKSPACE_SETS
    return Level.PRIORITY_PROJECT if priority else Level.PROJECT_SETS


T = TypeVar("T")


def effective(
    candidates: Iterable[tuple[Level, str, T]], name: Callable[[T], tuple[str, str]]
) -> list[T]:
    """The winners among ``candidates`` (level, set name — "" for workspace variables —,
    variable), one per ``name(variable)`` = (category, key): the lowest level, then the set
    name first in code-point order. Terraform variables first, each category by key."""
    best: dict[tuple[str, str], tuple[Level, str, T]] = {}
    for level, set_name, var in candidates:
        k = name(var)
        held = best.get(k)
        if held is None or (level, set_name) < (held[0], held[1]):
            best[k] = (level, set_name, var)
    order = sorted(best, key=lambda ck: (ck[0] != "terraform", ck[1]))
    return [best[k][2] for k in order]
