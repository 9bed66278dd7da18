"""Errors of the workload-identity issuer, as branches of cairn's one error tree.

CairnError
├── ConfigError
│   └── IdentityConfigError   a rotation policy or issuer URL that cannot work (refuse to start)
├── KeyMaterialError          a key or JWK is malformed, or does not match its metadata
├── KeySetCorrupt             stored key metadata breaks an invariant (two active keys, …)
└── ApiError
    ├── Conflict
    │   ├── RotationRefused   a rotation the policy does not allow now (says why and when)
    │   └── RotationConflict  the key set changed under a rotation (another replica won): retry
    └── Invalid
        └── InvalidTokenRequest  a token cannot be minted from these inputs

No message ever contains private key material: only kids, versions, states and times.
"""

from __future__ import annotations

from datetime import datetime

from cairn.errors import CairnError, ConfigError, Conflict, Invalid


class IdentityConfigError(ConfigError):
    """The identity settings (rotation period, pre-publication window, token lifetime cap,
    issuer URL) cannot work; cairn refuses to start and names the setting to change."""

    code = "identity-config"


class KeyMaterialError(CairnError):
    """A key is malformed (a padded or non-base64url JWK member, a wrong curve or size) or a
    private key does not belong to the key it was stored under (a swapped row)."""

    code = "key-material"


class KeySetCorrupt(CairnError):
    """Stored key metadata breaks an invariant the database should have enforced: no or several
    active keys, several next keys, duplicate versions or kids, a state without its timestamps.
    Nothing is signed or rotated until an operator repairs it."""

    code = "key-set-corrupt"


class RotationRefused(Conflict):
    """The rotation policy does not allow this rotation now. ``detail`` explains why and what
    the operator may do instead; ``retry_at`` (UTC) is when it would be allowed, if known."""

    code = "rotation-refused"

    def __init__(self, detail: str, *, retry_at: datetime | None = None) -> None:
        super().__init__(detail)
        self.retry_at = retry_at


class RotationConflict(Conflict):
    """The key set changed between planning a rotation and applying it (typically another
    replica rotated first). Nothing was changed; re-read the keys and plan again."""

    code = "rotation-conflict"


class InvalidTokenRequest(Invalid):
    """A workload-identity token cannot be built from these inputs (a name containing ``:``,
    an empty or oversized audience, an unknown run phase, a non-positive lifetime)."""

    code = "invalid-token-request"
