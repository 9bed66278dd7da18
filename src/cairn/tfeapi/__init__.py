"""The TFE API v2 plumbing: JSON:API documents, pagination, bearer auth, service discovery."""
