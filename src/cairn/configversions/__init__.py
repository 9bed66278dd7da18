"""Configuration versions: the uploaded Terraform configuration a run plans and applies."""
