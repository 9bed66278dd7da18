"""People, and how they prove who they are (above ``tfeapi``, below every domain but ``authz``).

- ``model``: users (people and token service accounts), API tokens, login codes and states.
- ``tokens``: ``TokenService`` — the one place a token is made (``issue``, kinds registered by
  their owners), the built-in admin, and the request pipeline's ``"token"`` authenticator.
- ``token_store``: token rows and ``TokenLedger`` (issue/revoke with their audit events);
  ``usertokens``: user tokens; ``tokens_api``: the TFE authentication-tokens resource
  (organization and team tokens live in ``organizations.tokens`` and ``teams.tokens``).
- ``login`` / ``login_api``: the ``terraform login`` server (authorization code + PKCE);
  ``idp/``: the OIDC relying party for the team's identity provider; ``throttle``: what
  anonymous clients may make it write (a bucket per address, failed logins audited ten times
  per window, then counted).
- ``accounts`` / ``accounts_api``: disabling and enabling a person (site admins).
- ``users`` / ``api``: account details (``/account/details``, ``/users/{id}``).
- ``hooks``: what auth does when an organization is renamed (wired in ``app.py``).
"""
