"""The `driptag` command (SPEC §2.2).

Exit status: 0 success; 2 invalid usage or settings (one line on stderr per problem, naming the
setting, no traceback); 1 anything unexpected. Without -o the output goes to stdout and nothing else
does.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Any

import click

from .loader.batch import build_batch
from .errors import Failure
from .files import write_atomically
from .loader.render import FORMATS, build_manifest, check_nonce, render
from .loader.settings import Settings, SettingsError, python_names
from .version import __version__

API_TOKEN_WARNING = ("driptag: warning: the API token is a server-side secret; "
                     "it is ignored and not written into the browser output")


def _settings_options(command):
    """The flags of every setting of §1 (each overrides the same setting from --settings)."""
    options = [
        click.option("--account", help="Drip account ID: 7 to 9 digits, like 83702741 (required)."),
        click.option("--campaign-id", "campaign_id", help="Subscribe every identified user to this campaign."),
        click.option("--api-token", "api_token", help="Server-side secret: never written into browser output."),
        click.option("--script-origin", "script_origin", help="Where track.js comes from [https://tag.getdrip.com]."),
        click.option("--global", "global_name", help="Name of the analytics.js-style object [analytics]."),
        click.option("--keys", "key_style", metavar="segment|snake", help="Key style [segment]."),
        click.option("--consent", metavar="auto|required", help="Load at once, or after consent [auto]."),
        click.option("--callback-timeout", "callback_timeout_ms",  # validated by Settings, like the others
                     help="Milliseconds before a callback runs without Drip's answer [300]."),
        click.option("--debug/--no-debug", "debug", default=None, help="Log every bridged call with console.debug."),
        click.option("--preload/--no-preload", "preload", default=None,
                     help="html: a <link rel=preload> for track.js before the <script> [preload]."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="driptag", message="%(prog)s %(version)s")
def cli() -> None:
    """driptag: generate the browser integration that puts Drip on a web site."""


@cli.command()
@_settings_options
@click.option("--settings", "settings_file", type=click.Path(dir_okay=False, path_type=Path),
              help="A JSON settings file (Segment's keys: account, campaignId, …).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="js", show_default=True,
              help="js: an external script; html: the loader inline in a <script> element.")
@click.option("--no-minify", is_flag=True, help="Readable output instead of minified.")
@click.option("--nonce", help="CSP nonce for the html format's <link> and <script> elements.")
@click.option("--manifest", type=click.Path(dir_okay=False, path_type=Path),
              help="Write sizes and hashes (SRI integrity or CSP hash) as JSON to this file.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the output to this file (atomically) instead of stdout.")
@click.option("--batch", type=click.Path(dir_okay=False, path_type=Path),
              help="A CSV of settings (header: JSON keys); one output file per row.")
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path),
              help="With --batch: the folder for {account}.{js|html}.")
def build(settings_file: Path | None, fmt: str, no_minify: bool, nonce: str | None, manifest: Path | None,
          output: Path | None, batch: Path | None, out_dir: Path | None, **flags: Any) -> None:
    """Build the loader for one account, or for every row of a CSV (--batch)."""
    if nonce is not None and fmt == "js":
        raise click.UsageError("--nonce belongs to --format html; for js put the nonce on the page's <script src> tag")
    if batch and output:
        raise click.UsageError("--batch writes into --out-dir; -o is for one account")
    if bool(batch) != bool(out_dir):
        raise click.UsageError("--batch and --out-dir go together")
    try:
        check_nonce(nonce)
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    given = {name: value for name, value in flags.items() if value is not None}
    base = _read_settings_file(settings_file) if settings_file else {}
    values = {**base, **given}
    warned = []

    def warn_api_token() -> None:  # once per run, whether the token came from a flag, a file or a CSV
        if not warned:
            click.echo(API_TOKEN_WARNING, err=True)
            warned.append(True)

    if batch:
        return _build_batch(batch, out_dir, fmt, values, not no_minify, nonce, manifest, warn_api_token)

    try:
        settings = Settings.from_mapping({}, **values)
    except SettingsError as error:
        raise Failure(*(f"driptag: {problem.line('cli')}" for problem in error.problems)) from None
    if settings.api_token:  # validated like any setting, then ignored: render never places it
        warn_api_token()
    code = render(settings, fmt, minify=not no_minify, nonce=nonce)
    if manifest:  # first: if it cannot be written, the output (an existing -o file) is left as it was
        _write_json(manifest, build_manifest(settings, fmt, minify=not no_minify, nonce=nonce))
    if output:
        write_atomically(output, code.encode("utf-8"))
    else:
        click.echo(code, nl=False)


def _build_batch(batch: Path, out_dir: Path, fmt: str, base: dict[str, Any], minify: bool,
                 nonce: str | None, manifest: Path | None, warn_api_token) -> None:
    if not batch.is_file():
        raise click.UsageError(f"--batch: {batch} is not a file")

    def progress(rows):
        if not sys.stderr.isatty():
            yield from rows
            return
        with open(batch, "rb") as stream:
            length = max(sum(1 for _ in stream) - 1, 0)  # data lines, for the bar (multi-line cells are rare)
        with click.progressbar(rows, length=length, label="driptag", file=sys.stderr, show_pos=True) as bar:
            yield from bar

    try:
        result = build_batch(batch, out_dir, fmt, base=base, minify=minify, nonce=nonce,
                             manifests=manifest is not None, note=_note, progress=progress,
                             on_api_token=warn_api_token)
    except SettingsError as error:
        raise Failure(*(f"{batch}:1: {problem.line('json')}" for problem in error.problems)) from None
    except (UnicodeDecodeError, ValueError) as error:
        raise Failure(f"{batch}: not a readable UTF-8 CSV file ({error.__class__.__name__})") from None
    if manifest:
        _write_json(manifest, result.manifests)
    if result.problems:
        raise Failure(*result.problems, f"driptag: {len(result.written)} written, "
                                        f"{len(result.problems)} problem(s); invalid rows were skipped")


def _read_settings_file(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise Failure(f"driptag: --settings: cannot read {path}: {error.strerror}") from None
    except (ValueError, UnicodeDecodeError) as error:
        raise Failure(f"driptag: --settings: {path} is not valid JSON ({error})") from None
    try:
        return python_names(data, note=_note)
    except SettingsError as error:
        raise Failure(*(f"driptag: {path}: {problem.line('json')}" for problem in error.problems)) from None


def _write_json(path: Path, data: Any) -> None:
    write_atomically(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode("utf-8"))


def _note(message: str) -> None:
    click.echo(f"driptag: note: {message}", err=True)


@cli.command()
@click.option("--account", default="83702741", show_default=True, help="Drip account ID.")
@click.option("--campaign-id", "campaign_id", default=None, help="Campaign to subscribe identified users to.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=int)
@click.option("--drip", type=click.Choice(["emulator", "real"]), default="emulator", show_default=True,
              help="emulator: offline stand-in for Drip; real: https://tag.getdrip.com for a real account.")
def demo(account: str, campaign_id: str | None, host: str, port: int, drip: str) -> None:
    """Run the QA demo site (never with the Flask debugger)."""
    from .web.demo import run_demo

    try:
        run_demo(account=account, campaign_id=campaign_id, host=host, port=port, drip=drip)
    except SettingsError as error:
        raise Failure(*(f"driptag: {problem.line('cli')}" for problem in error.problems)) from None
    except ValueError as error:  # a host the emulator cannot be reached from
        raise Failure(f"driptag: {error}") from None


def _one_line(message: str, limit: int = 300) -> str:
    """click's own messages quote the offending value: keep them on one short line."""
    text = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in message[:limit])
    return text if len(message) <= limit else text + "…"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `driptag` console script."""
    warnings.simplefilter("ignore")  # the CLI prints its own warnings
    try:
        status = cli.main(args=argv, prog_name="driptag", standalone_mode=False)
        return status if isinstance(status, int) else 0
    except Failure as failure:
        for line in failure.lines:
            click.echo(line, err=True)
        return 2
    except click.UsageError as error:
        command = error.ctx.command_path if error.ctx else "driptag"
        click.echo(f"driptag: {_one_line(error.format_message())} (see '{command} --help')", err=True)
        return 2
    except click.Abort:
        click.echo("driptag: interrupted", err=True)
        return 1
    except click.ClickException as error:
        click.echo(f"driptag: {_one_line(error.format_message())}", err=True)
        return 2
    except OSError as error:
        where = f"{error.filename}: " if error.filename else ""
        click.echo(f"driptag: {where}{error.strerror or error}", err=True)
        return 1
    except Exception as error:  # noqa: BLE001 - the one place that turns the unexpected into status 1
        click.echo(f"driptag: unexpected error: {error.__class__.__name__}: {error}", err=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
