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


def test_authorize_in_the_docs_logs_in_with_a_username_and_password(start_site, browse):
    site = start_site("viewer")
    account = site.accounts["viewer"]
    b = browse(site)
    b.page.goto(site.url + "/docs")
    b.page.click(".swagger-ui .auth-wrapper button.authorize")
    # the OAuth2 password flow's own form in the dialog, beside the bearer token's
    b.page.fill("#oauth_username", account.username)
    b.page.fill("#oauth_password", account.password)
    with b.page.expect_response(lambda r: r.url.endswith("/api/v1/auth/token")) as login:
        b.page.click(".modal-ux .auth-container:has(#oauth_username) button.authorize")
    assert login.value.status == 200
    # the dialog now says so: the flow's button turned into Logout
    b.page.wait_for_selector(".modal-ux button[aria-label='Remove authorization']")
    b.page.click(".modal-ux button.btn-done")
    # an operation tried from the page carries the JWT the dialog got
    me = b.page.locator(".opblock:has(.opblock-summary-path[data-path='/api/v1/me'])")
    me.locator(".opblock-summary").click()
    me.locator("button.try-out__btn").click()
    with b.page.expect_response(lambda r: r.url.endswith("/api/v1/me")) as answer:
        me.locator("button.execute").click()
    assert answer.value.status == 200 and answer.value.json()["username"] == account.username
    assert b.take_errors() == []
