"""Workspace variables (Terraform and environment): the TFE ``vars`` API, every value sealed
at rest, sensitive values write-only, and what a run's job is given (``Variables.for_job``)."""
