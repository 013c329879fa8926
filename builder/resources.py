"""Where the project's non-Python files are: `templates/` and `static/` beside the package.

An installed driptag carries them as the packages `driptag.templates` and `driptag.static` (see
pyproject.toml); a source checkout that is not installed has them beside `builder/`.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

_SOURCE_TREE = Path(__file__).resolve().parent.parent


def resource_dir(*parts: str) -> Path:
    """The folder `templates`, `static`, `static/emulator`, … wherever this driptag is installed."""
    try:
        spec = importlib.util.find_spec("driptag." + ".".join(parts))
    except ModuleNotFoundError:
        spec = None
    if spec is not None and spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0])
    return _SOURCE_TREE.joinpath(*parts)
