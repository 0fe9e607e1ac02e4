"""Every flow an agent uses, in Chromium, against the real stack: New Item → picker → send → the
other console live; Assistance on a ticket and on a live chat (Related tag, same thread again);
an offline agent coming back to the history and the badge; typing and presence; a reload; the
gateway SIGKILLed mid-conversation; another tenant seeing nothing; axe-core on every screen."""

from __future__ import annotations

import asyncio

import pytest
from conftest import ConsoleWorld, dump
from playwright.async_api import expect

pytestmark = [pytest.mark.browser, pytest.mark.e2e]


def thread_row(agent, *, containing: str):
    return agent.console().locator("ol li button", has_text=containing)


async def seqs_shown(scope) -> list[int]:
    """The seq of every message the thread has in the DOM, in page order (a window of the history
    near the viewport: long histories are virtualized)."""
    return [int(s) for s in await scope.locator("im-thread .msg[data-seq]").evaluate_all(
        "els => els.map(e => e.dataset.seq)")]


async def seqs_held(thread) -> list[int]:
    """The seq of every message the open thread's model holds (what scrolling would show)."""
    return await thread.evaluate("t => t.store.thread(t.conversationId).messages.map(m => m.seq)")


@pytest.mark.timeout(480)
async def test_every_agent_flow_in_two_consoles_and_nothing_across_tenants(world: ConsoleWorld):
    violations: list[dict] = []
    await world.create_agent("cy", "Cy Offline")  # exists, never signed in: offline
    ana = await world.sign_in("ana", "Ana Silva")
    ben = await world.sign_in("ben", "Ben Okafor")
    zed = await world.sign_in("zed", "Zed Other", tenant="globex")
    violations += await ana.axe("empty console")

    # Ben has an older thread, with Cy: the new one must come above it.
    await ben.console().locator(".bar button.primary").click()
    await ben.open_picker_and_pick(ben.console(), "Cy Offline")
    await ben.send(ben.console(), "An older thread")

    # New Item → the picker shows the online and the offline agent, each with its status.
    await ana.console().locator(".bar button.primary").click()
    picker = ana.console().locator("im-agent-picker dialog[open]")
    await expect(picker.locator("label", has_text="Ben Okafor")).to_contain_text("Online")
    await expect(picker.locator("label", has_text="Cy Offline")).to_contain_text("Offline")
    names = await picker.locator("label .name").all_inner_texts()
    assert names.index("Ben Okafor") < names.index("Cy Offline"), names  # online first
    await expect(picker.locator("label", has_text="Zed Other")).to_have_count(0)  # another tenant
    violations += await ana.axe("agent picker")
    await ana.shot("1-agent-picker")
    await ana.open_picker_and_pick(ana.console(), "Ben Okafor")
    await ana.send(ana.console(), "Hi Ben, is this customer eligible for a refund?")

    # Ben: live, at the top of his list, unread, the badge counts it.
    top = ben.console().locator("ol li button").first
    await expect(top).to_contain_text("Ana Silva")
    await expect(top).to_contain_text("eligible for a refund")
    await expect(ben.page.locator("nav im-unread-badge .badge")).to_have_text("1")
    await ben.shot("2-new-message-live")
    await top.click()
    await expect(ben.console().locator("im-thread .bubble", has_text="eligible for a refund")).to_be_visible()
    await expect(ben.page.locator("nav im-unread-badge .badge")).to_have_count(0)  # read now
    # Presence and typing: Ben sees Ana online, and that she is typing.
    await expect(ben.console().locator("im-thread .person", has_text="Ana Silva").locator(".dot")).to_have_class(
        "dot online")
    # Typed key by key, as a person does (typing frames go out at most every 2 s while typing).
    await ana.console().locator("im-thread textarea").press_sequentially("Let me check that", delay=150)
    await expect(ben.console().locator("im-thread .typing")).to_have_text("Ana Silva is typing…", timeout=15_000)
    await ana.console().locator("im-thread textarea").fill("")
    await ben.send(ben.console(), "Yes, within 30 days.")
    await expect(ana.console().locator("im-thread .bubble", has_text="within 30 days")).to_be_visible()
    await expect(ana.console().locator("im-thread .seen")).to_contain_text("Ben Okafor")
    violations += await ben.axe("open thread")
    await ben.shot("3-open-thread")

    # Assistance on the sample ticket page: a window tied to the ticket by its Related tag.
    await ana.goto("#/ticket/T-1001")
    ticket = ana.page.locator("#page-ticket im-assist-button")
    await ticket.locator("button.assist").click()
    await ana.open_picker_and_pick(ticket, "Ben Okafor", "Cy Offline")
    window = ticket.locator(".window")
    tag = window.locator("im-thread a.related")
    await expect(tag).to_have_text("Related: Ticket T-1001 · Printer on fire")
    await ana.send(ticket, "Printer on fire: who knows this model?")
    first_id = await window.locator("im-thread").get_attribute("conversation-id")
    violations += await ana.axe("assistance window")
    await ana.shot("4-assistance-ticket")
    # Pressing it again with the same agents opens the same thread.
    await window.locator(".title button").click()
    await ticket.locator("button.assist").click()
    await ana.open_picker_and_pick(ticket, "Ben Okafor", "Cy Offline")
    assert await window.locator("im-thread").get_attribute("conversation-id") == first_id
    await expect(window.locator("im-thread .bubble", has_text="who knows this model")).to_be_visible()
    # The Related tag links back to the item through the host's URL template.
    await ana.goto("#/im")
    await thread_row(ana, containing="Ticket T-1001").click()
    await ana.console().locator("im-thread a.related").click()
    await expect(ana.page.locator("#page-ticket")).to_be_visible()
    assert ana.page.url.endswith("#/ticket/T-1001")

    # The live chat page likewise; Ben's console shows the thread with its tag.
    await ana.goto("#/chat/C-2001")
    chat = ana.page.locator("#page-chat im-assist-button")
    await chat.locator("button.assist").click()
    await ana.open_picker_and_pick(chat, "Ben Okafor")
    await expect(chat.locator(".window im-thread a.related")).to_have_text("Related: Live chat C-2001 · Refund question")
    await ana.send(chat, "The customer is waiting on chat, quick question")
    await expect(thread_row(ben, containing="Chat C-2001")).to_be_visible()
    await ana.shot("5-assistance-live-chat")

    # Cy, offline all along, signs in: the history and the unread badge are waiting.
    cy = await world.sign_in("cy", "Cy Offline")
    await expect(cy.page.locator("nav im-unread-badge .badge")).to_have_text("2")
    await thread_row(cy, containing="Ticket T-1001").click()
    await expect(cy.console().locator("im-thread a.related")).to_contain_text("Ticket T-1001")
    await expect(cy.console().locator("im-thread .bubble", has_text="who knows this model")).to_be_visible()
    await cy.shot("6-offline-agent-returns")

    # A reload keeps everything: still signed in, the threads, the open thread's history.
    await ben.page.reload()
    await expect(ben.console().locator("ol li button")).to_have_count(4)
    await thread_row(ben, containing="within 30 days").click()
    await expect(ben.console().locator("im-thread .bubble", has_text="eligible for a refund")).to_be_visible()

    # The gateway is SIGKILLed mid-conversation: both consoles reconnect, every message shown once.
    await ana.goto("#/im")
    await thread_row(ana, containing="within 30 days").click()
    for i in range(1, 4):
        await ana.send(ana.console(), f"before the crash {i}")
    await asyncio.to_thread(world.stack.procs["gateway0"].kill)  # SIGKILL: no goodbye to anyone
    for i in range(1, 4):
        await ana.send(ana.console(), f"during the outage {i}")  # over HTTP: accepted meanwhile
    await world.restart_gateway()
    for i in range(1, 4):
        await ana.send(ana.console(), f"after the restart {i}")
    await expect(ben.console().locator("im-thread .bubble", has_text="after the restart 3")).to_be_visible(timeout=30_000)
    held = await seqs_held(ben.console().locator("im-thread"))
    assert held == list(range(1, len(held) + 1)), dump(held)  # each message once, none missing
    shown = await seqs_shown(ben.console())
    assert shown and shown == held[-len(shown):], dump(shown)  # the newest ones, in order
    for text in ("before the crash 1", "during the outage 2", "after the restart 3"):
        await expect(ben.console().locator("im-thread .bubble", has_text=text)).to_have_count(1)
    typed = [f"{phase} {i}" for phase in ("before the crash", "during the outage", "after the restart")
             for i in range(1, 4)]
    bubbles = await ben.console().locator("im-thread .bubble").all_inner_texts()
    assert [b for b in bubbles if b in typed] == typed, dump(bubbles)  # in the order Ana typed them
    await ben.shot("7-after-gateway-restart")

    # Read markers move once per message read, never in a loop (ben read ~12 messages as they came).
    assert 0 < ben.read_calls <= 20, ben.read_calls

    # The other tenant's agent saw none of it.
    await expect(zed.console().locator("ol li button")).to_have_count(0)
    await expect(zed.page.locator("nav im-unread-badge .badge")).to_have_count(0)

    # Narrow screens: one pane at a time, still usable.
    await ben.page.set_viewport_size({"width": 360, "height": 740})
    await expect(ben.console().locator("im-thread textarea")).to_be_visible()
    await ben.console().locator("main .back").click()
    await expect(ben.console().locator("ol li button").first).to_be_visible()
    violations += await ben.axe("thread list at 360 px")
    await ben.shot("8-narrow-360px")

    assert violations == [], dump(violations)


@pytest.mark.timeout(300)
async def test_the_picker_works_by_keyboard_alone(world: ConsoleWorld):
    await world.create_agent("bea", "Bea Keys")
    kim = await world.sign_in("kim", "Kim Board")
    page = kim.page
    button = kim.console().locator(".bar button.primary")
    await button.focus()
    await page.keyboard.press("Enter")
    dialog = kim.console().locator("im-agent-picker dialog[open]")
    await expect(dialog).to_be_visible()
    await expect(dialog.locator("input[type=search]")).to_be_focused()  # focus moves into the modal
    await page.keyboard.type("Bea")
    await expect(dialog.locator("label .name")).to_have_text(["Bea Keys"])
    await page.keyboard.press("Tab")  # to the first agent's checkbox
    await page.keyboard.press("Space")
    await expect(dialog.locator("footer .status")).to_have_text("Selected: Bea Keys")
    await page.keyboard.press("Escape")  # closes without starting anything
    await expect(dialog).to_have_count(0)
    await expect(button).to_be_focused()  # focus returns to what opened it
    await expect(kim.console().locator("ol li button")).to_have_count(0)
    # Again, to the end: Enter on Start.
    await page.keyboard.press("Enter")
    await page.keyboard.type("Bea")
    await expect(dialog.locator("label .name")).to_have_text(["Bea Keys"])
    await page.keyboard.press("Tab")
    await page.keyboard.press("Space")
    await dialog.locator("button[type=submit]").focus()
    await page.keyboard.press("Enter")
    await expect(kim.console().locator("im-thread textarea")).to_be_focused()
    await page.keyboard.type("Typed without a mouse")
    await page.keyboard.press("Enter")
    await expect(kim.console().locator("im-thread .bubble", has_text="Typed without a mouse")).to_be_visible()
