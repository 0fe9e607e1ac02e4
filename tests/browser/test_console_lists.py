"""Long lists and an agent stepping away, in Chromium against the real stack: the thread list and
the history render a window near the viewport whatever their length, the history loads older pages
as the agent scrolls up without moving what they were reading, the list is navigable by keyboard
to its last row, and presence and read markers follow the page's visibility.

(The sizes the issue names — 1,000 threads, 10,000 messages, frames while scrolling, idle CPU —
are measured by `make bench`, scenario `console`; here the behaviour, at sizes a test can seed.)"""

from __future__ import annotations

import re

import pytest
from conftest import HIDE, ConsoleWorld, dump
from playwright.async_api import expect
from support.wait import eventually

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

THREADS = 150  # more than three screens of rows
MESSAGES = 400  # eight pages of history (50 a page)
DOM_ROWS_BOUND = 60  # what a window of a screenful plus overscan may hold; far below either size


async def seed(world: ConsoleWorld, tenant: str, asker: str, helper: str) -> tuple[str, str]:
    """`THREADS` threads between the two (one per ticket), then `MESSAGES` in the newest one; the
    ids of that one and of the oldest."""
    s = world.stack

    async def post(client, path: str, body: dict) -> dict:
        r = await client.post(path, json=body)
        assert r.status_code in (200, 201), r.text
        return r.json()

    async with s.client(s.token(tenant, asker)) as a, s.client(s.token(tenant, helper)) as h:
        started = []
        for i in range(1, THREADS):  # one after the other: T-1 is the oldest
            started.append((await post(a, "/v1/conversations", {
                "participant_ids": [helper], "related": {"type": "ticket", "id": f"T-{i}", "title": f"Case {i}"}}))["id"])
        conv = (await post(a, "/v1/conversations", {
            "participant_ids": [helper], "related": {"type": "chat", "id": "C-LONG", "title": "A long one"}}))["id"]
        for start in range(1, MESSAGES + 1, 50):  # in order, a page at a time: seq i holds "message i"
            for i in range(start, min(start + 50, MESSAGES + 1)):
                await post(a if i % 2 else h, f"/v1/conversations/{conv}/messages",
                           {"body": f"message {i}" + (" with a longer line of text to wrap" * (i % 3)),
                            "client_msg_id": f"m{i}"})
    return conv, started[0]


VISIBLE = """t => {
    const h = t.renderRoot.querySelector('.history'); const box = h.getBoundingClientRect();
    return [...h.querySelectorAll('.row')].filter(r => { const b = r.getBoundingClientRect();
        return b.bottom > box.top && b.top < box.bottom; }).map(r => Number(r.dataset.seq)); }"""


async def visible_seqs(thread) -> list[int]:
    """The seqs of the messages at least partly inside the history's viewport."""
    return await thread.evaluate(VISIBLE)


async def scroll_to(thread, top: int) -> None:
    await thread.evaluate("(t, top) => { t.renderRoot.querySelector('.history').scrollTop = top }", top)


async def scroll_top(thread) -> int:
    return await thread.evaluate("t => t.renderRoot.querySelector('.history').scrollTop")


async def settle(thread) -> None:
    """Two animation frames: whatever the page scheduled for the next frame has run."""
    await thread.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")


# The console asks for older messages within 600 px of the history's top (LOAD_OLDER_WITHIN).
ABOVE_THE_LOAD_LINE, BELOW_THE_LOAD_LINE = 700, 500


@pytest.mark.timeout(420)
async def test_long_lists_render_a_window_and_history_loads_upward_in_place(world: ConsoleWorld):
    await world.create_agent("mo", "Mo Helper")
    await world.create_agent("lee", "Lee Long")
    conv, oldest = await seed(world, "acme", "lee", "mo")
    lee = await world.sign_in("lee", "Lee Long")
    console = lee.console()
    rows = console.locator("ol > li[data-conversation]")

    # The whole list is known (aria-setsize), a window of it is in the DOM.
    await expect(rows.first).to_have_attribute("aria-setsize", str(THREADS))
    assert 0 < await rows.count() <= DOM_ROWS_BOUND, await rows.count()
    await expect(rows.first).to_contain_text("Chat C-LONG")

    # One Tab stop, arrows and End/Home walk the list: the last (oldest) row is reached and shown.
    first = rows.first.locator("button")
    await first.focus()
    await lee.page.keyboard.press("End")
    focused = console.locator("ol > li[data-conversation]:has(button:focus)")
    await expect(focused).to_have_attribute("aria-posinset", str(THREADS))
    await expect(focused).to_contain_text(re.compile(r"Ticket T-1\b"))
    await expect(focused).to_be_in_viewport()
    await lee.page.keyboard.press("ArrowUp")
    await expect(focused).to_have_attribute("aria-posinset", str(THREADS - 1))
    assert await rows.count() <= DOM_ROWS_BOUND
    await lee.page.keyboard.press("Home")
    await expect(focused).to_have_attribute("aria-posinset", "1")

    # At the top of the list, new activity in the oldest thread rises into view (the list keeps its
    # scroll position, not the row that was at the top).
    s = world.stack
    async with s.client(s.token("acme", "mo")) as mo:
        r = await mo.post(f"/v1/conversations/{oldest}/messages", json={"body": "an old case again", "client_msg_id": "o1"})
        assert r.status_code == 201, r.text
    risen = console.locator(f"ol > li[data-conversation='{oldest}']")
    await expect(risen).to_have_attribute("aria-posinset", "1")
    await expect(risen).to_be_in_viewport()
    await expect(risen).to_contain_text("an old case again")
    await risen.locator("button").focus()
    await lee.page.keyboard.press("ArrowDown")  # the long thread, now second
    await expect(focused).to_have_attribute("aria-posinset", "2")
    await lee.page.keyboard.press("Enter")

    # The newest page, at the bottom.
    thread = console.locator("im-thread")
    await expect(thread).to_have_attribute("conversation-id", conv)
    await expect(thread.locator(".bubble", has_text=f"message {MESSAGES}")).to_be_in_viewport()
    await lee.shot("9-long-history")

    # Scrolling up loads older pages; each time what the agent was looking at stays in view.
    async def held() -> list[int]:
        return await thread.evaluate("t => t.store.thread(t.conversationId).messages.map(m => m.seq)")

    pages = 0
    while (loaded := await held())[0] != 1:
        # Near the top, not asking yet: what the agent reads there, once rendered and settled (the
        # last load's measurements may still move the view for a frame or two).
        async def near_the_top() -> list[int]:
            await settle(thread)
            if await scroll_top(thread) != ABOVE_THE_LOAD_LINE:
                await scroll_to(thread, ABOVE_THE_LOAD_LINE)
                return []
            return await visible_seqs(thread)

        top_seen = (await eventually(near_the_top, message="nothing in view near the top"))[0]
        # 200 px further up: the older page is asked for and lands above what is in view.
        await scroll_to(thread, BELOW_THE_LOAD_LINE)
        await eventually(lambda: held_first(thread, below=loaded[0]), timeout=15,
                         message=f"no page older than seq {loaded[0]} loaded")
        await eventually(lambda: seen(thread, top_seen), timeout=15,
                         message=lambda: f"seq {top_seen} left the view while older messages loaded")
        assert await console.locator("im-thread .row").count() <= DOM_ROWS_BOUND
        pages += 1
    # Page by page, not all at once (each round above loaded at least one older page; on a slow
    # machine a round's scroll may legitimately bring two).
    assert pages >= 2, pages
    assert await held() == list(range(1, MESSAGES + 1))
    await scroll_to(thread, 0)
    await eventually(lambda: seen(thread, 1), message="the first message never came into view")

    # Back to the bottom: the newest message again, and a new one follows live.
    await thread.evaluate("t => { const h = t.renderRoot.querySelector('.history'); h.scrollTop = h.scrollHeight }")
    await eventually(lambda: seen(thread, MESSAGES), timeout=15, message="back at the bottom, the newest is not in view")
    async with s.client(s.token("acme", "mo")) as mo:
        r = await mo.post(f"/v1/conversations/{conv}/messages", json={"body": "one more", "client_msg_id": "late"})
        assert r.status_code == 201, r.text
    await expect(thread.locator(".bubble", has_text="one more")).to_be_in_viewport()
    assert await console.locator("im-thread .row").count() <= DOM_ROWS_BOUND
    assert (await lee.axe("long history")) == [], dump(await lee.axe("long history"))


async def held_first(thread, below: int) -> bool:
    return await thread.evaluate("t => t.store.thread(t.conversationId).messages[0]?.seq ?? 0") < below


async def seen(thread, seq: int) -> bool:
    return seq in await visible_seqs(thread)


@pytest.mark.timeout(300)
async def test_presence_and_read_markers_follow_the_pages_visibility(world: ConsoleWorld):
    """Headless Chromium never hides a page on its own, so the test does what the browser does when
    the agent switches tabs: `visibilityState` turns hidden and `visibilitychange` fires."""
    ana = await world.sign_in("ana", "Ana Silva")
    ben = await world.sign_in("ben", "Ben Okafor")
    await ana.console().locator(".bar button.primary").click()
    await ana.open_picker_and_pick(ana.console(), "Ben Okafor")
    await ana.send(ana.console(), "Are you there?")
    await ben.console().locator("ol li button", has_text="Are you there?").click()
    ana_dot = ben.console().locator("im-thread .person", has_text="Ana Silva").locator(".dot")
    await expect(ana_dot).to_have_class("dot online")

    # Ana's tab goes to the background: she shows away; back in front: online again.
    await ana.page.evaluate(HIDE, True)
    await expect(ana_dot).to_have_class("dot away", timeout=15_000)
    # A reply that arrives while her thread is not in front of her stays unread.
    await ben.send(ben.console(), "Yes, what is it?")
    await expect(ana.console().locator("im-thread .bubble", has_text="what is it")).to_be_attached()
    await expect(ana.page.locator("nav im-unread-badge .badge")).to_have_text("1")
    await ana.page.evaluate(HIDE, False)
    await expect(ana_dot).to_have_class("dot online", timeout=15_000)
    await expect(ana.page.locator("nav im-unread-badge .badge")).to_have_count(0)  # read once seen
    await expect(ben.console().locator("im-thread .seen")).to_contain_text("Ana Silva")
