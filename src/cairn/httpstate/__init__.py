"""Terraform's ``http`` backend mapped onto cairn's workspaces, locks and state history."""
