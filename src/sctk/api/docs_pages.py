"""/docs (Swagger UI) and /redoc, served from this server: the JavaScript and CSS come from
the fastapi-offline package (no CDN), under a Content-Security-Policy that allows only this
origin and the pages' own inline start-up script (by its hash), and never inside a frame."""

from __future__ import annotations

import base64
import hashlib
import re
from functools import cache
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

ASSETS_URL = "/docs-assets"
_REDOC_LOGO = b"https://cdn.redoc.ly/redoc/logo-mini.svg"
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)


def assets_dir() -> Path:
    """Swagger UI's and ReDoc's files, as the fastapi-offline package ships them."""
    import fastapi_offline

    return Path(fastapi_offline.__file__).parent / "static"


def _csp(html: str) -> str:
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(body.encode()).digest()).decode() + "'"
        for body in _INLINE_SCRIPT.findall(html)
    )
    return (
        f"default-src 'self'; script-src 'self' {hashes}; "
        # both UIs set styles inline; ReDoc renders in a worker it makes from a blob
        "style-src 'self' 'unsafe-inline'; img-src 'self' data:; worker-src 'self' blob:; "
        "connect-src 'self'; object-src 'none'; frame-ancestors 'none'; base-uri 'self'; "
        "form-action 'self'"
    )


def _page(html: str) -> HTMLResponse:
    return HTMLResponse(
        html,
        headers={
            "Content-Security-Policy": _csp(html),
            "X-Frame-Options": "DENY",
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        },
    )


def install(app: FastAPI) -> None:
    """Serve /docs, /redoc and their assets on APP (built with docs_url=redoc_url=None)."""
    title = f"{app.title} API"
    openapi_url = app.openapi_url or "/openapi.json"

    @cache
    def redoc_js() -> bytes:
        # the one image ReDoc's bundle would fetch from elsewhere (its logo in the menu's
        # footer): pointed here, so the page asks nothing of another origin
        text = (assets_dir() / "redoc.standalone.js").read_bytes()
        return text.replace(_REDOC_LOGO, f"{ASSETS_URL}/favicon.png".encode())

    @app.get(f"{ASSETS_URL}/redoc.standalone.js", include_in_schema=False)
    async def redoc_script() -> Response:
        return Response(redoc_js(), media_type="text/javascript")

    # after the route above, which answers for the one file it changes
    app.mount(ASSETS_URL, StaticFiles(directory=assets_dir()), name="docs-assets")

    @cache
    def swagger() -> str:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=title,
            swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_URL}/favicon.png",
            # no badge fetched from the public validator service
            swagger_ui_parameters={"validatorUrl": None},
        ).body.decode()

    @cache
    def redoc() -> str:
        return get_redoc_html(
            openapi_url=openapi_url,
            title=title,
            redoc_js_url=f"{ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{ASSETS_URL}/favicon.png",
            with_google_fonts=False,
        ).body.decode()

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return _page(swagger())

    @app.get("/redoc", include_in_schema=False)
    async def redoc_page() -> HTMLResponse:
        return _page(redoc())
