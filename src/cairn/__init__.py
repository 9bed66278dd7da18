"""cairn: a self-hosted, Terraform-Cloud-compatible platform."""

__version__ = "0.1.0"
