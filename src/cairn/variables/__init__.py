"""Workspace variables (Terraform and environment), sensitive ones sealed at rest."""
