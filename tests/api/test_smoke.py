def test_live(live_app):
    with live_app.client() as c:
        r = c.get("/health/ready")
        assert r.status_code == 200, r.text
        assert {x["name"] for x in r.json()["checks"]} >= {"database", "migrations"}
