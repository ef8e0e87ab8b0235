"""The web dashboard's static files, and plotly.js from the installed ``plotly`` package.

The pages are plain HTML, CSS and JavaScript without a build step; every one of them is
package data, so the dashboard and the self-contained report work offline (no CDN).
"""

from __future__ import annotations

from functools import cache
from importlib import resources

# Every file the app may serve from this package, with its media type: nothing else is served.
ASSETS: dict[str, str] = {
    "overview.html": "text/html; charset=utf-8",
    "run.html": "text/html; charset=utf-8",
    "compare.html": "text/html; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
    "plots.js": "text/javascript; charset=utf-8",
    "overview.js": "text/javascript; charset=utf-8",
    "run.js": "text/javascript; charset=utf-8",
    "compare.js": "text/javascript; charset=utf-8",
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
