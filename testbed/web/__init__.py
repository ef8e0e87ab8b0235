"""The web dashboard's static files, and plotly.js from the installed ``plotly`` package.

The pages are plain HTML, CSS and JavaScript without a build step; every one of them is
package data, so the dashboard and the self-contained report work offline (no CDN).
"""

from __future__ import annotations

from functools import cache
from importlib import resources

# Every file the app may serve from this package, with its media type: nothing else is served.
_HTML = "text/html; charset=utf-8"
_CSS = "text/css; charset=utf-8"
_JS = "text/javascript; charset=utf-8"
ASSETS: dict[str, str] = {
    "overview.html": _HTML,
    "run.html": _HTML,
    "compare.html": _HTML,
    "dashboard.css": _CSS,
    "dashboard.js": _JS,
    "plots.js": _JS,
    "overview.js": _JS,
    "run.js": _JS,
    "compare.js": _JS,
}

PAGES = ("overview.html", "run.html", "compare.html")


@cache
def asset_text(name: str) -> str:
    """One of ``ASSETS``; any other name (paths included) is a ``KeyError``."""
    if name not in ASSETS:
        raise KeyError(f"no such dashboard asset: {name!r}")
    return resources.files(__name__).joinpath(name).read_text(encoding="utf-8")


def page(name: str) -> str:
    """The HTML of one of ``PAGES``; any other name is a ``KeyError``."""
    if name not in PAGES:
        raise KeyError(f"no such dashboard page: {name!r}")
    return asset_text(name)


@cache
def plotly_js() -> str:
    """plotly.min.js as shipped in the ``plotly`` Python package (about 5 MB, read once)."""
    return resources.files("plotly").joinpath("package_data", "plotly.min.js").read_text("utf-8")
