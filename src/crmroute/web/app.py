"""The web half: REST API under /api/v1, the admin UI, /healthz and /metrics."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy import text
from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Mount

from crmroute import __version__
from crmroute.errors import ConfigError, Conflict, NotFound
from crmroute.fieldlabels import explain
from crmroute.metrics import CONTENT_TYPE
from crmroute.schemas import error_problems
from crmroute.settings import Settings
from crmroute.store import credentials
from crmroute.store.db import Store
from crmroute.web.deps import ApiUser, CsrfFailed, LoginRequired, check_bearer, signed_in
from crmroute.web.proxies import ForwardedHeaders
from crmroute.web.readiness import node_readiness
from crmroute.web.security_headers import SecurityHeaders
from crmroute.web.throttle import LoginThrottle

if TYPE_CHECKING:
    from crmroute.agi.server import AgiServer
    from crmroute.calllog.worker import CallLogger
    from crmroute.router import Router

STATIC = Path(__file__).parent / "static"
logger = logging.getLogger(__name__)

# The database could not be reached (down, moved, pool exhausted): the request may succeed later.
UNAVAILABLE = (OperationalError, InterfaceError, DisconnectionError, PoolTimeout)
UNAVAILABLE_MESSAGE = "the database is unavailable; try again shortly"
BODY_UNREADABLE = "There was an error parsing the body"  # FastAPI's 400 when a JSON body fails other than as JSON


def create_app(
    settings: Settings, store: Store, *, router: Router, agi_server: AgiServer | None = None,
    call_logger: CallLogger | None = None, owns_router: bool = False,
) -> FastAPI:
    """The app over parts built elsewhere (``crmroute.service``); ``owns_router``: its shutdown closes the router."""
    from crmroute.calllog.worker import install_metrics, off_status
    from crmroute.web.api import api_router
    from crmroute.web.ui import ui_router

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        if owns_router:
            await router.close()
            await router.http.aclose()

    # The OpenAPI document is served below, behind auth; no docs UI (it would load a CDN).
    app = FastAPI(title="crmroute", version=__version__, openapi_url=None, docs_url=None, redoc_url=None,
                  lifespan=lifespan)  # fmt: skip
    app.state.settings = settings
    app.state.store = store
    app.state.router = router
    app.state.agi_server = agi_server
    app.state.metrics = router.metrics
    app.state.call_logger = call_logger
    install_metrics(router.metrics, store.factory, call_logger)
    router.metrics.track_refused_credentials(lambda: _refused_names(store))
    app.state.throttle = LoginThrottle()
    install_error_handlers(app)
    app.add_middleware(SecurityHeaders)
    app.add_middleware(ForwardedHeaders, trusted=settings.trusted_proxies)  # outermost: the rest see the real client
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.include_router(api_router)
    app.include_router(ui_router)

    @app.get("/healthz", tags=["health"], responses={503: {"description": "the database or the AGI listener is down"}})
    def healthz(request: Request) -> JSONResponse:
        """Liveness: database reachable, AGI listener up. Signed in (session or API token), also the version,
        rules, CRM circuits and the call logger's AMI state (informative)."""
        body: dict[str, Any] = {"version": __version__, "node": settings.node}
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
        if router.decision_log is not None:  # this process routes calls
            body["rules_loaded"] = len(router.book.rules)
            body["decisions_pending"] = router.decision_log.pending
            body["decisions_dropped"] = router.decision_log.dropped
            body["crm_circuits"] = router.guards.circuits()  # an open one is the CRM's trouble, not ours: no 503
            body["crm_quotas"] = router.guards.quotas()  # 80 % used or more; spent ones make calls fall back
            body["redis"] = router.guards.shared_status()  # Redis away: degraded service, calls still routed
        body["ami"] = call_logger.status() if call_logger is not None else off_status(settings)  # the call logger
        if body["database"] == "ok":  # refused CRM credentials: calls fall back until an admin fixes them
            try:
                with store.factory() as session:
                    body["credentials_refused"] = [
                        {k: r[k] for k in ("integration", "principal", "message", "at")}
                        for r in credentials.refused(session, store.box)
                    ]  # fmt: skip
            except SQLAlchemyError as exc:
                body["credentials_refused"] = f"error: {type(exc).__name__}"
        healthy = body["database"] == "ok" and body["agi"] != "down"
        body["status"] = "ok" if healthy else "degraded"
        body |= node_readiness(settings, router, agi_server, body["database"] == "ok")
        if not signed_in(request):  # names of rules, integrations and the AMI user are for admins only
            body = {"status": body["status"], "database": body["database"].partition(":")[0], "agi": body["agi"],
                    "node": body["node"], "ready": body["ready"], "shared_state": body["shared_state"]}
        return JSONResponse(body, status_code=200 if healthy else 503)

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> FileResponse:  # browsers ask for it whatever the page links
        return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml",
                            headers={"Cache-Control": "public, max-age=86400"})  # fmt: skip

    @app.get("/api/v1/openapi.json", include_in_schema=False)
    def openapi(user: ApiUser) -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/metrics", tags=["health"], response_class=Response,
             responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}})  # fmt: skip
    def metrics(request: Request) -> Response:
        """Prometheus text format; with ``CRMROUTE_METRICS_TOKEN`` set, only for ``Authorization: Bearer`` it."""
        check_bearer(request, settings.metrics_token)
        return Response(app.state.metrics.render(), media_type=CONTENT_TYPE)

    return app


def _refused_names(store: Store) -> list[str]:
    with store.factory() as session:
        return sorted({r["integration"] for r in credentials.refused(session, store.box)})


def problem_list(problems: list[tuple[str, str]]) -> list[dict[str, str]]:
    """``field`` the machine's path (``rows[1].option``), ``message`` the admin's words ("Row 2, ...: ...")."""
    return [{"field": field, "message": explain(field, message)} for field, message in problems]


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(NotFound)
    async def not_found(request: Request, exc: NotFound) -> Response:
        if is_page(request):  # a page: an HTML answer the admin can go back from
            return error_page(request, 404, f"{str(exc)[:1].upper()}{str(exc)[1:]}.")
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(Exception)
    async def server_error(request: Request, exc: Exception) -> Response:
        # Starlette re-raises it after this answer, so the server logs the traceback.
        if is_page(request):
            return error_page(request, 500, "Something went wrong on our side; it is logged. Go back and try "
                              "again, and tell whoever runs crmroute if it happens again.")  # fmt: skip
        return JSONResponse({"detail": "internal error; it is logged"}, status_code=500)

    @app.exception_handler(Conflict)
    async def conflict(request: Request, exc: Conflict) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=409)

    @app.exception_handler(ConfigError)
    async def invalid(request: Request, exc: ConfigError) -> JSONResponse:
        return JSONResponse({"detail": problem_list(exc.problems)}, status_code=422)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": problem_list(error_problems(exc.errors(), request=True))}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 405:  # Starlette's Allow names only the first route on the path
            allow = ", ".join(allowed_methods(request)) or (exc.headers or {}).get("Allow", "")
            return await http_exception_handler(request, StarletteHTTPException(405, exc.detail, {"Allow": allow}))
        if exc.status_code == 400 and exc.detail == BODY_UNREADABLE and exc.__cause__ is not None:
            return JSONResponse({"detail": problem_list([("", body_problem(exc.__cause__))])}, status_code=422)
        if exc.status_code in PAGE_MESSAGES and is_page(request):
            return error_page(request, exc.status_code, PAGE_MESSAGES[exc.status_code], headers=exc.headers)
        return await http_exception_handler(request, exc)

    for error in UNAVAILABLE:
        app.add_exception_handler(error, database_unavailable)

    @app.exception_handler(LoginRequired)
    async def login_required(request: Request, exc: LoginRequired) -> RedirectResponse:
        return RedirectResponse(f"/login?next={quote(exc.next_url, safe='/')}", status_code=303)

    @app.exception_handler(CsrfFailed)
    async def csrf_failed(request: Request, exc: CsrfFailed) -> Response:
        return error_page(request, 403, "The form expired or came from another site. Go back, reload the page "
                          "and try again.")  # fmt: skip


# What an HTML error page says (JSON stays for /api/); the title is the status's name.
PAGE_MESSAGES = {
    403: "You may not do that here.",
    404: "There is no page at this address. Check the address, or pick a page from the menu.",
}
PAGE_TITLES = {403: "Not allowed", 404: "Page not found", 500: "Something went wrong", 503: "Service unavailable"}


def is_page(request: Request) -> bool:
    return not request.url.path.startswith("/api/") and request.url.path not in ("/healthz", "/metrics")


def error_page(request: Request, status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    """The error inside the normal layout, with the menu when someone is signed in."""
    from crmroute.web.deps import optional_principal
    from crmroute.web.templating import render

    principal = optional_principal(request)
    response = render(request, "error.html", principal, title=PAGE_TITLES.get(status, "Error"), message=message,
                      status=status, status_code=status, license_notice=None)  # fmt: skip
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def allowed_methods(request: Request) -> list[str]:
    """The methods some route serves at this path (asked of each route, included routers too)."""
    allowed = []
    for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"):
        scope = {**request.scope, "method": method, "fastapi": {}}  # matching may note its route there
        if any(route.matches(scope)[0] == Match.FULL for route in request.app.router.routes
               if not isinstance(route, Mount)):  # fmt: skip
            allowed.append(method)
    return allowed


def body_problem(cause: BaseException) -> str:
    if isinstance(cause, UnicodeDecodeError):
        return f"the request body is not UTF-8 text (byte {cause.start}); send JSON in UTF-8"
    if isinstance(cause, RecursionError):
        return "the request body is nested too deeply"
    return "the request body could not be read as JSON"


async def database_unavailable(request: Request, exc: Exception) -> Response:
    logger.warning("%s %s: database unavailable: %s", request.method, request.url.path, exc)
    if is_page(request):
        return error_page(request, 503, "The database cannot be reached. Try again in a moment.")
    return JSONResponse({"detail": UNAVAILABLE_MESSAGE}, status_code=503)
