"""VCS webhooks: the receiver (verified before parsing, acknowledged fast), deliveries, the
ingest queue that turns pushes, tags and merge requests into configuration versions and runs,
and commit statuses."""
