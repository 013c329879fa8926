"""The suite runs against driptag as `pip install .` installed it (not the source tree), so these prove that
a plain, non-editable install carries the templates and the static assets and works, and that whatever the
package imports is declared in pyproject.toml (else a fresh install would miss it)."""

import ast
import importlib.metadata
import re
import sys
import tomllib
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


def _normalised(distribution: str) -> str:
    """A distribution name as packaging compares them: case, runs of -, _ and . do not matter."""
    return re.sub(r"[-_.]+", "-", distribution).lower()


def _declared_dependencies() -> set[str]:
    with open(SOURCE_TREE / "pyproject.toml", "rb") as stream:
        project = tomllib.load(stream)["project"]
    return {_normalised(re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement).group())
            for requirement in project["dependencies"]}


def _imported_top_level_modules() -> dict[str, list[str]]:
    """Every absolute import in the package's code: top-level module -> the files that import it."""
    found: dict[str, list[str]] = {}
    for path in sorted((SOURCE_TREE / "builder").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], []).append(str(path.relative_to(SOURCE_TREE)))
    return found


def test_every_third_party_module_the_package_imports_is_a_declared_dependency():
    declared = _declared_dependencies()
    providers = importlib.metadata.packages_distributions()
    missing = {}
    third_party = set()
    for module, files in _imported_top_level_modules().items():
        if module in sys.stdlib_module_names or module in ("driptag", "__future__"):
            continue
        distributions = {_normalised(name) for name in providers.get(module, [])}
        assert distributions, f"{module} (imported by {files[0]}) is installed by no distribution in .venv"
        third_party.add(module)
        if not distributions & declared:
            missing[module] = (sorted(distributions), files[0])
    assert missing == {}, f"imported but not in [project] dependencies (module: distributions, first importer): {missing}"
    assert {"click", "jinja2", "markupsafe", "calmjs", "flask", "werkzeug"} <= third_party, \
        f"the import walk missed known imports: it found {sorted(third_party)}"
