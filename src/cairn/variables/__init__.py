"""Workspace variables (Terraform and environment) and variable sets: the TFE ``vars`` and
``varsets`` APIs, every value sealed at rest, sensitive values write-only, and what a run's job
is given (``Variables.for_job``: the workspace's and its sets' variables, precedence applied).
"""
