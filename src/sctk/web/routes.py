"""Serve the dashboard: one HTML shell per page and the static files under /ui/static.

The pages carry no data and need no authentication: each is a shell whose script logs in
through the API and keeps the bearer token in sessionStorage, so every permission is still
enforced by the API. They are plain Starlette routes, not API routes: they are not part of
the REST API, its OpenAPI document or its permission matrix.
"""

from __future__ import annotations

from functools import cache
from html import escape
from pathlib import Path

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse
from starlette.staticfiles import StaticFiles

HERE = Path(__file__).parent
STATIC = HERE / "static"
STATIC_URL = "/ui/static"

# path -> (page module, title); the page module is static/js/pages/<module>.js
PAGES: dict[str, tuple[str, str]] = {
    "/": ("overview", "Overview"),
    "/ui/login": ("login", "Sign in"),
    "/ui/metrics": ("metrics", "Metrics"),
    "/ui/jobs": ("jobs", "Jobs and models"),
    "/ui/operations": ("operations", "Operations"),
}

# Everything comes from this server: no CDN, no inline script, no external request.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'self'; form-action 'self'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@cache
def _shell() -> str:
    return (HERE / "templates" / "page.html").read_text(encoding="utf-8")


def render(module: str, title: str) -> str:
    """The page shell for MODULE, with its title."""
    return (
        _shell()
        .replace("{{title}}", escape(title))
        .replace("{{page}}", escape(module))
        .replace("{{static}}", STATIC_URL)
    )


def _page(module: str, title: str):
    body = render(module, title)

    async def endpoint(_request: Request) -> HTMLResponse:
        return HTMLResponse(body, headers=HEADERS)

    return endpoint


async def _favicon(_request: Request) -> RedirectResponse:
    return RedirectResponse(f"{STATIC_URL}/favicon.svg", status_code=308)


def install(app: FastAPI) -> None:
    """Add the dashboard's pages and static files to APP."""
    for path, (module, title) in PAGES.items():
        app.add_route(path, _page(module, title), methods=["GET"], include_in_schema=False)
    app.add_route("/favicon.ico", _favicon, methods=["GET"], include_in_schema=False)
    app.mount(STATIC_URL, StaticFiles(directory=STATIC), name="web-static")
