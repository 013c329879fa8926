"""driptag: generates the browser integration that puts Drip on a web site.

The loader bridges analytics.js-style identify and track calls to Drip's queue `window._dcq`;
`render` gives it as a script or an inline `<script>` element for one validated `Settings`.
"""

from .loader.render import build_manifest, render
from .loader.settings import Settings, SettingsError
from .version import __version__

__all__ = ["Settings", "SettingsError", "render", "build_manifest", "__version__"]
