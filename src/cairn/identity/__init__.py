"""The workload-identity issuer: OIDC tokens for runs, and keys that rotate without ever
breaking a verifier. This package is the pure core; the database, HTTP and CLI layers wire it.

* ``keys``: key pairs, public JWKs, RFC 7638 kids, sealing, ``SigningKey`` metadata;
* ``lifecycle``: the rotation policy (initial, graceful, emergency, trim, scheduled tick) as
  pure functions of (key metadata, now) returning a ``Plan``;
* ``plan``: the ``Plan`` data and how the store applies it in one transaction;
* ``tokens``: HCP Terraform's claim set and compact JWS signing (``cryptography`` only);
* ``discovery``: pre-serialised discovery and JWKS documents with ETags;
* ``errors``: this domain's branch of cairn's error tree.
"""
