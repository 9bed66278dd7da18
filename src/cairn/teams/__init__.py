"""Who may do what, as organizations manage it: teams, members, grants, roles, team tokens.

- ``service``: teams and memberships (TFE teams).
- ``grants``: TFE team-workspace access, cairn's pattern grants, custom roles.
- ``users``: user accounts, for site admins.
- ``tokens``: team tokens (their service accounts, via ``auth.token_store``).
- ``targets``: the organization, team or workspace a request names, checked with ``authz``.
- ``store``: the rows, read and written in the caller's unit of work.
- ``api``: the HTTP handlers (``tfe_routes``, ``cairn_routes``), given the services.
- ``hooks``: what teams do when an organization is created (wired in ``app.py``).

The tables themselves are in ``authz.model``: access is decided from them on every request.
"""
