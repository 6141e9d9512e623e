"""The browser side: the widget script, the engineer console, the lead's monitor and the
demo page.

They are built from ``static/src`` by ``make`` (npm + esbuild) into ``static/``; an installed
wheel carries the built files under ``share/chatd/static`` (docs/embedding.md).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import hdrs, web

from . import keys

ASSET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,100}$")

CONTENT_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".map": "application/json; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".mp3": "audio/mpeg",
    ".wav": "audio/wav",
}

# The console talks only to its own origin; the demo page also loads only from it.
CONSOLE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "media-src 'self' blob: data:; connect-src 'self'; font-src 'self'; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
DEMO_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'self'"
)

STATIC_DIR: web.AppKey[Path] = web.AppKey("static_dir", Path)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def default_static_dir() -> Path:
    """The source checkout's ``static/`` when it holds a build, else the wheel's copy."""
    checkout = Path(__file__).resolve().parent.parent.parent / "static"
    installed = Path(sys.prefix) / "share" / "chatd" / "static"
    for candidate in (checkout, installed):
        if (candidate / "widget.js").is_file():
            return candidate
    return checkout


def _not_built() -> web.Response:
    return web.Response(
        status=503,
        text="The web assets are not built: run `make run` (or `npm ci && npm run build`).\n",
        content_type="text/plain",
    )


def _file(path: Path, *, cache: str, csp: str | None = None) -> web.StreamResponse:
    if not path.is_file():
        return _not_built()
    headers = {
        "Content-Type": CONTENT_TYPES.get(path.suffix, "application/octet-stream"),
        "Cache-Control": cache,
    }
    if csp is not None:
        headers["Content-Security-Policy"] = csp
    return web.FileResponse(path, headers=headers)


def _asset(request: web.Request, folder: str) -> Path:
    name = request.match_info["name"]
    if not ASSET_NAME.match(name) or name.startswith(".") or name.endswith(".html"):
        raise web.HTTPNotFound()
    return request.app[STATIC_DIR] / folder / name


async def widget_js(request: web.Request) -> web.StreamResponse:
    # Vendors embed this URL unversioned: a short cache lets fixes reach them soon.
    return _file(request.app[STATIC_DIR] / "widget.js", cache="public, max-age=300")


async def widget_map(request: web.Request) -> web.StreamResponse:
    return _file(request.app[STATIC_DIR] / "widget.js.map", cache="public, max-age=300")


async def console_page(request: web.Request) -> web.StreamResponse:
    return _file(
        request.app[STATIC_DIR] / "console" / "index.html", cache="no-cache", csp=CONSOLE_CSP
    )


async def console_asset(request: web.Request) -> web.StreamResponse:
    return _file(_asset(request, "console"), cache="no-cache")


async def monitor_page(request: web.Request) -> web.StreamResponse:
    # Same policy as the console: the lead's monitor talks only to its own origin.
    return _file(
        request.app[STATIC_DIR] / "monitor" / "index.html", cache="no-cache", csp=CONSOLE_CSP
    )


async def monitor_asset(request: web.Request) -> web.StreamResponse:
    return _file(_asset(request, "monitor"), cache="no-cache")


async def demo_page(request: web.Request) -> web.StreamResponse:
    return _file(request.app[STATIC_DIR] / "demo" / "index.html", cache="no-cache", csp=DEMO_CSP)


async def demo_asset(request: web.Request) -> web.StreamResponse:
    return _file(_asset(request, "demo"), cache="no-cache")


def _redirect(to: str) -> web.RouteDef:
    async def handler(request: web.Request) -> web.StreamResponse:
        raise web.HTTPPermanentRedirect(to)

    return web.get(to.rstrip("/"), handler)


# The HTTP calls the widget makes from the vendor's pages (another origin): uploads,
# attachment and transcript downloads, and the offline ticket form. They authenticate with
# an Authorization header (a resume token or the customer JWT), never with cookies.
WIDGET_API = re.compile(
    r"^/api/(sessions/[^/]+/(attachments|transcript)|attachments/[^/]+(/thumbnail)?|tickets)$"
)


def allowed_origins(request: web.Request) -> set[str]:
    settings = request.app[keys.SETTINGS]
    allowed = set(settings.allowed_origins)
    if settings.public_url:
        scheme, _, rest = settings.public_url.partition("://")
        allowed.add(f"{scheme}://{rest.split('/', 1)[0]}")
    return allowed


@web.middleware
async def widget_cors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """CORS for the widget's HTTP calls from the configured widget origins only (the same
    allow-list as Socket.IO); without credentials, so a cookie never rides along."""
    origin = request.headers.get(hdrs.ORIGIN)
    if origin is None or not WIDGET_API.match(request.path):
        return await handler(request)
    permitted = origin in allowed_origins(request)
    preflight = hdrs.ACCESS_CONTROL_REQUEST_METHOD in request.headers
    if request.method == hdrs.METH_OPTIONS and preflight:
        if not permitted:
            return web.Response(status=403, text="origin not allowed\n")
        return web.Response(
            status=204,
            headers={
                hdrs.ACCESS_CONTROL_ALLOW_ORIGIN: origin,
                hdrs.ACCESS_CONTROL_ALLOW_METHODS: "GET, POST",
                hdrs.ACCESS_CONTROL_ALLOW_HEADERS: "Authorization, Content-Type, Upload-Id",
                hdrs.ACCESS_CONTROL_MAX_AGE: "600",
                hdrs.VARY: "Origin",
            },
        )
    response = await handler(request)
    if permitted:
        response.headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = origin
        response.headers[hdrs.ACCESS_CONTROL_EXPOSE_HEADERS] = "Content-Disposition"
        response.headers[hdrs.VARY] = "Origin"
    return response


def setup_pages(app: web.Application, static_dir: Path | None = None) -> None:
    app[STATIC_DIR] = static_dir or default_static_dir()
    # Outermost, so that error responses made by the inner middlewares carry it too.
    app.middlewares.insert(0, widget_cors)
    app.router.add_routes(
        [
            web.get("/widget.js", widget_js),
            web.get("/widget.js.map", widget_map),
            web.get("/console/", console_page),
            web.get("/console/{name}", console_asset),
            web.get("/monitor/", monitor_page),
            web.get("/monitor/{name}", monitor_asset),
            web.get("/demo/", demo_page),
            web.get("/demo/{name}", demo_asset),
            _redirect("/console/"),
            _redirect("/monitor/"),
            _redirect("/demo/"),
        ]
    )
