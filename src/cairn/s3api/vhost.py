"""Virtual-host-style buckets: ``<organization>.<CAIRN_S3_DOMAIN>/<key>`` is served as the
path-style ``/s3/<organization>/<key>``.

A raw ASGI middleware rewrites the path before routing and keeps the path the client sent (and
signed) in the scope, so the SigV4 check (``s3api.api.incoming``) signs what the client did.
Hosts that are not ``<one label>.<domain>`` pass through unchanged.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

SIGNED_PATH = "cairn.s3.signed_path"


class VirtualHostBuckets:
    def __init__(self, app: ASGIApp, domain: str) -> None:
        self.app = app
        self.suffix = "." + domain.lower().strip(".")

    def bucket(self, scope: Scope) -> str | None:
        for name, value in scope.get("headers", []):
            if name == b"host":
                host: str = bytes(value).decode("latin-1").lower().rsplit(":", 1)[0]
                if host.endswith(self.suffix):
                    label: str = host[: -len(self.suffix)]
                    if label and "." not in label:
                        return label
                return None
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        bucket = self.bucket(scope) if scope["type"] == "http" else None
        if bucket is None:
            await self.app(scope, receive, send)
            return
        raw = scope.get("raw_path") or scope["path"].encode()
        rewritten = dict(scope)
        rewritten[SIGNED_PATH] = raw.decode("latin-1")
        rewritten["path"] = f"/s3/{bucket}{scope['path']}"
        rewritten["raw_path"] = b"/s3/" + bucket.encode() + raw
        await self.app(rewritten, receive, send)
