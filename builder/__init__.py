"""driptag: generates the browser integration that puts Drip on a web site (see SPEC.md)."""

from .loader.render import build_manifest, render
from .loader.settings import Settings, SettingsError
from .version import __version__

__all__ = ["Settings", "SettingsError", "render", "build_manifest", "__version__"]
