"""The origin check and the CORS and framing headers, as one ASGI middleware.

- Signalling and API routes (``/api/*``, ``/start``, ``/sessions/*``) refuse a browser
  page whose origin is not allowed (403 JSON) and give allowed ones CORS headers.
- Public scripts (``/static/*``, ``/embed.js``, ``/widget.js``) may be loaded from any
  origin: they are the widget's code, imported by pages on other sites.
- HTML pages carry ``frame-ancestors``, so only allowed sites can frame them.
"""

from __future__ import annotations

from loguru import logger
from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agent.server.access import OriginPolicy, normalise_origin, request_origin

#: Scripts any site may load (the widget imports /static/call.js as a module).
PUBLIC_SCRIPTS = ("/embed.js", "/widget.js")
PUBLIC_PREFIX = "/static/"

ALLOW_METHODS = "GET, POST, PATCH, OPTIONS"
ALLOW_HEADERS = "Content-Type, Authorization"
#: Seconds a browser may reuse a preflight answer.
PREFLIGHT_MAX_AGE_S = 600


def is_api_path(path: str) -> bool:
    """Whether ``path`` is a route the origin policy guards."""
    return path.startswith(("/api/", "/sessions/")) or path == "/start"


def own_origin(scope: Scope) -> str:
    """The server's origin as this request's client sees it: its scheme and Host header
    (behind a proxy, uvicorn takes the scheme from X-Forwarded-Proto)."""
    host = Headers(scope=scope).get("host", "")
    try:
        return normalise_origin(f"{scope.get('scheme', 'http')}://{host}")
    except ValueError:
        return ""


class AccessMiddleware:
    """Applies an :class:`OriginPolicy` to every request (see the module's docstring)."""

    def __init__(self, app: ASGIApp, policy: OriginPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        extra: dict[str, str] = {}
        if is_api_path(path):
            sent = Headers(scope=scope).get("origin")
            origin = request_origin(sent)
            if sent:
                extra = {"Access-Control-Allow-Origin": sent, "Vary": "Origin"}
                extra["Access-Control-Expose-Headers"] = "Retry-After"
            if scope["method"] == "OPTIONS":
                # Preflights are granted to every origin. The browser sends the real
                # request only after a granted preflight, and lets the page read the
                # answer only when it carries Access-Control-Allow-Origin. So a refused
                # page gets the 403 below with that header: the server still refuses
                # the request, and the widget can show the reason instead of a bare
                # network error. No cookies or credentials are involved.
                preflight = {
                    **extra,
                    "Access-Control-Allow-Methods": ALLOW_METHODS,
                    "Access-Control-Allow-Headers": ALLOW_HEADERS,
                    "Access-Control-Max-Age": str(PREFLIGHT_MAX_AGE_S),
                }
                await Response(status_code=204, headers=preflight)(scope, receive, send)
                return
            if not self.policy.allows(origin, own_origin(scope)):
                logger.info(f"refused {scope['method']} {path} from origin {origin}")
                refusal = JSONResponse(
                    {"error": f"origin {origin} is not allowed to use this server"},
                    status_code=403,
                    headers=extra,
                )
                await refusal(scope, receive, send)
                return
        elif path in PUBLIC_SCRIPTS or path.startswith(PUBLIC_PREFIX):
            extra = {
                "Access-Control-Allow-Origin": "*",
                "Cross-Origin-Resource-Policy": "cross-origin",
            }
        await self.app(scope, receive, self._with_headers(send, extra))

    def _with_headers(self, send: Send, extra: dict[str, str]) -> Send:
        """``send`` with ``extra`` headers, and frame-ancestors on HTML, added to the
        response's start."""
        ancestors = f"frame-ancestors {self.policy.frame_ancestors()}"

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in extra.items():
                    if name == "Vary" and "vary" in headers:
                        headers.add_vary_header(value)
                    else:
                        headers[name] = value
                if headers.get("content-type", "").startswith("text/html"):
                    policy = headers.get("content-security-policy")
                    headers["Content-Security-Policy"] = (
                        f"{policy}; {ancestors}" if policy else ancestors
                    )
            await send(message)

        return sending
