"""The in-process API layer: fixtures from `tests.support.app` (see its docstring)."""

from tests.support.app import admin, any_app, anyio_backend, app

__all__ = ["admin", "any_app", "anyio_backend", "app"]
