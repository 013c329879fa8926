"""`driptag build --batch`: one output file per row of a CSV of settings.

The header names settings by their JSON keys (`account,campaignId,…`). Invalid rows are reported as
`FILE:LINE: setting: message` and skipped; valid rows are still written. Empty cells mean "not set".
The whole file is read before anything is written, so a file that cannot be read (not UTF-8, a cell
beyond the CSV reader's size limit, no header) writes nothing.
"""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from ..files import write_file
from ..messages import one_line
from .render import build_manifest, render
from .settings import Problem, Settings, SettingsError, python_names

_EXTRA = "(extra cells)"


class CsvError(ValueError):
    """The CSV file cannot be read as a whole. `line` is where reading stopped (None: the file as a whole)."""

    def __init__(self, line: int | None, message: str):
        super().__init__(message)
        self.line = line


@dataclasses.dataclass
class BatchResult:
    rows: int = 0
    written: list[Path] = dataclasses.field(default_factory=list)
    manifests: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    problems: list[str] = dataclasses.field(default_factory=list)


def read_rows(csv_path: Path, note: Callable[[str], None] | None) -> list[tuple[int, dict[str, str]]]:
    """(line number, cells) for each data row. An unknown column is one SettingsError; a file the csv module
    cannot read (or an empty one) is a CsvError."""
    with open(csv_path, newline="", encoding="utf-8-sig") as stream:
        reader = csv.DictReader(stream, restkey=_EXTRA)
        try:
            header = reader.fieldnames
            if header is None:
                raise CsvError(None, "the file is empty; its first line names the settings of each row by their "
                                     "JSON keys, like account,campaignId")
            known = python_names(dict.fromkeys(header, ""), note=note)
            if "account" not in known:
                raise SettingsError([Problem("account", "the header has no account column")])
            return [(reader.line_num, {key: value for key, value in row.items() if value not in ("", None)})
                    for row in reader]
        except csv.Error as error:  # the csv reader's own count: the DictReader's stops at the last good row
            raise CsvError(reader.reader.line_num, _csv_problem(error)) from None
        except UnicodeDecodeError as error:
            raise CsvError(None, f"not UTF-8 text ({error.reason}); save it as UTF-8") from None


def _csv_problem(error: csv.Error) -> str:
    if "field limit" in str(error):  # the one csv.Error a well-formed file can give
        return (f"a cell is longer than {csv.field_size_limit():,} characters, the most the CSV reader takes "
                "(no setting is anywhere near that long)")
    return f"not a readable CSV file ({one_line(str(error), 200)})"


def build_batch(csv_path: Path, out_dir: Path, fmt: str, *, base: Mapping[str, Any], minify: bool = True,
                nonce: str | None = None, manifests: bool = False, note: Callable[[str], None] | None = None,
                progress: Callable[[list], Iterator] = iter,
                on_api_token: Callable[[], None] | None = None) -> BatchResult:
    """Render one file per valid row into `out_dir`; `base` holds Python-named defaults for every row.

    Row cells override `base`. Raises SettingsError when the header itself is wrong, CsvError when the file
    cannot be read; then nothing is written. An API token is a server-side secret: it is validated like any
    setting, never rendered, and `on_api_token` is called (the caller warns once).
    """
    rows = read_rows(csv_path, note)
    result = BatchResult(rows=len(rows))
    seen: dict[str, int] = {}
    for line, cells in progress(rows):
        try:
            if _EXTRA in cells:
                raise SettingsError([Problem("row", "it has more cells than the header names")])
            settings = Settings.from_mapping({}, **{**base, **python_names(cells)})  # validates a token too
            if settings.api_token and on_api_token:
                on_api_token()
        except SettingsError as error:
            result.problems += [f"{csv_path}:{line}: {problem.line('json')}" for problem in error.problems]
            continue
        out_dir.mkdir(parents=True, exist_ok=True)
        if settings.account in seen:
            result.problems.append(f"{csv_path}:{line}: account: {settings.account} already appears on line "
                                   f"{seen[settings.account]}; this row was skipped")
            continue
        seen[settings.account] = line
        target = out_dir / f"{settings.account}.{fmt}"
        write_file(target, render(settings, fmt, minify=minify, nonce=nonce).encode("utf-8"))
        result.written.append(target)
        if manifests:
            result.manifests.append(build_manifest(settings, fmt, minify=minify, nonce=nonce))
    return result
