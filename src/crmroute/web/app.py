"""The web half: REST API and admin UI (FastAPI), plus /healthz."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from crmroute import __version__
from crmroute.settings import Settings

if TYPE_CHECKING:
    from crmroute.agi.server import AgiServer
    from crmroute.router import Router
    from crmroute.service import Store


def create_app(
    settings: Settings, store: "Store", *, router: "Router | None" = None, agi_server: "AgiServer | None" = None
) -> FastAPI:
    app = FastAPI(title="crmroute", version=__version__, openapi_url="/api/v1/openapi.json", docs_url=None)
    app.state.settings, app.state.store, app.state.router, app.state.agi_server = settings, store, router, agi_server

    @app.get("/healthz", tags=["health"])
    def healthz() -> JSONResponse:
        """Liveness: database reachable, AGI listener up, version."""
        body: dict[str, Any] = {"version": __version__}
        try:
            with store.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
            body["database"] = "ok"
        except SQLAlchemyError as exc:
            body["database"] = f"error: {type(exc).__name__}"
        if agi_server is not None:
            body["agi"] = "listening" if agi_server.serving else "down"
            body["agi_active_sessions"] = agi_server.active_sessions
        else:
            body["agi"] = "not running in this process"
        if router is not None:
            body["rules_loaded"] = len(router.book.rules)
            if router.decision_log is not None:
                body["decisions_pending"] = router.decision_log.pending
        healthy = body["database"] == "ok" and body["agi"] != "down"
        body["status"] = "ok" if healthy else "degraded"
        return JSONResponse(body, status_code=200 if healthy else 503)

    return app
