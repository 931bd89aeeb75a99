"""/docs and /redoc in a real browser: both render from this server alone, under their CSP
(a blocked script or style is a console error), with no request to any other origin."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.parametrize("backend", ["sqlite"])


def test_api_docs_render_under_their_csp_without_other_origins(start_site, browse):
    site = start_site()
    b = browse(site)
    elsewhere: list[str] = []
    b.page.on(
        "request",
        lambda r: (
            r.url.startswith(("http", "ws"))
            and not r.url.startswith(site.url)
            and elsewhere.append(r.url)
        ),
    )
    b.page.goto(site.url + "/docs")
    # Swagger UI ran (its inline start-up script was allowed) and read the OpenAPI document
    b.page.wait_for_selector(".swagger-ui .info .title", timeout=30_000)
    assert "sctk" in (b.page.text_content(".swagger-ui .info .title") or "")
    b.page.wait_for_selector(".swagger-ui .opblock-tag", timeout=30_000)
    b.page.goto(site.url + "/redoc")
    b.page.wait_for_selector("h1", timeout=30_000)
    assert "sctk" in (b.page.text_content("h1") or "")
    assert b.take_errors() == []
    assert elsewhere == []
