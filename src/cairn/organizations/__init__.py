"""Organizations and their projects (above ``authz`` and ``auth``; below every other domain).

- ``model``: the organization and project rows.
- ``store``: lookups in the caller's unit of work (``readable``, ``project``, lists paged in
  SQL); what other domains use.
- ``service``: create, rename, delete organizations and projects, one transaction each.
- ``hooks``: ``OrganizationHooks``, what higher domains register to run in those transactions
  (owners team, service account rename, workspace checks; wired in ``app.py``).
- ``tokens``: the organization token (its service account, via ``auth.token_store``).
- ``api`` / ``wire``: the TFE API handlers (``routes(service)``) and documents.
"""
