"""Site-admin HTTP surfaces over lower domains that must not know HTTP themselves.

- ``audit_api``: ``GET /api/cairn/v1/audit-events[/{id}]``, the audit log (``cairn.audit``
  is ground floor: it records and queries events, and imports no transport).
"""
