"""Browser notifications in Chromium against the real stack: a message that arrives while the
console's tab is in the background shows one (after the agent allowed them), a muted thread and
do-not-disturb show none, clicking one opens its thread, and a notification's link opens it too."""

from __future__ import annotations

import pytest
from conftest import HIDE, ConsoleWorld
from playwright.async_api import expect
from support.wait import eventually

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

# Records every notification the page shows, and shows it (the real constructor runs).
SPY = """() => {
    const Real = window.Notification;
    window.__shown = [];
    function Spy(title, options) {
        const n = new Real(title, options);
        window.__shown.push({title, body: options && options.body, tag: options && options.tag, n});
        return n;
    }
    Object.defineProperty(Spy, 'permission', {get: () => Real.permission});
    Spy.requestPermission = (...a) => Real.requestPermission(...a);
    window.Notification = Spy;
}"""

SHOWN = "() => window.__shown.map(({title, body, tag}) => ({title, body, tag}))"


@pytest.mark.timeout(300)
async def test_browser_notifications_in_the_background_respect_mute_and_do_not_disturb(world: ConsoleWorld):
    ana = await world.sign_in("ana", "Ana Silva")
    ben = await world.sign_in("ben", "Ben Okafor")
    # Before she allows them the console offers to ask (the browser asks only from a click), or
    # says they are blocked where the browser's policy denies them.
    before = await ana.page.evaluate("() => Notification.permission")
    offer = ana.console().locator(".notify button", has_text="Notify me in this browser")
    blocked = ana.console().locator(".notify .hint", has_text="blocked")
    await expect(offer if before == "default" else blocked).to_be_visible()
    await ana.context.grant_permissions(["notifications"], origin=world.stack.api_url)
    await ana.page.evaluate(SPY)
    assert await ana.page.evaluate("() => Notification.permission") == "granted"
    await expect(offer).to_have_count(0)  # the console follows the browser's permission

    await ben.console().locator(".bar button.primary").click()
    await ben.open_picker_and_pick(ben.console(), "Ana Silva")
    await ben.send(ben.console(), "Hello while you look")
    row = ana.console().locator("ol li button", has_text="Hello while you look")
    await expect(row).to_be_visible()
    cid = await row.get_attribute("data-conversation")
    assert await ana.page.evaluate(SHOWN) == []  # her tab is in front: nothing to notify

    # In the background: one notification, from Ben, with the message; a click opens the thread.
    await ana.page.evaluate(HIDE, True)
    await ben.send(ben.console(), "Need you on this")
    shown = await eventually(lambda: ana.page.evaluate(SHOWN), timeout=15, message="no notification shown")
    # The tenant has not allowed message text in notifications: who and where only.
    assert shown == [{"title": "Ben Okafor", "body": "New message", "tag": cid}]
    await ana.page.evaluate(HIDE, False)
    await expect(ana.console().locator("im-thread")).not_to_have_attribute("conversation-id", cid)
    await ana.page.evaluate("() => window.__shown[0].n.onclick()")
    await expect(ana.console().locator("im-thread")).to_have_attribute("conversation-id", cid)

    # Muted: the message arrives, no notification.
    mute = ana.console().locator("im-thread button.mute")
    await mute.click()
    await expect(mute).to_have_attribute("aria-pressed", "true")
    await ana.page.evaluate(HIDE, True)
    await ben.send(ben.console(), "Muted one")
    await expect(ana.console().locator("im-thread .bubble", has_text="Muted one")).to_be_attached()
    assert len(await ana.page.evaluate(SHOWN)) == 1
    await ana.page.evaluate(HIDE, False)
    await mute.click()
    await expect(mute).to_have_attribute("aria-pressed", "false")

    # Do not disturb: the same.
    dnd = ana.console().locator(".notify button[aria-pressed]")
    await dnd.click()
    await expect(dnd).to_have_attribute("aria-pressed", "true")
    await ana.shot("9-do-not-disturb")
    assert await ana.axe("do not disturb") == []
    await ana.page.evaluate(HIDE, True)
    await ben.send(ben.console(), "During do not disturb")
    await expect(ana.console().locator("im-thread .bubble", has_text="During do not disturb")).to_be_attached()
    assert len(await ana.page.evaluate(SHOWN)) == 1
    await ana.page.evaluate(HIDE, False)
    await dnd.click()
    await expect(dnd).to_have_attribute("aria-pressed", "false")

    # The server kept her choices.
    async with world.stack.client(world.stack.token("acme", "ana")) as c:
        assert (await c.get("/v1/me/notification-preferences")).json() == {
            "do_not_disturb": False, "muted_conversation_ids": [], "message_previews": False}
    # The tenant allows message text; unmuted and disturbable again, with the same thread open,
    # she is notified again, now with the text (so the two silences above were the mute and DND).
    async with world.stack.client(world.stack.token("acme", "root", "admin")) as c:
        r = await c.put("/v1/admin/notification-settings", json={"include_bodies": True})
        assert r.status_code == 200, r.text
    async with ana.page.expect_response(lambda r: r.url.endswith("/v1/me/notification-preferences")):
        await ana.page.evaluate(HIDE, True)  # going to the background reads her choices again
    await ben.send(ben.console(), "With the text now")
    shown = await eventually(lambda: _at_least(ana.page.evaluate(SHOWN), 2), timeout=15,
                             message="no second notification")
    assert shown[1] == {"title": "Ben Okafor", "body": "With the text now", "tag": cid}
    await ana.page.evaluate(HIDE, False)

    # A notification's link ("#/im/<id>", the notifier's thread URL) opens the thread.
    await ana.goto("#/im")
    await ana.page.reload()
    await expect(ana.console().locator("im-thread")).not_to_have_attribute("conversation-id", cid)
    await ana.goto(f"#/im/{cid}")
    await expect(ana.console().locator("im-thread")).to_have_attribute("conversation-id", cid)
    await expect(ana.console().locator("im-thread .bubble", has_text="Need you on this")).to_be_visible()


async def _at_least(shown, n: int):
    got = await shown
    return got if len(got) >= n else None
