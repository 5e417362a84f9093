"""The console's outer door (controlplane/console/guard.py) around a real console app:
requests without the nodes' proxy secret are refused and cannot say who the visitor is;
bodies over their route's limit are refused whether they declare their length or not."""
from __future__ import annotations

from pathlib import Path

import pytest
from starlette.testclient import TestClient

from controlplane.console import app as console_app
from controlplane.console import guard
from controlplane.core.county import County
from tests.helpers import example_inventory

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def county(tmp_path_factory):
    inv = tmp_path_factory.mktemp("guard") / "inventory"
    example_inventory(inv)
    return County(inv)


def test_without_the_proxy_secret_nothing_is_served(county):
    client = TestClient(console_app.build(county, secure=False, behind_nginx=True))
    for headers in ({}, {"X-Govhost-Proxy": "guess"}, {"X-Forwarded-For": "10.0.0.1"}):
        r = client.get("/login", headers=headers)
        assert r.status_code == 403 and "nodes' nginx only" in r.text


def test_with_the_proxy_secret_the_forwarded_address_is_the_visitor(county):
    secret = guard.proxy_secret(county.inv.secret)
    seen = []

    async def app(scope, receive, send):
        seen.append(scope["client"])
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})
    client = TestClient(guard.Guard(app, secret, 1 << 20))
    r = client.get("/", headers={"X-Govhost-Proxy": secret, "X-Forwarded-For": "203.0.113.9"})
    assert r.status_code == 204 and seen[-1] == ("203.0.113.9", 0)
    assert client.get("/console", headers={"X-Govhost-Proxy": secret[:-1]}).status_code == 403
    assert len(seen) == 1


def test_a_large_login_body_is_refused_before_it_is_read(county):
    client = TestClient(console_app.build(county, secure=False))
    r = client.post("/login", content=b"name=" + b"a" * (guard.FORM_LIMIT + 1),
                    headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 413


def test_a_chunked_body_without_a_length_is_cut_off_at_the_limit(county):
    # (The test client gathers the body first; the lab test sends it through nginx.)
    client = TestClient(console_app.build(county, secure=False))

    def chunks():
        for _ in range(100):
            yield b"a" * (64 << 10)
    r = client.post("/login", content=chunks(),
                    headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 413


def test_the_upload_route_alone_takes_a_large_body():
    assert guard.body_limit("POST", "/units/jiaoyu/upload", 5 << 30) == 5 << 30
    for method, path in (("POST", "/login"), ("POST", "/units/jiaoyu/upload/x"),
                         ("POST", "/units/../upload"), ("POST", "/x/units/jiaoyu/upload"),
                         ("GET", "/units/jiaoyu/upload"), ("POST", "/request")):
        assert guard.body_limit(method, path, 5 << 30) == guard.FORM_LIMIT, path


def test_the_web_process_reads_every_template_before_it_drops_to_its_account():
    """The web process runs as an account that may not read the repository's files later:
    `_preload` reads every console template (and the lazily imported modules) up front."""
    from controlplane.console import pages, web
    pages._env.cache.clear()
    web._preload()
    names = pages._env.list_templates(filter_func=lambda n: n.startswith("console/"))
    assert names and pages._env.auto_reload is False
    loaded = {key[1] for key in pages._env.cache.keys()}
    assert set(names) <= loaded, sorted(set(names) - loaded)
