"""/docs and /redoc over real HTTP: every asset from this server, under a CSP, never framed."""

from __future__ import annotations

import base64
import hashlib
import re

import pytest

from sctk.api.app import create_app
from tests.helpers import LiveServer

pytestmark = pytest.mark.parametrize("backend", ["sqlite"])
REFERENCE = re.compile(r"""(?:src|href|spec-url)=["']([^"']+)["']|url:\s*'([^']+)'""")


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_use_local_assets_under_a_csp(settings, page):
    with LiveServer(create_app(settings)) as server, server.client() as client:
        r = client.get(page)
        assert r.status_code == 200, r.text
        html = r.text
        # nothing is fetched from elsewhere: no absolute URL at all in the page
        assert "http://" not in html and "https://" not in html, html
        references = [a or b for a, b in REFERENCE.findall(html)]
        assert references, html
        for ref in references:
            assert ref.startswith("/") and not ref.startswith("//"), ref
            asset = client.get(ref)
            assert asset.status_code == 200, (ref, asset.status_code)
            assert b"cdn.redoc.ly" not in asset.content, ref  # ReDoc's logo, pointed here
        assert any(ref.endswith(".js") for ref in references)

        csp = r.headers["content-security-policy"]
        directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
        assert directives["default-src"] == "'self'"
        assert directives["frame-ancestors"] == "'none'"
        assert r.headers["x-frame-options"] == "DENY"
        # scripts: this origin, and the page's own inline script by its hash, nothing else
        script_sources = directives["script-src"].split()
        assert "'unsafe-inline'" not in script_sources and "*" not in script_sources
        inline = re.findall(r"<script>(.*?)</script>", html, re.DOTALL)
        expected = {
            "'sha256-" + base64.b64encode(hashlib.sha256(s.encode()).digest()).decode() + "'"
            for s in inline
        }
        assert set(script_sources) == {"'self'", *expected}
