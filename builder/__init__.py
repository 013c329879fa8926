"""driptag: generates the browser integration that puts Drip on a web site (see SPEC.md)."""

from .render import build_manifest, render
from .settings import Settings, SettingsError
from .version import __version__

__all__ = ["Settings", "SettingsError", "render", "build_manifest", "__version__"]
