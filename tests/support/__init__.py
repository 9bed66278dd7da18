"""Test harness: real cairn servers, a throw-away PostgreSQL and the real Terraform CLI.

Everything here starts real processes and always stops them by pid: at fixture teardown, and
as a last resort at interpreter exit (`processes.reap_all`).
"""
