"""The web dashboard's pages and assets, served from the package (plotly.js from the plotly
package's own file: the pages work offline, no CDN)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Response
from fastapi.responses import HTMLResponse

from testbed import web
from testbed.api.context import ApiContext

CACHE = {"Cache-Control": "public, max-age=3600"}


def pages_router(ctx: ApiContext) -> APIRouter:
    """Coroutines: they answer from memory (or one stat), no worker thread needed."""
    router = APIRouter(include_in_schema=False)

    @router.get("/", response_class=HTMLResponse)
    async def overview() -> HTMLResponse:
        return HTMLResponse(web.page("overview.html"))

    @router.get("/runs/{run_id}", response_class=HTMLResponse)
    async def run_page(run_id: Annotated[str, Path(max_length=128)]) -> HTMLResponse:
        if ctx.auth.read_open:  # with token reads, a page must not tell which runs exist
            ctx.store.run_dir(run_id)
        return HTMLResponse(web.page("run.html"))

    @router.get("/compare", response_class=HTMLResponse)
    async def compare_page() -> HTMLResponse:
        return HTMLResponse(web.page("compare.html"))

    @router.get("/static/vendor/plotly.min.js")
    async def plotly() -> Response:
        return Response(web.plotly_js(), media_type="text/javascript", headers=CACHE)

    @router.get("/static/{name}")
    async def asset(name: Annotated[str, Path(max_length=64)]) -> Response:
        if name not in web.ASSETS:
            raise HTTPException(404, f"no asset {name!r}")
        return Response(web.asset_text(name), media_type=web.ASSETS[name], headers=CACHE)

    return router
