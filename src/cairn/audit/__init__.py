"""The append-only audit log of security events (ground floor: imports only ``ids``,
``paging`` and ``db``; its HTTP API is ``cairn.admin.audit_api``).

- ``model``: the ``AuditEvent`` table.
- ``log``: ``record`` an event in the caller's unit of work (or stage it on the audited lane).
- ``lane``: group commit for jobs whose only write is their audit event (token mints).
- ``service``: ``AuditLog``, filtered and paged reads.
"""
