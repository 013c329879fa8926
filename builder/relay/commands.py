"""`driptag relay serve | status | dead-letters`.

Problems are one line each on stderr, starting `driptag:`: exit status 2 for a mistake in what was given,
1 when the machine says no (a port in use, a host that does not resolve, a folder that is missing). Secrets
are never shown.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import click

from ..errors import Failure
from .config import ConfigError, RelayConfig, load_config
from .drip_client import DripApiUrlError, check_api_url
from .service import DEFAULT_DRIP_API, DEFAULT_SPOOL, Relay, SpoolBusy
from .spool import NotASpool
from .status import NoSpool, dead_letters, format_dead_letters, format_status, purge_dead_letters, \
    retry_dead_letters, spool_status

_SPOOL_OPTION = click.option("--spool", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_SPOOL,
                             show_default=True, help="The relay's SQLite spool file.")


@click.group()
def relay() -> None:
    """Cloud mode: a server that takes Segment's HTTP Tracking API and delivers to Drip's REST API."""


@relay.command()
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="relay.json: the sources (writeKey, account, apiToken, …).")
@_SPOOL_OPTION
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8088, show_default=True, type=click.IntRange(0, 65535), help="Port to listen on.")
@click.option("--drip-api", default=DEFAULT_DRIP_API, show_default=True,
              help="Drip's REST API (http:// only to a loopback address, e.g. the emulator).")
def serve(config_path: Path, spool: Path, host: str, port: int, drip_api: str) -> None:
    """Accept Segment calls and deliver them to Drip until SIGTERM or SIGINT."""
    try:
        check_api_url(drip_api)
    except DripApiUrlError as error:
        raise Failure(f"driptag: --drip-api: {error}") from None
    config = _config(config_path)
    try:  # a host that does not resolve is the machine saying no, as a busy port is
        socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as error:
        raise OSError(error.errno, f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="driptag relay: %(message)s")
    logging.getLogger("waitress").setLevel(logging.WARNING)
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)  # "task queue depth" is normal under load
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per Drip request; the relay logs failures
    with _spool_problems(spool):
        try:
            running = Relay(config_path, spool, drip_api, config=config)
        except SpoolBusy as error:
            raise Failure(f"driptag: {error}") from None
        except OSError as error:  # its folder is missing or not writable: the machine said no (exit status 1)
            raise OSError(error.errno, f"--spool: cannot create {error.filename or spool}: "
                                       f"{error.strerror or error}") from None
    try:
        running.serve_until_signalled(host, port)
    except OSError as error:  # the address is taken, or not this machine's
        running.stop()
        # Exit status 1, as the demo's busy port: the command was right, the machine said no.
        raise OSError(error.errno, f"cannot listen on {host}:{port}: {error.strerror or error}") from None


@relay.command()
@_SPOOL_OPTION
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help="relay.json, for each source's budgets (else Drip's hourly limits are shown).")
@click.option("--json", "as_json", is_flag=True, help="JSON for machines.")
def status(spool: Path, config_path: Path | None, as_json: bool) -> None:
    """What waits, what was delivered and skipped, budgets, pauses and Drip's last error, per source."""
    config = _config(config_path, tokens=False) if config_path else None
    with _spool_problems(spool):
        report = spool_status(spool, config)
    click.echo(json.dumps(report, indent=2) if as_json else format_status(report), nl=as_json)


@relay.command(name="dead-letters")
@_SPOOL_OPTION
@click.option("--json", "as_json", is_flag=True, help="JSON for machines.")
@click.option("--retry", is_flag=True, help="Queue every dead letter again.")
@click.option("--purge", is_flag=True, help="Delete every dead letter.")
def dead_letters_command(spool: Path, as_json: bool, retry: bool, purge: bool) -> None:
    """The records Drip refused, each with Drip's error; --retry queues them again, --purge deletes them."""
    if retry and purge:
        raise click.UsageError("--retry and --purge exclude each other")
    with _spool_problems(spool):
        if retry:
            count = retry_dead_letters(spool)
            click.echo(json.dumps({"retried": count}) if as_json else f"{count} dead letter(s) queued again")
        elif purge:
            count = purge_dead_letters(spool)
            click.echo(json.dumps({"purged": count}) if as_json else f"{count} dead letter(s) deleted")
        else:
            letters = dead_letters(spool)
            click.echo(json.dumps(letters, indent=2, ensure_ascii=False) if as_json else format_dead_letters(letters),
                       nl=as_json)


@contextlib.contextmanager
def _spool_problems(spool: Path) -> Iterator[None]:
    """No file at --spool, or a file that is not a relay spool: one line, exit status 2."""
    try:
        yield
    except NoSpool as error:
        raise Failure(f"driptag: --spool: {spool}: {error.strerror}") from None
    except NotASpool as error:
        raise Failure(f"driptag: --spool: {error}") from None


def _config(path: Path, *, tokens: bool = True) -> RelayConfig:
    try:
        return load_config(path, tokens=tokens)
    except ConfigError as error:
        raise Failure(*(f"driptag: {problem}" for problem in error.problems)) from None
