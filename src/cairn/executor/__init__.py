"""The executor: what runs a claimed job (Terraform) for the in-process workers and `cairn agent`.

It speaks only HTTP to cairn (the agent protocol under ``/api/agent/v1`` and the TFE API with the
job token) and imports nothing of cairn's domains.
"""
