"""A real HTTPS server on 127.0.0.1 for tests: any ASGI app, a throwaway CA, a thread of its own."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme
import uvicorn


@dataclass(frozen=True)
class Loopback:
    base_url: str  # https://127.0.0.1:PORT
    ca_path: Path  # PEM of the CA that signed the server's certificate


@contextmanager
def serve_https(make_app: Callable[[Loopback], Any], directory: Path, name: str = "loopback") -> Iterator[Loopback]:
    """Serve ``make_app(where)`` until the block ends; certificate files go in ``directory``."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca_path, cert_path, key_path = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    cert.private_key_pem.write_to_path(str(key_path))
    with cert_path.open("wb") as chain:
        for pem in cert.cert_chain_pems:
            chain.write(pem.bytes())
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    where = Loopback(f"https://127.0.0.1:{sock.getsockname()[1]}", ca_path)
    config = uvicorn.Config(make_app(where), ssl_certfile=str(cert_path), ssl_keyfile=str(key_path), lifespan="off",
                            log_level="warning", access_log=False, timeout_graceful_shutdown=1)  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name=name, daemon=True)
    thread.start()
    started = time.monotonic()
    while not server.started:
        if not thread.is_alive() or time.monotonic() - started > 10:
            raise RuntimeError(f"the {name} server did not start")
        time.sleep(0.01)
    try:
        yield where
    finally:
        server.should_exit = True
        thread.join(timeout=5)
        sock.close()


_TLS_CONTEXTS: dict[Any, Any] = {}


@pytest.fixture(autouse=True)
def one_tls_context(monkeypatch: pytest.MonkeyPatch) -> None:
    """Build each verifying TLS context once per CA file (tests make a shared client per test)."""
    from crmroute.connectors import _http

    original = _http.ssl_context

    def cached(ca_bundle: str | None = None) -> Any:
        if ca_bundle not in _TLS_CONTEXTS:
            _TLS_CONTEXTS[ca_bundle] = original(ca_bundle)
        return _TLS_CONTEXTS[ca_bundle]

    monkeypatch.setattr(_http, "ssl_context", cached)
