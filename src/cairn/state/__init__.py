"""State versions: history, checksums, outputs, hosted uploads, rollback."""
