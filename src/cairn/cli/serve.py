"""``cairn serve``: start the server (HTTPS with a development CA unless told otherwise)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click

from cairn.config import Settings, from_environment, redact_url
from cairn.errors import CairnError

log = logging.getLogger("cairn")


@click.command()
@click.option(
    "--data-dir",
    envvar="CAIRN_DATA_DIR",
    type=click.Path(file_okay=False),
    help="Where the embedded database, blobs, TLS files and secret key live.",
)
@click.option(
    "--listen", envvar="CAIRN_LISTEN", help="HOST:PORT to listen on [default: 127.0.0.1:8443]."
)
@click.option(
    "--public-url",
    envvar="CAIRN_PUBLIC_URL",
    help="The URL clients use [default: https://localhost:PORT].",
)
@click.option(
    "--database-url",
    envvar="CAIRN_DATABASE_URL",
    help="sqlite:///PATH or postgresql://… [default: SQLite in the data dir].",
)
@click.option(
    "--tls-cert",
    envvar="CAIRN_TLS_CERT",
    type=click.Path(dir_okay=False),
    help="PEM certificate (chain).",
)
@click.option(
    "--tls-key", envvar="CAIRN_TLS_KEY", type=click.Path(dir_okay=False), help="PEM private key."
)
@click.option(
    "--plain-http",
    envvar="CAIRN_PLAIN_HTTP",
    is_flag=True,
    help="Serve plain HTTP (TLS ends at a proxy).",
)
@click.option(
    "--blob-store",
    envvar="CAIRN_BLOB_STORE",
    type=click.Choice(["filesystem", "database", "s3"]),
    help="Where state bytes live [default: filesystem]; s3 needs CAIRN_S3_BUCKET.",
)
def serve(
    data_dir: str | None,
    listen: str | None,
    public_url: str | None,
    database_url: str | None,
    tls_cert: str | None,
    tls_key: str | None,
    plain_http: bool,
    blob_store: str | None,
) -> None:
    """Start cairn."""
    import uvicorn

    from cairn import datadir, logs
    from cairn.app import build_services, create_app
    from cairn.tfeapi.timeouts import header_timeout_protocol
    from cairn.tls import ensure_dev_tls

    # Nothing cairn creates is meant for other accounts (the database, its WAL, blobs, keys).
    os.umask(0o077)
    try:
        settings = from_environment(
            data_dir=data_dir,
            listen=listen,
            public_url=public_url,
            database_url=database_url,
            tls_cert=tls_cert,
            tls_key=tls_key,
            plain_http=plain_http,
            blob_store=blob_store,
        )
        logs.configure(settings.log_level, fmt=settings.log_format)
        datadir.prepare(settings.data_dir, settings.database_url)
        # Held until the process ends (the kernel releases it, even after kill -9).
        held = datadir.lock(settings.data_dir, settings.database_url)
        startup = build_services(settings)
    except CairnError as exc:  # configuration, or stored data that cannot be opened
        click.secho(f"cairn cannot start: {exc}", fg="red", err=True)
        sys.exit(2)

    ssl: dict[str, str] = {}
    bundle: Path | None = None
    if not settings.plain_http:
        if settings.tls_cert and settings.tls_key:
            ssl = {"ssl_certfile": str(settings.tls_cert), "ssl_keyfile": str(settings.tls_key)}
        else:
            host = urlsplit(settings.public_url).hostname or "localhost"
            names = list(dict.fromkeys([host, "localhost", "127.0.0.1", "::1"]))
            dev = ensure_dev_tls(settings.tls_dir, names)
            ssl = {"ssl_certfile": str(dev.cert), "ssl_keyfile": str(dev.key)}
            bundle = dev.bundle

    _banner(settings, bundle, startup.bootstrap_token, startup.created_secret)
    app = create_app(startup.services)
    config = uvicorn.Config(
        app,
        host=settings.listen_host,
        port=settings.listen_port,
        log_config=None,
        access_log=False,  # cairn logs requests itself (tfeapi.observe)
        # X-Forwarded-For/-Proto only from CAIRN_TRUSTED_PROXIES (uvicorn would otherwise
        # believe whatever 127.0.0.1 says, and FORWARDED_ALLOW_IPS from the environment).
        proxy_headers=bool(settings.trusted_proxies),
        forwarded_allow_ips=list(settings.trusted_proxies),
        http=header_timeout_protocol(settings.header_timeout.total_seconds()),
        server_header=False,
        timeout_graceful_shutdown=20,
        **ssl,  # type: ignore[arg-type]
    )
    _GracefulServer(
        config,
        _worker_pool(settings, startup.services, bundle),
        closing=startup.services.jobs.signal.close,
    ).run()
    startup.services.audited.close()  # normally done by the app's shutdown already
    startup.services.db.dispose()
    held.release()


def _worker_pool(
    settings: Settings, services: Any, bundle: Path | None
) -> Callable[[], Any] | None:
    """What makes the in-process workers (``CAIRN_WORKERS``, default 1; 0: none): agents of
    the server's own pool, speaking the agent protocol to this server over HTTP like ``cairn
    agent``. A function, called once the sockets listen: readiness does not wait for the
    executor's imports (its HTTP client among them, ~50 ms; ``bench/startup.py``)."""
    if settings.workers <= 0:
        return None

    def make() -> Any:
        from cairn import __version__
        from cairn.executor.job import ExecutorSettings
        from cairn.executor.worker import WorkerPool

        return WorkerPool(
            settings.workers,
            settings.public_url,
            services.agents.builtin_secret,
            ca_file=bundle,  # the dev CA bundle; None with --tls-cert or plain HTTP
            settings=ExecutorSettings(
                terraform_path=settings.terraform_path,
                tf_cli_config=settings.run_tf_cli_config,
                ca_file=bundle,  # Terraform trusts the dev CA too (SSL_CERT_FILE)
            ),
            name="cairn-builtin",
            version=__version__,
        )

    return make


def _graceful_server_class() -> type:
    import uvicorn

    class GracefulServer(uvicorn.Server):
        """uvicorn, but a SIGTERM/SIGINT that ended in a clean shutdown exits with status 0
        (uvicorn re-raises the signal, which supervisors and scripts read as a crash).

        The in-process worker pool is made (off the event loop: requests are answered
        meanwhile) and started once the sockets listen (its first request is a registration
        with this server), and stops before they close, so that a running job can
        still send its last log chunk and finish: idle workers stop within ~2 s, a job gets
        30 s, then Terraform is killed."""

        def __init__(
            self,
            config: Any,
            make_pool: Callable[[], Any] | None = None,
            closing: Callable[[], None] | None = None,
        ) -> None:
            super().__init__(config)
            self.make_pool = make_pool
            self.pool: Any = None
            self.closing = closing  # ends the agents' claim long-polls at once

        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            if self.make_pool is not None and not self.should_exit:
                pool = await asyncio.to_thread(self.make_pool)
                if not self.should_exit:  # a signal while it was made: never started
                    self.pool = pool
                    pool.start()

        async def shutdown(self, sockets: Any = None) -> None:
            if self.closing is not None:
                self.closing()
            stopped = self.pool is None or await asyncio.to_thread(self.pool.stop, timeout=30.0)
            if not stopped:
                await asyncio.to_thread(self.pool.stop, kill=True, timeout=15.0)
            await super().shutdown(sockets)

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            sigs = (signal.SIGINT, signal.SIGTERM)
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in sigs}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    return GracefulServer


def _GracefulServer(
    config: object,
    make_pool: Callable[[], Any] | None = None,
    closing: Callable[[], None] | None = None,
) -> Any:
    return _graceful_server_class()(config, make_pool, closing)


def _banner(
    settings: Settings, bundle: Path | None, token: str | None, created_secret: bool
) -> None:
    host = urlsplit(settings.public_url).netloc
    out = sys.stdout
    w = out.write
    w(f"\ncairn is serving {settings.public_url}\n")
    w(
        f"  data dir:  {settings.data_dir}\n  database:  {redact_url(settings.database_url)}\n"
        f"  blobs:     {settings.blob_store}\n"
    )
    if settings.blob_store == "s3":
        endpoint = f" at {settings.s3_endpoint}" if settings.s3_endpoint else ""
        w(f"             s3://{settings.s3_bucket}/{settings.s3_prefix}{endpoint}\n")
    if created_secret:
        w(
            f"  generated a secret key in {settings.data_dir / 'secret.key'}\n"
            "  (keep it with the data; set CAIRN_SECRET_KEY to manage it yourself)\n"
        )
    if bundle is not None:
        w(
            "\nTLS uses a development CA made for this data dir. Trust it in your shell with:\n"
            f"  export SSL_CERT_FILE={bundle}\n"
        )
    if token:
        w(
            "\nThe built-in admin's API token (shown once; CAIRN_ADMIN_TOKEN sets your own):\n"
            f"  {token}\n"
        )
    w(_next_steps(settings, bundle, token))
    w(
        "\nTerraform CLI credentials (~/.terraform.d/credentials.tfrc.json):\n"
        f'  {{"credentials": {{"{host}": {{"token": "<admin token>"}}}}}}\n'
    )
    w(
        "\nTerraform configuration:\n"
        '  terraform {\n    backend "remote" {\n'
        f'      hostname     = "{host}"\n      organization = "<your organization>"\n'
        '      workspaces { name = "<workspace>" }\n    }\n  }\n\n'
    )
    out.flush()


def _next_steps(settings: Settings, bundle: Path | None, token: str | None) -> str:
    """The commands a newcomer types next, in another shell, ready to paste."""
    import shutil

    host = urlsplit(settings.public_url).netloc
    exe = sys.argv[0] if sys.argv and sys.argv[0].endswith("cairn") else "cairn"
    found = shutil.which("cairn")
    cairn = "cairn" if found and Path(found).resolve() == Path(exe).resolve() else exe
    lines = ["", "Next steps, in another shell:"]
    if bundle is not None:
        lines.append(f"  export SSL_CERT_FILE={bundle}")
    if settings.public_url != "https://localhost:8443":
        lines.append(f"  export CAIRN_URL={settings.public_url}")
    if token:
        lines.append(f"  export CAIRN_TOKEN={token}")
    else:
        lines.append(
            "  export CAIRN_TOKEN=<your token>   # the admin's was printed at the first start"
        )
    lines += [
        f"  {cairn} org create my-org",
        f"  {cairn} workspace create my-org/my-workspace",
        f"  terraform login {host}   # stores a token for Terraform (and for {cairn})",
        "",
    ]
    return "\n".join(lines)
