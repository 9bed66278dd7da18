"""The transport (never imports a domain): the request pipeline with pluggable
authenticators and executors (``http``), JSON:API documents and pagination (``jsonapi``), the
signer of every signed URL (``signed``), Terraform's service discovery (``service_discovery``),
and request logging, metrics and TFE headers (``observe``)."""
