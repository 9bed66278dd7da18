"""Who may do what: teams, memberships, roles and grants on workspaces."""
