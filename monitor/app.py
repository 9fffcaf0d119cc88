"""The collector and reputation API: routers mounted here, errors shaped here."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import Engine, text
from sqlalchemy.exc import InterfaceError, OperationalError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from monitor import __version__, openapi
from monitor.attestations.views import router as attestations_router
from monitor.db.session import make_engine
from monitor.exceptions import MonitorError
from monitor.identity.views import router as identity_router
from monitor.ingest.views import router as ingest_router
from monitor.metrics import collector_metrics
from monitor.metrics import router as metrics_router
from monitor.operators.views import router as operators_router
from monitor.registry.views import router as registry_router
from monitor.scoring.answers import AnswerCache
from monitor.scoring.job import start_scheduler
from monitor.scoring.views import router as scoring_router
from monitor.settings import Settings, parse_window
from monitor.signing.collector import service_account
from monitor.sla.views import router as sla_router
from monitor.status.views import router as status_router

log = logging.getLogger("monitor.app")


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, **extra}}


def create_app(
    settings: Settings, *, engine: Engine | None = None, scoring: bool = True
) -> FastAPI:
    """``scoring=False`` leaves the scoring job to the caller (tests drive it by hand)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        scheduler = (
            start_scheduler(
                app.state.engine,
                settings,
                app.state.service_account,
                metrics=app.state.instruments.jobs,
            )
            if scoring
            else None
        )
        try:
            yield
        finally:
            if scheduler is not None:
                scheduler.shutdown(wait=True)
            if engine is None:
                app.state.engine.dispose()

    app = FastAPI(
        title="monitor",
        summary="Health, reputation and routing weights for a decentralized RPC network",
        version=__version__,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.engine = engine or make_engine(settings.database_url)
    app.state.service_account = service_account(settings.service_key_file)
    app.state.weights_signatures = {}  # (chain, window, run id) -> signature; see scoring.views
    app.state.answers = AnswerCache(settings.answers_ttl_s)  # /v1/scores, /v1/weights bytes
    # GET /metrics serves app.state.metrics; the ingest view and the jobs update the instruments.
    app.state.instruments = collector_metrics(app.state.engine, parse_window(settings.windows[0]))
    app.state.metrics = app.state.instruments.registry

    @app.exception_handler(MonitorError)
    async def monitor_error(_: Request, exc: MonitorError) -> JSONResponse:
        return JSONResponse(error_body(exc.code, exc.message), status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        return JSONResponse(error_body("invalid_request", "; ".join(problems)), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(
            error_body(code, str(exc.detail)),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(OperationalError)
    @app.exception_handler(InterfaceError)
    async def database_unavailable(_: Request, exc: Exception) -> JSONResponse:
        # The database is down or locked: a condition to retry (probes keep their outbox and
        # retry 5xx), not a bug. Nothing was written: the transaction did not commit.
        log.warning("database unavailable: %s", type(exc).__name__)
        return JSONResponse(
            error_body("database_unavailable", "the database is unavailable; retry later"),
            status_code=503,
            headers={"Retry-After": "5"},
        )

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return JSONResponse(
            error_body("internal_error", "internal error; see the server log"), status_code=500
        )

    @app.get("/healthz", tags=["health"], summary="The process is up")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], summary="The database is reachable")
    async def readyz() -> JSONResponse:
        def ping() -> None:
            with app.state.engine.connect() as connection:
                connection.execute(text("SELECT 1"))

        try:
            await run_in_threadpool(ping)
        except Exception as exc:
            return JSONResponse(
                error_body("database_unreachable", type(exc).__name__), status_code=503
            )
        return JSONResponse({"status": "ready"})

    routers = (
        ingest_router,
        registry_router,
        scoring_router,
        operators_router,
        identity_router,
        sla_router,
        attestations_router,
        metrics_router,
        status_router,
    )
    for router in routers:
        app.include_router(router)
    openapi.install(app)
    return app
