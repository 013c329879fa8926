"""`driptag build --batch`: one output file per row of a CSV of settings (SPEC §2.2).

The header names settings by their JSON keys (`account,campaignId,…`). Invalid rows are reported as
`FILE:LINE: setting: message` and skipped; valid rows are still written. Empty cells mean "not set".
"""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from ..files import write_atomically
from .render import build_manifest, render
from .settings import Problem, Settings, SettingsError, python_names

_EXTRA = "(extra cells)"


@dataclasses.dataclass
class BatchResult:
    written: list[Path] = dataclasses.field(default_factory=list)
    manifests: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    problems: list[str] = dataclasses.field(default_factory=list)


def read_rows(csv_path: Path, note: Callable[[str], None] | None) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, cells) for each data row. An unknown column is one SettingsError, before any row."""
    with open(csv_path, newline="", encoding="utf-8-sig") as stream:
        reader = csv.DictReader(stream, restkey=_EXTRA)
        known = python_names(dict.fromkeys(reader.fieldnames or [], ""), note=note)
        if "account" not in known:
            raise SettingsError([Problem("account", "the header has no account column")])
        for row in reader:
            yield reader.line_num, {key: value for key, value in row.items() if value not in ("", None)}


def build_batch(csv_path: Path, out_dir: Path, fmt: str, *, base: Mapping[str, Any], minify: bool = True,
                nonce: str | None = None, manifests: bool = False, note: Callable[[str], None] | None = None,
                progress: Callable[[Iterator], Iterator] = iter,
                on_api_token: Callable[[], None] | None = None) -> BatchResult:
    """Render one file per valid row into `out_dir`; `base` holds Python-named defaults for every row.

    Row cells override `base`. Raises SettingsError when the header itself is wrong. An API token is a
    server-side secret: it is validated like any setting, never rendered, and `on_api_token` is called
    (the caller warns once).
    """
    result = BatchResult()
    rows = read_rows(csv_path, note)
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
        write_atomically(target, render(settings, fmt, minify=minify, nonce=nonce).encode("utf-8"))
        result.written.append(target)
        if manifests:
            result.manifests.append(build_manifest(settings, fmt, minify=minify, nonce=nonce))
    return result
