"""The client's address and scheme, believing ``X-Forwarded-*`` only from trusted proxies.

Behind a reverse proxy every request comes from the proxy's address; the proxy
names the real client in ``X-Forwarded-For`` and the scheme it was reached by in
``X-Forwarded-Proto``. Anyone can send those headers, so they are read only when
the connection comes from an address in ``CRMROUTE_TRUSTED_PROXIES`` (none by
default). The client is then the right-most ``X-Forwarded-For`` entry that is
not itself a trusted proxy: entries further left are whatever the client
claimed. The scheme is the right-most ``X-Forwarded-Proto`` value, the one the
nearest proxy set.

The middleware rewrites the ASGI scope's ``client`` and ``scheme``, so
``request.client.host`` and ``request.url.scheme`` are the ones to use. The
web server's own proxy-header handling must be off (``proxy_headers=False``):
uvicorn's default believes any loopback client.
"""

from __future__ import annotations

import ipaddress

from starlette.types import ASGIApp, Receive, Scope, Send

from crmroute.settings import IpNetwork

SCHEMES = {"http": ("http", "https"), "websocket": ("ws", "wss")}


class ForwardedHeaders:
    def __init__(self, app: ASGIApp, trusted: tuple[IpNetwork, ...]) -> None:
        self.app = app
        self.trusted = trusted

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.trusted and scope["type"] in SCHEMES:
            client = scope.get("client")
            if client and self.is_trusted(client[0]):
                self.rewrite(scope, client[1])
        await self.app(scope, receive, send)

    def is_trusted(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self.trusted)

    def rewrite(self, scope: Scope, port: int) -> None:
        hops = [host_of(hop) for hop in header_list(scope, b"x-forwarded-for")]
        if hops:
            client = hops[0]  # every hop trusted: the left-most is the best we know
            for hop in reversed(hops):
                if not self.is_trusted(hop):
                    client = hop
                    break
            scope["client"] = (client, port)
        protos = header_list(scope, b"x-forwarded-proto")
        if protos and protos[-1].lower() in SCHEMES[scope["type"]]:
            scope["scheme"] = protos[-1].lower()


def header_list(scope: Scope, name: bytes) -> list[str]:
    """The comma-separated values of every ``name`` header, in order."""
    values = [value.decode("latin-1") for key, value in scope["headers"] if key.lower() == name]
    return [part.strip() for part in ",".join(values).split(",") if part.strip()]


def host_of(hop: str) -> str:
    """``203.0.113.7:4711`` -> ``203.0.113.7``, ``[2001:db8::1]:443`` -> ``2001:db8::1``; else as is."""
    if hop.startswith("[") and "]" in hop:
        return hop[1 : hop.index("]")]
    if hop.count(":") == 1:
        return hop.partition(":")[0]
    return hop
