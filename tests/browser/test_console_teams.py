"""Teams as recipients, in Chromium against the real stack: the picker shows a team with how many
of its members are online; a question asked of the team from a ticket is offered live to both
members' consoles with Claim; the first to claim gets the thread, the other sees who took it
(live, or told by the server when their console had not heard yet); the asker sees who has it and
can release it back to the team."""

from __future__ import annotations

import pytest
from conftest import Agent, ConsoleWorld, dump
from playwright.async_api import expect
from support.wait import eventually

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

QUESTION = "Is the customer's printer model covered by the extended warranty?"
# The console's store, reached from the page (the tests read it the same way elsewhere).
STREAM = "document.querySelector('im-console').store.im.stream"


async def create_team(world: ConsoleWorld, name: str, member_ids: list[str]) -> str:
    async with world.stack.client(world.stack.token("acme", "root", "admin")) as admin:
        r = await admin.post("/v1/teams", json={"name": name, "member_ids": member_ids})
        assert r.status_code == 201, r.text
        return r.json()["id"]


async def members_online(world: ConsoleWorld, team_id: str, count: int) -> None:
    """Presence reaches im-api over Kafka: wait until the team list counts the open consoles."""
    async with world.stack.client(world.stack.token("acme", "ana")) as http:
        async def counted():
            r = await http.get("/v1/teams")
            assert r.status_code == 200, r.text
            return [t for t in r.json()["items"] if t["id"] == team_id and t["online_count"] == count]
        await eventually(counted, timeout=30, message=f"the team's {count} members never counted online")


async def ask_team(asker: Agent, page: str, team: str, question: str):
    """On a ticket or chat page: Assistance → tick the team → the question → Start; the window."""
    await asker.goto(f"#/{page}")
    section = asker.page.locator(f"#page-{page.split('/')[0]} im-assist-button")
    await section.locator("button.assist").click()
    picker = section.locator("im-agent-picker dialog[open]")
    await picker.locator("#teams label", has_text=team).locator("input[type=checkbox]").check()
    start = picker.locator("button[type=submit]")
    await expect(start).to_be_disabled()  # a team is asked with a question
    await picker.locator("textarea#question").fill(question)
    await start.click()
    await expect(picker).to_have_count(0)
    return section.locator(".window")


def offer_row(agent: Agent, cid: str):
    return agent.console().locator(f"ol li[data-conversation='{cid}']")


@pytest.mark.timeout(300)
async def test_a_team_request_is_offered_to_the_members_and_one_of_them_claims_it(world: ConsoleWorld):
    violations: list[dict] = []
    ana = await world.sign_in("ana", "Ana Silva")
    ben = await world.sign_in("ben", "Ben Okafor")
    cy = await world.sign_in("cy", "Cy Nguyen")
    team_id = await create_team(world, "Tier 2", ["ben", "cy"])
    await members_online(world, team_id, 2)

    # The picker of the ticket page: the team, with its members online, above the agents.
    await ana.goto("#/ticket/T-1001")
    ticket = ana.page.locator("#page-ticket im-assist-button")
    await ticket.locator("button.assist").click()
    picker = ticket.locator("im-agent-picker dialog[open]")
    await expect(picker.locator("#teams label", has_text="Tier 2")).to_contain_text("2 online")
    await expect(picker.locator("#agents label", has_text="Ben Okafor")).to_contain_text("Online")
    await picker.locator("#teams label", has_text="Tier 2").locator("input[type=checkbox]").check()
    await expect(picker.locator("textarea#question")).to_be_visible()
    violations += await ana.axe("picker with a team")
    await picker.locator("button", has_text="Cancel").click()
    await expect(picker).to_have_count(0)

    window = await ask_team(ana, "ticket/T-1001", "Tier 2", QUESTION)
    await expect(window.locator("im-thread .request .state")).to_have_text("Waiting for Tier 2")
    await expect(window.locator("im-thread .bubble", has_text=QUESTION)).to_be_visible()
    cid = await window.locator("im-thread").get_attribute("conversation-id")

    # Both members: the offer arrives live, with the team, the asker, the question, the ticket.
    for member in (ben, cy):
        row = offer_row(member, cid)
        await expect(row).to_contain_text("Tier 2 request")
        await expect(row).to_contain_text("Ana Silva")
        await expect(row).to_contain_text(QUESTION)
        await expect(row).to_contain_text("Ticket T-1001")
        await expect(row.locator("button.claim")).to_be_visible()
        await expect(member.page.locator("nav im-unread-badge .badge")).to_have_count(0)  # an offer is not unread
    # Cy opens it: the question and Claim, no history (not hers to read yet).
    await offer_row(cy, cid).locator("button.row").click()
    await expect(cy.console().locator("im-thread .offer blockquote")).to_have_text(QUESTION)
    await expect(cy.console().locator("im-thread .offer button.claim")).to_be_visible()
    violations += await cy.axe("team request offered")
    await cy.shot("10-team-request")

    # Ben claims it from his list: the thread opens for him, with the question.
    await offer_row(ben, cid).locator("button.claim").click()
    await expect(ben.console().locator("im-thread")).to_have_attribute("conversation-id", cid)
    await expect(ben.console().locator("im-thread .bubble", has_text=QUESTION)).to_be_visible()
    await expect(ben.console().locator("im-thread .request .state")).to_have_text("Taken by you")
    await expect(offer_row(ben, cid).locator("button.claim")).to_have_count(0)
    await ben.send(ben.console(), "Yes: that model has three years.")

    # Cy, live: taken by Ben, greyed, no Claim in the list nor in the open offer.
    await expect(offer_row(cy, cid)).to_contain_text("Taken by Ben Okafor")
    await expect(offer_row(cy, cid)).to_have_class("offer taken")
    await expect(offer_row(cy, cid).locator("button.claim")).to_have_count(0)
    await expect(cy.console().locator("im-thread .offer .state")).to_have_text("Taken by Ben Okafor")
    await expect(cy.console().locator("im-thread .offer button.claim")).to_have_count(0)
    violations += await cy.axe("team request taken")

    # Ana: who has it, and his answer.
    await expect(window.locator("im-thread .request .state")).to_have_text("Taken by Ben Okafor")
    await expect(window.locator("im-thread .bubble", has_text="three years")).to_be_visible()
    violations += await ana.axe("team request taken, asker")

    # She gives it back: Ben leaves it, and Cy is offered it again.
    await window.locator("im-thread button.release").click()
    await expect(window.locator("im-thread .request .state")).to_have_text("Waiting for Tier 2")
    await expect(offer_row(cy, cid).locator("button.claim")).to_be_visible()
    await expect(offer_row(ben, cid)).to_contain_text("Offered to others now")
    # By keyboard this time: from her row, Tab reaches its Claim, Enter takes it.
    await offer_row(cy, cid).locator("button.row").focus()
    await cy.page.keyboard.press("Tab")
    await expect(offer_row(cy, cid).locator("button.claim")).to_be_focused()
    await cy.page.keyboard.press("Enter")
    await expect(cy.console().locator("im-thread .request .state")).to_have_text("Taken by you")
    await expect(cy.console().locator("im-thread textarea")).to_be_focused()
    await expect(cy.console().locator("im-thread .bubble", has_text=QUESTION)).to_be_visible()
    await expect(cy.console().locator("im-thread .bubble", has_text="three years")).to_be_visible()  # the history
    await expect(window.locator("im-thread .request .state")).to_have_text("Taken by Cy Nguyen")

    assert violations == [], dump(violations)


@pytest.mark.timeout(300)
async def test_a_claim_that_lost_the_race_says_who_won(world: ConsoleWorld):
    ana = await world.sign_in("ana", "Ana Silva")
    ben = await world.sign_in("ben", "Ben Okafor")
    cy = await world.sign_in("cy", "Cy Nguyen")
    team_id = await create_team(world, "Billing", ["ben", "cy"])
    await members_online(world, team_id, 2)
    window = await ask_team(ana, "chat/C-2001", "Billing", "Can we refund a yearly plan after 40 days?")
    cid = await window.locator("im-thread").get_attribute("conversation-id")
    await expect(offer_row(cy, cid).locator("button.claim")).to_be_visible()

    # Cy's console stops hearing (as if its frames were still on the way) while Ben takes it.
    await cy.page.evaluate(f"() => {STREAM}.stop()")
    async with world.stack.client(world.stack.token("acme", "ben")) as http:
        r = await http.post(f"/v1/conversations/{cid}/claim")
        assert r.status_code == 200, r.text
    await expect(offer_row(cy, cid).locator("button.claim")).to_be_visible()  # still offered, as far as she knows
    await offer_row(cy, cid).locator("button.claim").click()
    # The server's 409 names the winner: the row says so and stops offering it.
    await expect(offer_row(cy, cid)).to_contain_text("Taken by Ben Okafor")
    await expect(offer_row(cy, cid).locator("button.claim")).to_have_count(0)
    await expect(cy.console().locator("[role=status]", has_text="Ben Okafor already took this request")).to_be_attached()
    # Chromium logs every 4xx answer itself: this refusal is the one the test asked for.
    cy.problems.remove("console error: Failed to load resource: the server responded with a status of 409 (Conflict)")
    await cy.page.evaluate(f"() => {STREAM}.start()")
    await eventually(lambda: cy.page.evaluate(f"() => {STREAM}.state === 'open'"), message="Cy's stream back")
    # Ben's list has it as his thread, not as an offer.
    await expect(offer_row(ben, cid)).to_contain_text("Ana Silva")
    await expect(ben.console().locator("ol li.offer")).to_have_count(0)
