"""Authorization: the vocabulary and the one decider (ground floor: imports only ``errors``
and ``db``).

- ``permissions``: what may be done (``workspace:read``, ``state:read`` … ``org:manage``).
- ``roles``: built-in roles (TFE access levels), custom workspace access, team-project access
  levels, organization-access flags, custom role checks.
- ``model``: teams, memberships, custom roles, grants and team-project access (the tables access
  is loaded from).
- ``access``: ``Access`` and ``load_access`` (once per request, in its transaction).
- ``subject``: ``Subject`` = ``User | ServiceAccount | System``, and lock ``Holder``.
- ``authorizer``: ``require`` / ``allowed`` / ``visible`` (SQL filter) and the 404/403 style.
"""

from cairn.authz.authorizer import (
    SITE,
    SITE_MANAGE,
    SITE_READ,
    Org,
    Project,
    Target,
    Ws,
    allowed,
    can,
    not_found,
    permissions,
    permissions_on,
    require,
    require_placement,
    visible,
)
from cairn.authz.subject import Holder, ServiceAccount, Subject, System, User, holder_of

__all__ = [
    "SITE",
    "SITE_MANAGE",
    "SITE_READ",
    "Holder",
    "Org",
    "Project",
    "ServiceAccount",
    "Subject",
    "System",
    "Target",
    "User",
    "Ws",
    "allowed",
    "can",
    "holder_of",
    "not_found",
    "permissions",
    "permissions_on",
    "require",
    "require_placement",
    "visible",
]
