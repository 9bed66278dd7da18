"""VCS connections: OAuth clients, OAuth tokens (sealed), the single-flight token service,
forge API clients and workspace VCS settings."""
