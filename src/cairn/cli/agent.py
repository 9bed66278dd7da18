"""``cairn agent``: run plans and applies for an agent pool, on this machine.

The agent connects out to cairn (``--url``) with a pool's agent token, claims jobs one at a
time and runs Terraform for them (``cairn.executor``). Ctrl-C (or SIGTERM) once: finish the
current job, deregister, exit. Twice: kill Terraform, the job errors, exit.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any

import click

from cairn import __version__

log = logging.getLogger("cairn.executor")

PHASES = ("plan", "apply")


def _accept(value: str) -> tuple[str, ...]:
    phases = tuple(p.strip() for p in value.split(",") if p.strip())
    bad = [p for p in phases if p not in PHASES]
    if not phases or bad:
        raise click.BadParameter(
            f"give a comma list of {', '.join(PHASES)}, not {value!r}", param_hint="--accept"
        )
    return phases


@click.command()
@click.option(
    "--url", envvar="CAIRN_URL", show_envvar=True, required=True, help="Base URL of cairn."
)
@click.option(
    "--token",
    envvar="CAIRN_AGENT_TOKEN",
    show_envvar=True,
    required=True,
    help="The pool's agent token (prefer the variable: options show up in `ps`).",
)
@click.option("--name", default=None, help="Name shown in the pool [default: this host's name].")
@click.option(
    "--ca-file",
    envvar="CAIRN_AGENT_CA_FILE",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="PEM bundle to verify cairn's certificate with; Terraform trusts it too "
    "[default: the system's CAs].",
)
@click.option("--single", is_flag=True, help="Run one job, then exit.")
@click.option(
    "--accept",
    default="plan,apply",
    show_default=True,
    help="Which phases this agent runs (comma list).",
)
@click.option(
    "--terraform-path",
    envvar="CAIRN_TERRAFORM_PATH",
    show_envvar=True,
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="Directory holding terraform-<version> or terraform [default: PATH].",
)
@click.option(
    "--tf-cli-config",
    envvar="CAIRN_RUN_TF_CLI_CONFIG",
    show_envvar=True,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="A Terraform CLI configuration given to every run (e.g. a provider mirror).",
)
@click.option(
    "--log-level",
    envvar="CAIRN_LOG_LEVEL",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
)
@click.option(
    "--log-format",
    envvar="CAIRN_LOG_FORMAT",
    default="auto",
    show_default=True,
    type=click.Choice(["auto", "json", "text"], case_sensitive=False),
    help="Structured logs on stderr (auto: text on a terminal, JSON lines otherwise).",
)
def agent(
    url: str,
    token: str,
    name: str | None,
    ca_file: Path | None,
    single: bool,
    accept: str,
    terraform_path: Path | None,
    tf_cli_config: Path | None,
    log_level: str,
    log_format: str,
) -> None:
    """Run Terraform for cairn: claim plans and applies of a pool's workspaces, one at a time."""
    from rich.console import Console

    from cairn import logs
    from cairn.executor.job import ExecutorSettings
    from cairn.executor.protocol import AgentClient
    from cairn.executor.worker import Worker

    phases = _accept(accept)
    if not url.startswith(("https://", "http://")):
        raise click.BadParameter(
            "must be an http(s) URL such as https://cairn.example.com", param_hint="--url"
        )
    logs.configure(log_level, fmt=log_format)
    console = Console(stderr=True, highlight=False)
    name = name or socket.gethostname()

    def events(kind: str, fields: dict[str, Any]) -> None:
        stamp = datetime.now().strftime("%H:%M:%S")  # local time, for a person
        line = _describe(kind, fields)
        if line:
            console.print(f"[dim]{stamp}[/dim] {line}")

    client = AgentClient(url, token, name=name, version=__version__, accept=phases, ca_file=ca_file)
    settings = ExecutorSettings(
        terraform_path=terraform_path, tf_cli_config=tf_cli_config, ca_file=ca_file
    )
    worker = Worker(client, settings, single=single, events=events)
    signals = {"count": 0}

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        signals["count"] += 1
        if signals["count"] == 1:
            console.print(
                "[yellow]stopping:[/yellow] the current job runs to its end, then the agent "
                "deregisters (signal again to stop now)"
            )
            worker.stop()
        else:
            console.print("[red]stopping now:[/red] Terraform is killed, the job errors")
            worker.stop(kill=True)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    console.print(f"cairn agent [bold]{name}[/bold] for {url} (runs {', '.join(phases)})")
    thread = threading.Thread(target=worker.run, name="cairn-agent", daemon=True)
    thread.start()
    try:
        while thread.is_alive():
            thread.join(0.5)
            if signals["count"] >= 1 and not worker.busy:
                # Idle in a long-poll: do not wait it out; deregister and leave. (A job the
                # claim hands out meanwhile is never started, and the server queues it again.)
                break
    finally:
        if thread.is_alive() and client.registration is not None:
            try:
                client.deregister()
            except Exception:  # leaving anyway; the server marks it lost
                log.warning("deregister failed on exit")
        client.close()
        # Only now: a signal during the cleanup above must not kill the agent mid-way.
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if worker.failure:
        raise click.ClickException(f"cairn refused the agent: {worker.failure}")
    stats = worker.stats
    console.print(
        f"agent stopped: {stats.jobs} job(s), {stats.finished} finished, "
        f"{stats.errored} errored, {stats.canceled} canceled, {stats.dropped} dropped"
    )


def _describe(kind: str, f: dict[str, Any]) -> str:
    if kind == "registered":
        return f"[green]registered[/green] as {f['agent_id']}; waiting for jobs"
    if kind == "claimed":
        return f"[cyan]{f['phase']}[/cyan] {f['run_id']} in {f['workspace']}"
    if kind == "finished":
        counts = f"+{f['additions']} ~{f['changes']} -{f['destructions']}"
        if f["status"] == "finished":
            return f"[green]finished[/green] {f['phase']} {f['run_id']} ({counts})"
        if f["status"] == "canceled":
            return f"[yellow]canceled[/yellow] {f['phase']} {f['run_id']}"
        return f"[red]errored[/red] {f['phase']} {f['run_id']}: {_plain(f['error'])}"
    if kind == "dropped":
        return f"[yellow]dropped[/yellow] {f['phase']} {f['run_id']} (taken from this agent)"
    if kind == "unreachable":
        return f"[yellow]cairn unreachable[/yellow]: {_plain(f['failure'])}; retrying"
    if kind in ("refused", "claim-failed"):
        return f"[red]refused[/red]: {_plain(f['failure'])}"
    if kind == "deregistered":
        return "deregistered"
    return ""


def _plain(text: str) -> str:
    from rich.markup import escape

    return escape(str(text))
