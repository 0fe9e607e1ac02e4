// Team requests in the thread list and the thread header (src/team-requests.ts), without a browser.
import assert from "node:assert/strict";
import { test } from "node:test";
import {
  applyRequest, offerState, type RequestLike, requestStatus, takenBy, teamNames, threadTitle, type ThreadLike,
} from "../src/team-requests.js";

const ana = { id: "ana", display_name: "Ana" };
const ben = { id: "ben", display_name: "Ben" };
const cy = { id: "cy", display_name: "Cy" };
const tier2 = { id: "t2", name: "Tier 2" };

function request(over: Partial<RequestLike> = {}): RequestLike {
  return { conversation_id: "c1", teams: [tier2], asked_by: ana, related: { type: "ticket", id: "T-1" },
    question: "Warranty?", status: "open", offered_to: ["ben", "cy"], claimed_by: null,
    opened_at: "2026-01-02T10:00:00Z", ...over };
}

const offered: ThreadLike = { id: "c1", participants: [ana], team_request: request() };
const claimedByBen = request({ status: "claimed", claimed_by: ben, offered_to: [] });

test("a request open to me is an offer I can claim; a thread of mine is no offer", () => {
  assert.equal(offerState(offered, "ben"), "claimable");
  assert.equal(offerState(offered, "ana"), null); // the asker takes part in it
  assert.equal(offerState({ id: "c2", participants: [ana, ben] }, "ben"), null); // no team request
});

test("taken by someone else it stays in the list as taken; taken by me it is my thread", () => {
  assert.equal(offerState({ ...offered, team_request: claimedByBen }, "cy"), "taken");
  assert.equal(offerState({ ...offered, team_request: claimedByBen }, "ben"), null);
  assert.equal(offerState({ id: "c1", participants: [ana, ben], team_request: claimedByBen }, "ben"), null);
});

test("open again but not to me (I handed it back) is closed, not claimable", () => {
  assert.equal(offerState({ ...offered, team_request: request({ offered_to: ["cy"] }) }, "ben"), "closed");
});

test("an offer first heard of on the stream becomes a list entry made from the request", () => {
  const made = applyRequest(undefined, request(), "ben") as ThreadLike & { last_message_at: string; unread_count: number };
  assert.equal(made.id, "c1");
  assert.deepEqual(made.participants, [ana]);
  assert.equal(made.last_message_at, "2026-01-02T10:00:00Z");
  assert.equal(made.unread_count, 0);
  assert.equal(offerState(made, "ben"), "claimable");
});

test("a claim I was never offered adds nothing; a known thread takes the newer request", () => {
  assert.equal(applyRequest(undefined, claimedByBen, "dee"), undefined);
  assert.equal(applyRequest(undefined, request({ offered_to: ["cy"] }), "ben"), undefined);
  const after = applyRequest(offered, claimedByBen, "cy")!;
  assert.equal(offerState(after, "cy"), "taken");
  const released = applyRequest(after, request({ offered_to: ["cy"] }), "cy")!;
  assert.equal(offerState(released, "cy"), "claimable"); // given back: claimable again
});

test("a lost claim (409) shows the winner at once", () => {
  const lost = takenBy(offered, ben);
  assert.equal(offerState(lost, "cy"), "taken");
  assert.deepEqual(lost.team_request?.claimed_by, ben);
  assert.deepEqual(lost.team_request?.offered_to, []);
});

test("the status line and the row's title", () => {
  assert.equal(requestStatus(request(), "ana"), "Waiting for Tier 2");
  assert.equal(requestStatus(claimedByBen, "ana"), "Taken by Ben");
  assert.equal(requestStatus(claimedByBen, "ben"), "Taken by you");
  assert.equal(threadTitle(offered, "ana"), "Tier 2");
  assert.equal(threadTitle({ id: "c1", participants: [ana, cy], team_request: request() }, "ana"), "Cy, Tier 2");
  assert.equal(threadTitle({ id: "c1", participants: [ana, ben], team_request: claimedByBen }, "ana"), "Ben");
  assert.equal(threadTitle({ id: "c1", participants: [ana] }, "ana"), "Only you");
});

test("team names read as a list", () => {
  assert.equal(teamNames({ teams: [tier2] }), "Tier 2");
  assert.equal(teamNames({ teams: [tier2, { id: "b", name: "Billing" }] }), "Tier 2 and Billing");
  assert.equal(teamNames({ teams: [tier2, { id: "b", name: "Billing" }, { id: "s", name: "Sales" }] }), "Tier 2, Billing and Sales");
});
