"""The HTTP client behind the CLI's client commands (``cairn keys``, ``cairn id-token``).

It talks to a running cairn over HTTPS the way any API client does: a bearer token, TLS
verified against a CA the user trusts. Every failure becomes a ``CliError``: one line, printed
in red on stderr, exit status 1, and never containing the token.

Where TLS trust comes from, first match wins:

1. ``SSL_CERT_FILE``, the variable ``cairn serve`` tells users to export (Go and OpenSSL honour
   it too, so Terraform and the CLI trust the same CAs);
2. the development CA bundle ``<data-dir>/tls/ca-bundle.pem`` (system CAs plus cairn's dev CA)
   of ``--data-dir`` / ``CAIRN_DATA_DIR``, or else of the default data dir and of
   ``./.cairn-data`` (what ``make serve`` uses): every one that exists is trusted;
3. the system's CAs.

A data dir named explicitly adds its bundle even when ``SSL_CERT_FILE`` is set, since many
machines set that variable globally to the system bundle.

Where the token comes from, first match wins: ``--token``, ``CAIRN_TOKEN``, then the token
``terraform login`` stored for the server's host (``~/.terraform.d/credentials.tfrc.json``), so
a user who logged Terraform in needs nothing more.
"""

from __future__ import annotations

import hashlib
import json
import os
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar, cast
from urllib.parse import urlsplit

import click

from cairn import __version__
from cairn.config import default_data_dir

if TYPE_CHECKING:  # httpx is imported when a client is made: `cairn serve` starts faster
    import httpx

DEFAULT_URL = "https://localhost:8443"
JSONAPI = "application/vnd.api+json"
TIMEOUT_SECONDS = 30.0
MAKE_SERVE_DATA_DIR = Path(".cairn-data")

F = TypeVar("F", bound=Callable[..., Any])
JSONObject = dict[str, Any]


class CliError(click.ClickException):
    """A failure the user can act on: shown as one red ``error: …`` line on stderr, exit 1."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))

    def show(self, file: Any = None) -> None:
        click.secho(f"error: {self.format_message()}", fg="red", err=True)


class ApiFailure(CliError):
    """cairn answered with an error status; ``status`` is the HTTP status code."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


# -- options shared by every client command ------------------------------------------------------


def connection_options(f: F) -> F:
    """Add ``--url``, ``--token`` and ``--data-dir`` (with their environment variables)."""
    f = click.option(
        "--data-dir",
        envvar="CAIRN_DATA_DIR",
        show_envvar=True,
        type=click.Path(file_okay=False),
        help="cairn's data dir, whose development CA to trust "
        "[default: the default data dir and ./.cairn-data].",
    )(f)
    f = click.option(
        "--token",
        envvar="CAIRN_TOKEN",
        show_envvar=True,
        help="API token (prefer the CAIRN_TOKEN variable: options show up in `ps`).",
    )(f)
    f = click.option(
        "--url",
        envvar="CAIRN_URL",
        show_envvar=True,
        default=DEFAULT_URL,
        show_default=True,
        help="Base URL of the cairn server.",
    )(f)
    return f


@dataclass(frozen=True)
class Trust:
    """How the client verifies the server's certificate, and how to say so in an error."""

    verify: ssl.SSLContext | bool
    description: str
    # Development CA bundles that exist but were not trusted (SSL_CERT_FILE took precedence).
    unused: tuple[Path, ...] = ()


@dataclass(frozen=True)
class Connection:
    """Where cairn is and how to authenticate to it. The token never appears in a repr."""

    url: str
    token: str = field(repr=False)
    trust: Trust

    @classmethod
    def from_options(
        cls,
        url: str | None,
        token: str | None,
        data_dir: str | None,
        environ: Mapping[str, str] | None = None,
    ) -> Connection:
        """Validate the options; raise CliError with what to do when one is missing or bad."""
        environ = os.environ if environ is None else environ
        base = (url or DEFAULT_URL).strip().rstrip("/")
        parts = urlsplit(base)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise CliError(
                f"--url / CAIRN_URL must be an http(s) URL like {DEFAULT_URL}, not {base!r}"
            )
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise CliError(f"--url / CAIRN_URL must be the server's root URL, like {DEFAULT_URL}")
        if not (token or "").strip():
            token = terraform_credentials(parts.netloc, environ)
        return cls(url=base, token=_check_token(token), trust=resolve_trust(data_dir, environ))


# A credentials file is a few entries; anything larger is not one.
MAX_CREDENTIALS_BYTES = 1024 * 1024


def terraform_credentials(host: str, environ: Mapping[str, str]) -> str | None:
    """The token ``terraform login`` stored for ``host`` (``localhost:8443``), or None.

    An unreadable or malformed file is named in the error, never silently skipped."""
    home = environ.get("HOME") or str(Path.home())
    path = Path(home) / ".terraform.d" / "credentials.tfrc.json"
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_CREDENTIALS_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from None
    if len(raw) > MAX_CREDENTIALS_BYTES:
        raise CliError(f"{path} is larger than 1 MiB; it is not a Terraform credentials file")
    try:
        doc = json.loads(raw)
    except ValueError:
        raise CliError(
            f"{path} is not valid JSON; fix it or run `terraform login {host}` again"
        ) from None
    creds = doc.get("credentials") if isinstance(doc, dict) else None
    if not isinstance(creds, dict):
        return None
    wanted = host.lower()
    for name, entry in creds.items():
        if str(name).lower() == wanted and isinstance(entry, dict):
            value = entry.get("token")
            return value if isinstance(value, str) else None
    return None


def _check_token(token: str | None) -> str:
    value = (token or "").strip()
    if not value:
        raise CliError(
            "an API token is required: set CAIRN_TOKEN (or pass --token), or run `terraform "
            "login HOST` for this server. `cairn serve` prints the built-in admin's token at its "
            "first start (CAIRN_ADMIN_TOKEN on the server sets your own)."
        )
    if not value.isprintable() or any(c.isspace() for c in value) or not value.isascii():
        # Never echo it: a malformed token is still likely a real secret.
        raise CliError("the API token contains spaces or control characters; copy it again")
    return value


def resolve_trust(data_dir: str | None, environ: Mapping[str, str]) -> Trust:
    """Pick the CA certificates to trust (see the module docstring for the order)."""
    explicit = [Path(data_dir).expanduser()] if data_dir else []
    cert_file = environ.get("SSL_CERT_FILE")
    if cert_file:
        if not Path(cert_file).is_file():
            raise CliError(f"SSL_CERT_FILE names {cert_file}, which is not a file")
        # Many machines set SSL_CERT_FILE to the system bundle globally; a data dir named
        # explicitly still adds its development CA rather than being silently ignored.
        bundles = _bundles(explicit)
        unused = [] if explicit else _bundles([default_data_dir(), MAKE_SERVE_DATA_DIR])
        return Trust(
            _context([Path(cert_file), *bundles]),
            " and ".join([f"SSL_CERT_FILE ({cert_file})", *map(str, bundles)]),
            unused=tuple(unused),
        )
    bundles = _bundles(explicit or [default_data_dir(), MAKE_SERVE_DATA_DIR])
    if bundles:
        return Trust(_context(bundles), "the CA bundle " + " and ".join(map(str, bundles)))
    return Trust(ssl.create_default_context(), "the system's CA certificates")


def _bundles(data_dirs: list[Path]) -> list[Path]:
    """The development CA bundles that exist in ``data_dirs``, without duplicates."""
    found: list[Path] = []
    for d in data_dirs:
        bundle = (d / "tls" / "ca-bundle.pem").resolve()
        if bundle.is_file() and bundle not in found:
            found.append(bundle)
    return found


def _context(cafiles: list[Path]) -> ssl.SSLContext:
    try:
        ctx = ssl.create_default_context(cafile=str(cafiles[0]))
        for extra in cafiles[1:]:
            ctx.load_verify_locations(cafile=str(extra))
    except (ssl.SSLError, OSError) as exc:
        raise CliError(f"cannot load CA certificates from {cafiles[0]}: {exc}") from None
    return ctx


# -- the client ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Download:
    """What ``CairnClient.download`` wrote: its size and MD5 (hex)."""

    size: int
    md5: str


class CairnClient:
    """JSON over HTTPS to one cairn server. Use as a context manager.

    ``transport`` lets tests substitute ``httpx.MockTransport``."""

    def __init__(self, conn: Connection, *, transport: httpx.BaseTransport | None = None) -> None:
        import httpx

        self._conn = conn
        self._http = httpx.Client(
            base_url=conn.url,
            verify=conn.trust.verify,
            timeout=TIMEOUT_SECONDS,
            transport=transport,
            headers={
                "Authorization": f"Bearer {conn.token}",
                "User-Agent": f"cairn-cli/{__version__}",
            },
        )

    def __enter__(self) -> CairnClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    @property
    def url(self) -> str:
        return self._conn.url

    def get(self, path: str, *, doing: str, jsonapi: bool = False) -> JSONObject:
        """GET ``path``; the decoded JSON object. ``doing`` names the action for errors."""
        return self._request("GET", path, doing=doing, jsonapi=jsonapi)

    def post(
        self, path: str, body: JSONObject | None = None, *, doing: str, jsonapi: bool = False
    ) -> JSONObject:
        """POST ``body`` as JSON to ``path``; the decoded JSON object of the answer."""
        return self._request("POST", path, body=body, doing=doing, jsonapi=jsonapi)

    def delete(
        self, path: str, body: JSONObject | None = None, *, doing: str, jsonapi: bool = False
    ) -> None:
        """DELETE ``path`` (with a body for relationship endpoints); any 2xx is success."""
        self._request("DELETE", path, body=body, doing=doing, jsonapi=jsonapi)

    def patch(
        self, path: str, body: JSONObject | None = None, *, doing: str, jsonapi: bool = False
    ) -> JSONObject:
        """PATCH ``body`` as JSON to ``path``; the decoded JSON object of the answer."""
        return self._request("PATCH", path, body=body, doing=doing, jsonapi=jsonapi)

    def download(
        self,
        path: str,
        sink: BinaryIO,
        *,
        doing: str,
        on_progress: Callable[[int, int | None], None] | None = None,
    ) -> Download:
        """GET ``path`` and write the body to ``sink`` as it arrives (never whole in memory).
        ``on_progress(received, total)`` is called after each chunk (total: Content-Length)."""
        import httpx

        md5 = hashlib.md5(usedforsecurity=False)
        received = 0
        try:
            with self._http.stream("GET", path, headers={"Accept": "*/*"}) as response:
                if response.is_error:
                    response.read()
                    raise ApiFailure(
                        f"cannot {doing}: {self._redact(describe_error(response))}",
                        response.status_code,
                    )
                length = response.headers.get("content-length")
                total = int(length) if length and length.isdigit() else None
                for chunk in response.iter_bytes(1024 * 1024):
                    sink.write(chunk)
                    md5.update(chunk)
                    received += len(chunk)
                    if on_progress is not None:
                        on_progress(received, total)
        except httpx.TimeoutException:
            raise CliError(
                f"cannot {doing}: {self.url} stopped answering for {TIMEOUT_SECONDS:.0f}s "
                f"after {received} bytes; try again"
            ) from None
        except httpx.TransportError as exc:
            raise CliError(f"cannot {doing}: {self._transport_hint(exc)}") from None
        if total is not None and received != total:
            raise CliError(
                f"cannot {doing}: the server sent {received} of {total} bytes; try again"
            )
        return Download(received, md5.hexdigest())

    def _request(
        self,
        method: str,
        path: str,
        *,
        doing: str,
        body: JSONObject | None = None,
        jsonapi: bool = False,
    ) -> JSONObject:
        import httpx

        media = JSONAPI if jsonapi else "application/json"
        headers = {"Accept": media}
        if body is not None:
            headers["Content-Type"] = media
        try:
            response = self._http.request(method, path, json=body, headers=headers)
        except httpx.TimeoutException:
            raise CliError(
                f"cannot {doing}: {self.url} did not answer within {TIMEOUT_SECONDS:.0f}s; "
                "is the server overloaded or the URL wrong?"
            ) from None
        except httpx.TransportError as exc:
            raise CliError(f"cannot {doing}: {self._transport_hint(exc)}") from None
        if response.is_error:
            raise ApiFailure(
                f"cannot {doing}: {self._redact(describe_error(response))}", response.status_code
            )
        if response.status_code == 204:
            return {}
        try:
            data = response.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise CliError(
                f"cannot {doing}: {self.url} answered {response.status_code} with something "
                "that is not a JSON object; is --url pointing at cairn?"
            )
        return cast(JSONObject, data)

    def _transport_hint(self, exc: httpx.TransportError) -> str:
        import httpx

        reason = self._redact(_root_reason(exc))
        verify_failed = _caused_by(exc, ssl.SSLCertVerificationError)
        if verify_failed or "CERTIFICATE_VERIFY_FAILED" in reason:
            trust = self._conn.trust
            bundle = str(trust.unused[0]) if trust.unused else "<data-dir>/tls/ca-bundle.pem"
            return (
                f"the TLS certificate of {self.url} is not trusted ({reason}; trusting "
                f"{trust.description}). If cairn uses its development CA, run "
                f"`export SSL_CERT_FILE={bundle}` (cairn serve prints the path) or pass "
                "--data-dir / set CAIRN_DATA_DIR to the server's data dir"
            )
        if "WRONG_VERSION_NUMBER" in reason or "record layer failure" in reason:
            plain = self.url.replace("https://", "http://", 1)
            return (
                f"TLS handshake with {self.url} failed ({reason}); if cairn serves plain HTTP "
                f"there, use --url {plain}"
            )
        if self.url.startswith("http://") and isinstance(exc, httpx.RemoteProtocolError):
            secure = self.url.replace("http://", "https://", 1)
            return (
                f"{self.url} closed the connection ({reason}); cairn serves HTTPS unless started "
                f"with --plain-http: try --url {secure}"
            )
        return (
            f"cannot connect to {self.url} ({reason}). Is cairn running there? Start it with "
            "`cairn serve`, or point --url / CAIRN_URL at the right server"
        )

    def _redact(self, text: str) -> str:
        return text.replace(self._conn.token, "***")


def describe_error(response: httpx.Response) -> str:
    """One line for an error response: the JSON:API ``errors`` (``Title (status): detail``
    each), or the status line and a short excerpt of any other body."""
    try:
        doc = response.json()
    except ValueError:
        doc = None
    errors = doc.get("errors") if isinstance(doc, dict) else None
    parts: list[str] = []
    if isinstance(errors, list):
        for err in errors:
            if not isinstance(err, dict):
                continue
            status = str(err.get("status") or response.status_code)
            title = str(err.get("title") or response.reason_phrase or "error")
            detail = err.get("detail")
            parts.append(f"{title} ({status}): {detail}" if detail else f"{title} ({status})")
    if not parts:
        text = " ".join(response.text.split())[:200]
        parts.append(
            f"{response.request.method} {response.request.url.path} answered "
            f"{response.status_code} {response.reason_phrase}" + (f": {text}" if text else "")
        )
    line = "; ".join(parts)
    if response.status_code == 401:
        line += " (check CAIRN_TOKEN / --token)"
    return " ".join(line.split())


def _root_reason(exc: BaseException) -> str:
    """The innermost cause's message (httpx wraps httpcore wraps ssl/OSError)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    reason = str(exc) or type(exc).__name__
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if str(current):
            reason = str(current)
        current = current.__cause__ or current.__context__
    return reason


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def open_client(url: str | None, token: str | None, data_dir: str | None) -> CairnClient:
    """A client for the values of ``connection_options``."""
    return CairnClient(Connection.from_options(url, token, data_dir))
