"""The suite runs against driptag as `pip install .` installed it (not the source tree), so these prove that
a plain, non-editable install carries the templates and the static assets and works."""

from pathlib import Path

import driptag
from driptag.resources import resource_dir

SOURCE_TREE = Path(__file__).resolve().parent.parent


def test_tests_import_the_installed_package_not_the_source_tree():
    installed = Path(driptag.__file__).resolve()
    assert "site-packages" in installed.parts, f"driptag was imported from {installed}, not from an installed copy"


def test_installed_package_carries_templates_and_static_assets():
    for folder, name in [("templates", "loader.js.j2"), ("templates", "snippet.html.j2"),
                         ("static/emulator", "track.js")]:
        found = resource_dir(*folder.split("/")) / name
        assert "site-packages" in found.parts and found.is_file(), f"{folder}/{name} is not installed: {found}"
        assert found.read_bytes() == (SOURCE_TREE / folder / name).read_bytes(), f"installed {name} is stale"
