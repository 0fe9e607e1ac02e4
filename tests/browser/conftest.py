"""The console in a real browser: Debian's Chromium driven by Playwright, against the real stack
(im-api serving the built console with the development sign-in, the gateway, the worker,
presence, Kafka and MongoDB)."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect
from support.stack import Stack, start_stack

ROOT = Path(__file__).resolve().parents[2]
CONSOLE_DIST = ROOT / "clients" / "console" / "dist"
AXE = ROOT / "clients" / "console" / "node_modules" / "axe-core" / "axe.min.js"
# Headless Chromium never hides a page on its own: what the browser does when the agent switches
# tabs (`visibilityState` turns hidden, `visibilitychange` fires). page.evaluate(HIDE, True/False).
HIDE = """hidden => {
    Object.defineProperty(document, 'visibilityState', {configurable: true, get: () => hidden ? 'hidden' : 'visible'});
    document.dispatchEvent(new Event('visibilitychange'));
}"""
CHROMIUM = "/usr/bin/chromium"
# Every test writes its screens here; docs/screenshots/ keeps one of each flow (see the README).
SHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
WIDE = {"width": 1280, "height": 800}
# Chromium itself logs every refused WebSocket connect (while the gateway is down and the client
# reconnects): the browser's message, not the console's.
BROWSER_OWN_NETWORK_ERROR = re.compile(r"^WebSocket connection to '.*' failed: .*ERR_CONNECTION_REFUSED")


@dataclass
class Agent:
    """One signed-in agent: a browser context of its own (its own storage, like another machine)."""

    name: str
    agent_id: str
    tenant: str
    context: BrowserContext
    page: Page
    problems: list[str] = field(default_factory=list)
    read_calls: int = 0  # POST .../read: at most one per message seen (never a storm)

    def console(self):
        return self.page.locator("im-console")

    async def goto(self, route: str) -> None:
        await self.page.evaluate("r => { location.hash = r }", route)

    async def open_picker_and_pick(self, scope, *names: str) -> None:
        """In the picker that `scope`'s button opened: tick each agent by name, then Start."""
        picker = scope.locator("im-agent-picker dialog[open]")
        await expect(picker).to_be_visible()
        for name in names:
            await picker.locator("label", has_text=name).locator("input[type=checkbox]").check()
        await picker.locator("button[type=submit]").click()
        await expect(picker).to_have_count(0)

    async def send(self, scope, text: str) -> None:
        box = scope.locator("im-thread textarea#say")  # the send box (not a message being edited)
        await box.fill(text)
        await box.press("Enter")
        # Stored: shown as sent, not as pending any more.
        await expect(scope.locator("im-thread .msg.mine:not(.pending) .bubble", has_text=text)).to_be_visible()

    async def shot(self, name: str) -> None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        await self.page.screenshot(path=str(SHOTS / f"{name}.png"))

    async def axe(self, screen: str) -> list[dict]:
        """axe-core in the page: the serious and critical violations of this screen."""
        if not await self.page.evaluate("() => typeof window.axe !== 'undefined'"):
            # Evaluated through the DevTools protocol: the page's CSP (no inline script) stays on.
            await self.page.evaluate(AXE.read_text())
        result = await self.page.evaluate(
            "async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
            ".filter(v => v.impact === 'serious' || v.impact === 'critical')"
            ".map(v => ({id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map(n => n.target.join(' '))}))")
        return [dict(v, screen=screen) for v in result]


@dataclass
class ConsoleWorld:
    stack: Stack
    browser: Browser
    services: object
    agents: list[Agent] = field(default_factory=list)

    async def restart_gateway(self) -> None:
        """A new gateway process where the killed one was (same port, same settings)."""
        old = self.stack.procs["gateway0"]
        new = self.services.start("gateway0", ["-m", "im_delivery.gateway"], old.env, old.ready_url)
        self.stack.procs["gateway0"] = new
        await new.wait_ready(60)

    @property
    def url(self) -> str:
        return f"{self.stack.api_url}/console/"

    async def sign_in(self, agent_id: str, name: str, tenant: str = "acme", viewport: dict = WIDE) -> Agent:
        context = await self.browser.new_context(viewport=viewport)
        page = await context.new_page()
        agent = Agent(name, agent_id, tenant, context, page)
        page.on("pageerror", lambda e: agent.problems.append(f"page error: {e}"))

        def count_reads(request) -> None:
            if request.method == "POST" and request.url.endswith("/read"):
                agent.read_calls += 1

        page.on("request", count_reads)
        page.on("console", lambda m: agent.problems.append(f"console {m.type}: {m.text}")
                if m.type == "error" and not BROWSER_OWN_NETWORK_ERROR.search(m.text) else None)
        await page.goto(self.url)
        form = page.locator("#signin-form")
        await form.locator("input[name=tenant]").fill(tenant)
        await form.locator("input[name=agent]").fill(agent_id)
        await form.locator("input[name=name]").fill(name)
        await form.locator("button[type=submit]").click()
        await expect(page.locator("#nav")).to_be_visible()
        await expect(page.locator("im-console .bar h2")).to_have_text("Instant Messages")
        self.agents.append(agent)
        return agent

    async def create_agent(self, agent_id: str, name: str, tenant: str = "acme") -> None:
        """An agent who exists but has never opened the console (offline)."""
        async with httpx.AsyncClient(base_url=self.stack.api_url, timeout=15) as http:
            r = await http.post("/dev/signin", json={"tenant_id": tenant, "agent_id": agent_id, "display_name": name})
            assert r.status_code == 200, r.text


@pytest.fixture
async def world(services, service_env, kafka_topics, jwt_secret) -> AsyncIterator[ConsoleWorld]:
    assert (CONSOLE_DIST / "index.html").is_file(), "the console is not built: `make test` runs `make console` first"
    env = {**service_env, "IM_DELIVERY_SAFETY_POLL_S": "1.0", "IM_DELIVERY_HEARTBEAT_S": "1.0",
           "IM_RETRY_INITIAL_S": "0.05", "IM_RETRY_MAX_S": "0.5", "IM_LOG_LEVEL": "WARNING",
           "IM_PRESENCE_OFFLINE_GRACE_S": "2", "IM_API_CONSOLE_DIR": str(CONSOLE_DIST), "IM_API_DEV_SIGNIN": "true"}
    # The gateway allows the page's origin, which is im-api's own: known once its port is.
    stack = await start_stack(services, env, jwt_secret, allowed_origins_from_api=True)
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        world = ConsoleWorld(stack, browser, services)
        try:
            yield world
        finally:
            problems = [f"{a.agent_id}: {p}" for a in world.agents for p in a.problems]
            for agent in world.agents:
                await agent.context.close()
            await browser.close()
    # A console that logs errors or throws is broken even when the flow went through.
    assert not problems, "\n".join(problems[:20])


def dump(obj) -> str:
    return json.dumps(obj, indent=2)
