"""Security headers on every response (pure ASGI, on the hot path).

- `X-Content-Type-Options: nosniff` and `Referrer-Policy: no-referrer` everywhere.
- `Strict-Transport-Security` only on requests that arrived over TLS: scheme https, which
  uvicorn also sets from X-Forwarded-Proto of a proxy in FORWARDED_ALLOW_IPS. Sent over
  plain http it would be ignored by browsers, and it would pin a host that has no TLS.
- `Cache-Control: no-store` on everything under `/v1`: jobs, results, previews, artifacts,
  datasets, audit events and new API keys are patient data or secrets, and must not stay
  in browser or proxy caches. It replaces whatever a route set.
- A default `Content-Security-Policy: default-src 'none'; frame-ancestors 'none'` when the
  response set none (JSON and images need nothing); the web app and docs set their own.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

DEFAULT_CSP = b"default-src 'none'; frame-ancestors 'none'"
_NO_STORE_PREFIX = "/v1/"


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp, hsts_max_age_seconds: int) -> None:
        self.app = app
        self.hsts = f"max-age={hsts_max_age_seconds}; includeSubDomains".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        tls = scope.get("scheme") == "https"
        no_store = scope["path"].startswith(_NO_STORE_PREFIX)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (k, v)
                    for k, v in message.get("headers", [])
                    if not (no_store and k.lower() in (b"cache-control", b"pragma"))
                ]
                names = {k.lower() for k, _ in headers}
                extra = [(b"x-content-type-options", b"nosniff")]
                if b"referrer-policy" not in names:
                    extra.append((b"referrer-policy", b"no-referrer"))
                if b"content-security-policy" not in names:
                    extra.append((b"content-security-policy", DEFAULT_CSP))
                if tls:
                    extra.append((b"strict-transport-security", self.hsts))
                if no_store:
                    extra.append((b"cache-control", b"no-store"))
                message["headers"] = [
                    *(h for h in headers if h[0].lower() != b"x-content-type-options"),
                    *extra,
                ]
            await send(message)

        await self.app(scope, receive, send_with_headers)
