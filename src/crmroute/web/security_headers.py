"""Headers every response carries, and ``Secure`` on every cookie set over HTTPS.

The Content-Security-Policy allows scripts, styles and images from this site
only: no inline script, no inline ``style`` attributes, no ``eval``, nothing
from elsewhere. The UI keeps its script in ``static/app.js`` and its styles in
``static/app.css``; ``tests/web/browser/test_csp.py`` fails on any violation.
No page may be framed (against clickjacking), no response sniffed into another
type, and no URL (with its query) leaves in a ``Referer`` to another site.

A cookie set on a request that came over HTTPS (directly, or through a trusted
proxy's ``X-Forwarded-Proto``, see ``proxies.py``) is marked ``Secure``, so a
browser never sends it back in clear.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
HEADERS = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
)


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        https = scope.get("scheme") == "https"  # ForwardedHeaders runs outside this one: already resolved

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {key.lower() for key, _ in headers}
                headers += [(key, value) for key, value in HEADERS if key not in present]
                if https:
                    headers = [(key, secure(value)) if key.lower() == b"set-cookie" else (key, value)
                               for key, value in headers]  # fmt: skip
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def secure(cookie: bytes) -> bytes:
    attributes = [part.strip().lower() for part in cookie.split(b";")[1:]]
    return cookie if b"secure" in attributes else cookie + b"; Secure"
