"""Wiring: build the parts once from Settings and run the AGI and web halves."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import sys
from typing import TYPE_CHECKING

import uvicorn
from sqlalchemy import func, select

from crmroute.agi.jumps import JumpTable
from crmroute.agi.scripts import CallHandler
from crmroute.agi.server import AgiServer
from crmroute.connectors._http import make_client
from crmroute.router import Router
from crmroute.settings import Settings
from crmroute.store.db import Store  # noqa: F401  (its home before; callers still import it here)
from crmroute.store.decisions import DecisionLog
from crmroute.store.models import User

if TYPE_CHECKING:
    from fastapi import FastAPI

logger = logging.getLogger(__name__)

# A backstop only: the CRM part of a call is bounded by the rule's deadline;
# the rest is Asterisk playing the greeting and collecting digits (GET DATA).
SESSION_TIMEOUT = 180.0
SWITCH_INTERVAL = 0.001  # seconds; see tune_runtime()


def build_router(store: Store, *, with_log: bool = True, settings: Settings | None = None) -> Router:
    settings = settings or store.settings
    log = DecisionLog(store.factory, settings.decision_retention_days, settings.node) if with_log else None
    return Router(settings, store.factory, store.box, make_client(settings), log)


async def run(settings: Settings, *, agi: bool = True, web: bool = True) -> None:
    """Run the AGI server and/or the web app until SIGINT/SIGTERM."""
    stop = stop_on_signals()  # before start-up: a SIGTERM while starting still stops cleanly (drains the call log)
    store = Store(settings)
    await asyncio.to_thread(store.upgrade)
    # A web-only process keeps a router too, for dry runs (Test rule, /api/v1/route), without a decision log.
    router = build_router(store, with_log=agi) if agi or web else None
    agi_server: AgiServer | None = None
    web_server: uvicorn.Server | None = None
    call_logger = None
    tasks: list[asyncio.Task] = []
    try:
        if router is not None and agi:
            await router.start()
            handler = CallHandler(router, JumpTable.from_settings(settings))
            agi_server = AgiServer(
                handler, host=settings.agi_host, port=settings.agi_port, allow=settings.agi_allow,
                session_timeout=SESSION_TIMEOUT,
            )  # fmt: skip
            await agi_server.start()
            router.metrics.track(router.metrics.agi_sessions, lambda: agi_server.active_sessions)
            router.metrics.track(router.metrics.agi_probes, lambda: agi_server.probes_total)
            if settings.ami_enabled:  # the call logger: AMI events -> calls -> the CRMs' activities
                from crmroute.calllog.worker import CallLogger

                call_logger = CallLogger(settings, store.factory, router.pool.get)
                router.presence = call_logger.availability  # owner / last_agent: who is free, no round trip
                await call_logger.start()
        if web:
            from crmroute.web.app import create_app

            app = create_app(settings, store, router=router, agi_server=agi_server, call_logger=call_logger)
            config = web_config(app, settings)
            web_server = uvicorn.Server(config)
            web_server.install_signal_handlers = lambda: None  # type: ignore[method-assign]  # ours stop both halves
            tasks.append(asyncio.create_task(web_server.serve(), name="web"))
            logger.info("web UI and API on http://%s:%d", settings.http_host, settings.http_port)
        await asyncio.to_thread(warn_if_no_user, store)
        tune_runtime()
        await wait_for_signal(stop, tasks)
    finally:
        if web_server is not None:
            web_server.should_exit = True  # a graceful stop: finish requests, run the lifespan's end
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, timeout=10)
        if agi_server is not None:
            await agi_server.close()
        if call_logger is not None:
            await call_logger.close()
        if router is not None:
            await router.close()
            await router.http.aclose()
        store.close()


def web_config(app: FastAPI, settings: Settings) -> uvicorn.Config:
    """uvicorn's configuration; forwarded headers are left to the app (only CRMROUTE_TRUSTED_PROXIES are
    believed: ``web/proxies.py``), where uvicorn's own handling would believe any loopback client."""
    return uvicorn.Config(app, host=settings.http_host, port=settings.http_port, log_config=None,
                          access_log=False, lifespan="on", proxy_headers=False)  # fmt: skip


def tune_runtime() -> None:
    """Interpreter settings for a steady call path, applied once start-up is done.

    - Start-up objects (modules, models, the app) are frozen out of the
      garbage collector: they live as long as the process, yet each full
      collection walked them all with the event loop stopped (80-90 ms,
      every few thousand calls). Frozen, a full pass walks only what calls
      made since.
    - The GIL switch interval drops from 5 ms to 1 ms: when a worker thread
      (the decision log's writer, a web request) runs Python, the event loop
      waits at most that long to get the GIL back after each socket call.
    """
    gc.collect()
    gc.freeze()
    sys.setswitchinterval(SWITCH_INTERVAL)


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM (on the running loop)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    return stop


async def wait_for_signal(stop: asyncio.Event, tasks: list[asyncio.Task]) -> None:
    waiters = [asyncio.create_task(stop.wait())] + tasks
    done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    waiters[0].cancel()
    for task in done:
        if task is not waiters[0] and task.exception():
            raise task.exception()  # type: ignore[misc]
    logger.info("stopping")


def warn_if_no_user(store: Store) -> None:
    with store.factory() as session:
        if not session.scalar(select(func.count()).select_from(User)):
            logger.warning(
                "no user exists yet: create one with `crmroute user create USERNAME` to sign in to the web UI"
            )
