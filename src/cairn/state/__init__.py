"""State versions: history, checksums, outputs, hosted uploads, rollback (above
``workspaces``).

- ``model``: the version and output rows.
- ``store``: lookups and the write rules (lock holder, serial, lineage, MD5) applied in the
  caller's unit of work, and ``finalize``, the conditional writes that make a version current.
- ``service``: reading, creating (inline or pending), downloading, rolling back.
- ``uploads``: the hosted two-step upload behind signed URLs (``tfeapi.signed``).
- ``processing``: counting resources after the commit (and after a crash).
- ``inspect``: facts read from a state file as a stream.
- ``api`` / ``wire``: the TFE API handlers (``routes(states, uploads, …)``) and documents.
"""
