"""``report.html``: the dashboard's run page as one self-contained file in the run record.

A report must open years later from a mail or an archive, without a server or the network:
the page's stylesheet, plotly.js and the page's scripts are inlined, the run view is embedded
as JSON, which the same run-page script reads instead of asking the API, and the dashboard's
navigation (links into the server) is left out.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

from testbed.results.record import write_atomic
from testbed.results.view import run_view
from testbed.web import asset_text, page, plotly_js

REPORT = "report.html"

_STYLESHEET = re.compile(r'<link rel="stylesheet" href="/static/(?P<name>[\w.-]+)">')
_SCRIPT = re.compile(r'<script src="/static/(?P<name>[\w./-]+)"></script>')
_TITLE = re.compile(r"<title>.*?</title>")
_SERVER_ONLY = re.compile(r'<nav class="server-only".*?</nav>', re.DOTALL)
_JSON_ESCAPES = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"})


def write_report(run_dir: Path) -> Path:
    """Write (or replace) ``<run_dir>/report.html`` from the record as it is now."""
    target = run_dir / REPORT
    write_atomic(target, render_report(run_view(run_dir)).encode("utf-8"))
    return target


def render_report(view: dict[str, Any]) -> str:
    """The run page with its assets inlined and ``view`` embedded as data."""
    run = view.get("run") or {}
    title = f"{run.get('profile')} on {run.get('lab')}: {run.get('verdict')} ({run.get('run_id')})"
    text = _TITLE.sub(lambda _: f"<title>{html.escape(title)}</title>", page("run.html"), count=1)
    text = _SERVER_ONLY.sub("", text)
    text = _STYLESHEET.sub(lambda m: f"<style>\n{asset_text(m['name'])}</style>", text)
    first_script = text.index("<script")
    text = text[:first_script] + _view_element(view) + "\n" + text[first_script:]
    return _SCRIPT.sub(lambda m: f"<script>\n{_script_source(m['name'])}</script>", text)


def _view_element(view: dict[str, Any]) -> str:
    """The view as JSON that no HTML parser can end early: ``<``, ``>`` and ``&`` are written
    as JSON escapes (``\\u003c``...), so neither ``</script>`` nor ``<!--`` survives."""
    data = json.dumps(view, allow_nan=False, separators=(",", ":")).translate(_JSON_ESCAPES)
    return f'<script id="run-view" type="application/json">{data}</script>'


def _script_source(name: str) -> str:
    source = plotly_js() if name == "vendor/plotly.min.js" else asset_text(name)
    # Inline, "</script" would end the element; "<\/script" means the same to JavaScript.
    return source.replace("</script", "<\\/script")
