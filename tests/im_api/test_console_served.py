"""How the console reaches a browser: from im-api's origin under /console/, hashed and cached, with
a Content-Security-Policy; the JavaScript within its budget; the development sign-in only where a
setting turns it on, and never in compose or Kubernetes."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import pytest
from im_api.settings import ApiSettings
from im_api_helpers import running

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CONSOLE_DIST = ROOT / "clients" / "console" / "dist"

JS_BUDGET_GZIP_BYTES = 100 * 1024  # the target: the console's JavaScript ≤ 100 KiB gzipped


@pytest.fixture
async def http(api_settings):
    async with running(api_settings.model_copy(update={"console_dir": str(CONSOLE_DIST)})) as api:
        yield api.http


def test_the_consoles_javascript_fits_its_budget():
    scripts = sorted((CONSOLE_DIST / "assets").glob("*.js"))
    assert scripts, "the console is not built"
    total = sum(len(gzip.compress(p.read_bytes(), 9)) for p in scripts)
    assert total <= JS_BUDGET_GZIP_BYTES, f"{total} bytes gzipped"


async def test_the_console_is_served_hashed_cached_and_under_a_content_security_policy(http, api_settings):
    page = await http.get("/console/")
    assert page.status_code == 200 and "<im-console>" in page.text
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "'unsafe-inline'" not in csp and "object-src 'none'" in csp
    gateway = re.match(r"(ws://[^/]+)", api_settings.stream_public_url).group(1)
    assert f"connect-src 'self' {gateway}" in csp
    assert page.headers["cache-control"] == "no-cache"  # the page names the current hashed files
    assets = re.findall(r'(?:src|href)="(/console/assets/[^"]+)"', page.text)
    assert assets and all(re.search(r"-[A-Za-z0-9_-]{8}\.(js|css)$", a) for a in assets), assets
    for asset in assets:
        r = await http.get(asset)
        assert r.status_code == 200 and r.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert r.headers["x-content-type-options"] == "nosniff"
    assert "<script>" not in page.text  # no inline script (the policy would refuse it anyway)
    assert (await http.get("/")).headers["location"] == "/console/"


async def test_the_development_sign_in_exists_only_when_its_setting_is_on(api_settings):
    body = {"tenant_id": "acme", "agent_id": "ana", "display_name": "Ana"}
    async with running(api_settings) as api:
        assert (await api.http.post("/dev/signin", json=body)).status_code == 404
    async with running(api_settings.model_copy(update={"dev_signin": True})) as api:
        r = await api.http.post("/dev/signin", json=body)
        assert r.status_code == 200, r.text
        me = await api.http.get("/v1/me/unread", headers={"Authorization": f"Bearer {r.json()['token']}"})
        assert me.status_code == 200  # a working agent token, the agent created
        bad = await api.http.post("/dev/signin", json={**body, "tenant_id": "no spaces"})
        assert bad.status_code == 422 and bad.json()["error"]["field"].endswith("tenant_id")


def test_compose_and_kubernetes_never_turn_the_development_sign_in_on():
    deploy_files = [ROOT / "docker-compose.yml", *sorted((ROOT / "deploy").rglob("*.y*ml"))]
    assert len(deploy_files) > 1
    for path in deploy_files:
        text = Path(path).read_text()
        assert not re.search(r"DEV_SIGNIN\W+[\"']?(true|1|yes|on)", text, re.I), path
    assert ApiSettings.model_fields["dev_signin"].default is False


def test_the_development_sign_in_refuses_to_start_beyond_loopback(api_settings):
    from im_api.app import create_app

    with pytest.raises(SystemExit, match="loopback"):
        create_app(api_settings.model_copy(update={"dev_signin": True, "host": "0.0.0.0"}))
    assert create_app(api_settings.model_copy(update={"dev_signin": True})) is not None  # 127.0.0.1
