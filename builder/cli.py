"""The `driptag` command.

Exit status: 0 success; 2 invalid usage or settings (one line on stderr per problem, naming the
setting, no traceback); 1 anything unexpected. Without -o the output goes to stdout and nothing else
does.
"""

from __future__ import annotations

import json
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from .loader.batch import CsvError, build_batch
from .errors import Failure
from .files import write_file
from .loader.render import FORMATS, build_manifest, check_nonce, render
from .loader.settings import SETTING, SETTINGS, Problem, Settings, SettingsError, check_each, python_names
from .messages import one_line
from .relay.commands import relay
from .version import __version__

API_TOKEN_WARNING = ("driptag: warning: the API token is a server-side secret; "
                     "it is ignored and not written into the browser output")


def setting_option(name: str, **overrides: Any) -> Callable[[Any], Any]:
    """The click option of a declared setting: its flag (and --no- form), help, metavar and default.

    Without `overrides` the option's value is None when the flag is not given, so that it does not
    override the same setting from --settings; the declared default is only shown.
    """
    setting = SETTING[name]
    shown_default = None  # click's own show_default would be None here, or put a string in parentheses
    if setting.boolean:
        shown_default = setting.flags[0 if setting.default else 1][2:]
    elif not setting.required and setting.default is not None:
        shown_default = setting.default
    help_text = setting.help if shown_default is None else f"{setting.help}  [default: {shown_default}]"
    options: dict[str, Any] = {"default": None, "help": help_text, "metavar": setting.metavar}
    options.update(overrides)
    return click.option("/".join(setting.flags), setting.name, **options)


def _settings_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The flags of every declared setting (each overrides the same setting from --settings)."""
    for setting in reversed(SETTINGS):
        command = setting_option(setting.name)(command)
    return command


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="driptag", message="%(prog)s %(version)s")
def cli() -> None:
    """driptag: Drip on a web site (a loader for track.js) and behind a back end (a relay for Segment's HTTP API)."""


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
@click.option("-o", "--output", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
              help="Write the output to this file (a regular file atomically; - is stdout) instead of stdout.")
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
        raise click.UsageError(f"--nonce: {error}") from None
    given = {name: value for name, value in flags.items() if value is not None}
    base, written_as = _read_settings_file(settings_file) if settings_file else ({}, {})
    values = {**base, **given}
    # A value from the file is named by the file and its key there; a flag's by the JSON key and the flag.
    labels = {name: f"{settings_file}: {key}" for name, key in written_as.items() if name not in given}
    warned = []

    def warn_api_token() -> None:  # once per run, whether the token came from a flag, a file or a CSV
        if not warned:
            click.echo(API_TOKEN_WARNING, err=True)
            warned.append(True)

    if batch:
        problems = check_each(values)  # defaults of every row: reported once, before any row is read
        if problems:
            raise Failure(*_problem_lines(problems, labels))
        return _build_batch(batch, out_dir, fmt, values, not no_minify, nonce, manifest, warn_api_token)

    try:
        settings = Settings.from_mapping({}, **values)
    except SettingsError as error:
        raise Failure(*_problem_lines(error.problems, labels)) from None
    if settings.api_token:  # validated like any setting, then ignored: render never places it
        warn_api_token()
    code = render(settings, fmt, minify=not no_minify, nonce=nonce)
    if manifest:  # first: if it cannot be written, the output (an existing -o file) is left as it was
        _write_json(manifest, build_manifest(settings, fmt, minify=not no_minify, nonce=nonce))
    if output and output != Path("-"):
        write_file(output, code.encode("utf-8"))
    else:
        click.echo(code, nl=False)


def _problem_lines(problems: list[Problem], labels: dict[str, str]) -> list[str]:
    """One line per problem: a setting named by `labels` (where its value came from), else by its JSON
    key and flag."""
    return [f"driptag: {labels[problem.setting]}: {problem.message}"
            if problem.setting in labels and not problem.as_written else f"driptag: {problem.line('cli')}"
            for problem in problems]


def _build_batch(batch: Path, out_dir: Path, fmt: str, base: dict[str, Any], minify: bool,
                 nonce: str | None, manifest: Path | None, warn_api_token) -> None:
    if not batch.is_file():
        raise click.UsageError(f"--batch: {batch} is not a file")

    def progress(rows):
        if not sys.stderr.isatty():
            yield from rows
            return
        with click.progressbar(rows, label="driptag", file=sys.stderr, show_pos=True) as bar:
            yield from bar

    try:
        result = build_batch(batch, out_dir, fmt, base=base, minify=minify, nonce=nonce,
                             manifests=manifest is not None, note=_note, progress=progress,
                             on_api_token=warn_api_token)
    except SettingsError as error:
        raise Failure(*(f"{batch}:1: {problem.line('json')}" for problem in error.problems)) from None
    except CsvError as error:
        raise Failure(f"driptag: {batch}{'' if error.line is None else f':{error.line}'}: {error}") from None
    if manifest:
        _write_json(manifest, result.manifests)
    if not result.rows:
        _note(f"{batch} names its settings but has no rows; nothing was written")
    if result.problems:
        raise Failure(*result.problems, f"driptag: {len(result.written)} written, "
                                        f"{len(result.problems)} problem(s); invalid rows were skipped")


def _read_settings_file(path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """The settings in a JSON file, by Python name, and the key each was written as."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # a byte order mark (some editors write one) is skipped
    except OSError as error:
        raise Failure(f"driptag: --settings: cannot read {path}: {error.strerror}") from None
    except UnicodeDecodeError as error:
        raise Failure(f"driptag: --settings: {path} is not UTF-8 text ({error.reason} at byte {error.start:,})") from None
    written_as: dict[str, str] = {}
    try:
        return python_names(json.loads(text), note=_note, keys=written_as), written_as
    except RecursionError:
        raise Failure(f"driptag: --settings: {path} is nested too deeply to read; a settings file is one "
                      "JSON object of settings") from None
    except SettingsError as error:
        raise Failure(*(f"driptag: {path}: {problem.line('json')}" for problem in error.problems)) from None
    except ValueError as error:
        raise Failure(f"driptag: --settings: {path} is not valid JSON ({one_line(str(error), 200)})") from None


def _write_json(path: Path, data: Any) -> None:
    write_file(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode("utf-8"))


def _note(message: str) -> None:
    click.echo(f"driptag: note: {message}", err=True)


@cli.command()
@setting_option("account", default="83702741", show_default=True, help="Drip account ID.")
@setting_option("campaign_id", help="Campaign to subscribe identified users to [default: the demo's own with "
                                    "the emulator].")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=click.IntRange(0, 65535),
              help="0: any free port.")
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


# click 8.2 and later raise this for a group called without a command; 8.1 printed the help itself.
_NO_ARGS_IS_HELP: Any = getattr(click.exceptions, "NoArgsIsHelpError", ())


cli.add_command(relay)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `driptag` console script."""
    warnings.simplefilter("ignore")  # the CLI prints its own warnings
    try:
        status = cli.main(args=argv, prog_name="driptag", standalone_mode=False)
        return status if isinstance(status, int) else 0
    except _NO_ARGS_IS_HELP as error:  # `driptag` alone: the help, as --help gives it
        click.echo(error.ctx.get_help() if error.ctx else cli.get_help(click.Context(cli, info_name="driptag")))
        return 0
    except Failure as failure:
        for line in failure.lines:  # each on one line, whatever a path or value in it holds
            click.echo(one_line(line, 1000), err=True)
        return 2
    except click.UsageError as error:
        command = error.ctx.command_path if error.ctx else "driptag"
        click.echo(f"driptag: {one_line(error.format_message())} (see '{command} --help')", err=True)
        return 2
    except click.Abort:
        click.echo("driptag: interrupted", err=True)
        return 1
    except click.ClickException as error:
        click.echo(f"driptag: {one_line(error.format_message())}", err=True)
        return 2
    except OSError as error:
        where = f"{error.filename}: " if error.filename else ""
        click.echo(f"driptag: {one_line(f'{where}{error.strerror or error}')}", err=True)
        return 1
    except Exception as error:  # noqa: BLE001 - the one place that turns the unexpected into status 1
        click.echo(f"driptag: unexpected error: {error.__class__.__name__}: {one_line(str(error))}", err=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
