"""The workload-identity issuer: OIDC tokens for runs, and keys that rotate without ever
breaking a verifier.

The pure core (no I/O):

* ``keys``: key pairs, public JWKs, RFC 7638 kids, sealing, ``SigningKey`` metadata;
* ``lifecycle``: the rotation policy (initial, graceful, emergency, trim, scheduled tick) as
  pure functions of (key metadata, now) returning a ``Plan``;
* ``plan``: the ``Plan`` data and how the store applies it in one transaction;
* ``tokens``: HCP Terraform's claim set and compact JWS signing (``cryptography`` only);
* ``discovery``: pre-serialised discovery and JWKS documents with ETags;
* ``errors``: this domain's branch of cairn's error tree.

Around it:

* ``model`` / ``store``: the signing-key table; a plan applied in one transaction with its
  audit events and a ``NOTIFY`` on ``cairn_oidc_keys`` (``cairn.db.notify``);
* ``issuer``: one process's issuer: the in-memory cache (dropped on notification, rebuilt by
  a background job), minting (access decided by ``cairn.authz``), rotation and trimming;
* ``api``: HTTP (discovery and JWKS as raw ASGI; the key admin API and the mint route through
  the request pipeline), taking the issuer as small protocols.
"""
