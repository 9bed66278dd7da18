"""An S3-compatible endpoint (SigV4) and short-lived credentials (STS-style), mapped onto
cairn's workspaces, locks and state history."""
