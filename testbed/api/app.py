"""The dashboard server: one FastAPI app for the API, the web pages and Prometheus metrics.

``create_app`` builds everything from an :class:`ApiConfig`, so tests, ``testbed serve`` and a
lab's own ASGI server all get the same app. The app reads run records and the index; it
starts runs only through :class:`~testbed.api.service.RunService` and never drives devices.
"""

from __future__ import annotations

from fastapi import Depends, FastAPI, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse

import testbed
from testbed.api.auth import Authorizer, load_tokens
from testbed.api.config import ApiConfig
from testbed.api.context import ApiContext
from testbed.api.meta import meta_router
from testbed.api.metrics import metrics_text
from testbed.api.middleware import BodyLimit, SecurityHeaders
from testbed.api.pages import pages_router
from testbed.api.runs import runs_router
from testbed.api.service import RunService
from testbed.api.store import RunStore
from testbed.results.catalog import sync_index
from testbed.results.index import Index
from testbed.results.view import json_safe


def create_app(config: ApiConfig) -> FastAPI:
    config.results_dir.mkdir(parents=True, exist_ok=True)
    index = Index(config.database_url)
    sync_index(index, config.results_dir)
    auth = Authorizer(load_tokens(config.tokens_file), read_open=config.read_access == "open")
    ctx = ApiContext(config, index, RunStore(config.results_dir, index), RunService(config), auth)
    app = FastAPI(
        title="EUCCS testbed dashboard API",
        version=testbed.__version__,
        description="Runs of the hardware-in-the-loop testbed: results, KPIs, trends, "
        "comparisons, live progress; starting and aborting runs with a token.",
    )
    app.state.ctx = ctx
    app.include_router(runs_router(ctx))
    app.include_router(meta_router(ctx))
    app.include_router(pages_router(ctx))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        """FastAPI's 422, with the echoed input made strict JSON: a body may hold NaN or
        1e400, which Python's json reads and strict JSON cannot write back."""
        return JSONResponse(
            status_code=422, content={"detail": json_safe(jsonable_encoder(exc.errors()))}
        )

    @app.get(
        "/metrics",
        response_class=PlainTextResponse,
        tags=["monitoring"],
        dependencies=[Depends(auth.require("read"))],
    )
    def metrics() -> Response:
        """Prometheus text format: run counts, latest KPI values per profile and lab."""
        return Response(metrics_text(index), media_type="text/plain; version=0.0.4")

    app.add_middleware(BodyLimit, max_bytes=config.max_body_bytes)
    app.add_middleware(SecurityHeaders)
    app.router.on_shutdown.append(index.close)
    return app
