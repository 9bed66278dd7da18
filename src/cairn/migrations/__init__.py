"""The schema's top floor: every table of every domain (``schema``), the Alembic environment
and versions, and ``migrate`` (upgrade at start, ``cairn db upgrade``).

It sits above every domain, because it must see all their models; nothing but ``app.py`` and
``cli/`` imports it (warehouse keeps its migrations the same way).
"""
