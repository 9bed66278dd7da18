"""The ``variables`` table and the rules of a variable's key, value and limits.

Every value is sealed (``crypto.Keyring.seal``), sensitive or not, under associated data
naming the variable's ID and whether it is sensitive (``sealing_aad``): a sealed value copied
to another row, or a row switched from sensitive to not behind cairn's back, does not open.
A sensitive value is write-only: no API answer carries it; only a run's job gets it
(``Variables.for_job``).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Final, Literal

from sqlalchemy import Boolean, ForeignKey, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from cairn.db.base import Base, UTCDateTime
from cairn.errors import Invalid

Category = Literal["terraform", "env"]
CATEGORIES: Final = ("terraform", "env")

MAX_KEY: Final = 128
MAX_DESCRIPTION: Final = 512
MAX_VALUE_BYTES: Final = 256 * 1024  # one value, UTF-8
MAX_PER_WORKSPACE: Final = 500  # variables of one workspace (a list answer holds them all)
MAX_WORKSPACE_BYTES: Final = 8 * 1024 * 1024  # all values of one workspace, UTF-8

# Terraform's variable names (HCL identifiers, ASCII): a letter or underscore, then letters,
# digits, underscores and dashes. Environment variable names: POSIX portable names.
_TERRAFORM_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class VariableColumns:
    """What a workspace's variable and a variable set's variable both hold (a mixin)."""

    key: Mapped[str] = mapped_column(String(MAX_KEY))
    category: Mapped[str] = mapped_column(String(16))  # terraform | env
    hcl: Mapped[bool] = mapped_column(Boolean, default=False)
    sensitive: Mapped[bool] = mapped_column(Boolean, default=False)
    description: Mapped[str | None] = mapped_column(String(MAX_DESCRIPTION), nullable=True)
    value_sealed: Mapped[bytes] = mapped_column(LargeBinary)
    # HCP Terraform's ``version-id``: new (random, so it says nothing about the value) at
    # every change.
    version_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Variable(VariableColumns, Base):
    __tablename__ = "variables"
    # The unique index (workspace first) is also how a workspace's variables are looked up.
    __table_args__ = (UniqueConstraint("workspace_id", "category", "key"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))

    def __repr__(self) -> str:  # never the value, sealed or not
        return (
            f"Variable(id={self.id!r}, workspace_id={self.workspace_id!r}, key={self.key!r}, "
            f"category={self.category!r}, sensitive={self.sensitive!r})"
        )


def sealing_aad(var_id: str, *, sensitive: bool) -> str:
    """The associated data a variable's value is sealed under."""
    return f"variables/{var_id}/{'sensitive' if sensitive else 'plain'}"


def check_category(value: str, pointer: str = "/data/attributes/category") -> Category:
    if value == "terraform":
        return "terraform"
    if value == "env":
        return "env"
    if value == "policy-set":
        raise Invalid(
            "category 'policy-set' is for variables of policy sets, which cairn does not have; "
            "a workspace variable is 'terraform' or 'env'",
            pointer=pointer,
        )
    raise Invalid(f"category must be 'terraform' or 'env', not {value!r}", pointer=pointer)


def check_key(key: str, category: Category, pointer: str = "/data/attributes/key") -> str:
    """``key`` if it is a valid name for a variable of ``category`` (422 otherwise)."""
    if not key:
        raise Invalid("key must not be empty", pointer=pointer)
    if len(key) > MAX_KEY:
        raise Invalid(f"key is longer than {MAX_KEY} characters", pointer=pointer)
    if category == "terraform":
        if not _TERRAFORM_KEY.fullmatch(key):
            raise Invalid(
                f"key {key!r} is not a Terraform variable name: it must start with a letter or "
                "an underscore and hold only letters, digits, underscores and dashes",
                pointer=pointer,
            )
    elif not _ENV_KEY.fullmatch(key):
        raise Invalid(
            f"key {key!r} is not an environment variable name: it must start with a letter or "
            "an underscore and hold only letters, digits and underscores",
            pointer=pointer,
        )
    return key


def check_value(value: str, pointer: str = "/data/attributes/value") -> bytes:
    """The UTF-8 bytes of ``value`` if within ``MAX_VALUE_BYTES`` (422 otherwise; the message
    never quotes the value)."""
    raw = value.encode("utf-8")
    if len(raw) > MAX_VALUE_BYTES:
        raise Invalid(
            f"value is {len(raw)} bytes long; a variable's value may hold at most "
            f"{MAX_VALUE_BYTES} bytes (UTF-8)",
            pointer=pointer,
        )
    return raw
