"""Workspaces: names, settings, tags and the state lock (above ``organizations``).

- ``model``: workspace and tag rows, and the lock rules (``Workspace.enlock`` / ``unlock``,
  for a ``Holder``: a user today, a run later).
- ``store``: lookups in the caller's unit of work (``find``, ``find_by_name``), views, and
  searches filtered by ``authz.visible`` and paged in SQL; what other domains use.
- ``service``: create, update, delete, list.
- ``locks``: lock / unlock / force-unlock, ``write_lock`` (the one conditional UPDATE) and
  ``held_message`` (who holds it, for 409s here and in state).
- ``tags``: workspace and organization tags.
- ``hooks``: the checks workspaces register on organizations (wired in ``app.py``).
- ``api`` / ``wire``: the TFE API handlers (``routes(workspaces, locks, tags, …)``) and
  documents.
"""
