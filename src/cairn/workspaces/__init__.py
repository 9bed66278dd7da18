"""Workspaces: names, tags, settings and the state lock."""
