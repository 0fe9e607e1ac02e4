// conversation.updated merged into the known thread (src/merge.ts), without a browser.
import assert from "node:assert/strict";
import { test } from "node:test";
import { mergeConversation } from "../src/merge.js";

const ana = { id: "ana", display_name: "Ana" };
const ben = { id: "ben", display_name: "Ben" };
const thread = <O extends object>(over: O) => ({ id: "c1", last_seq: 1, unread_count: 0, participants: [ana, ben], ...over });

test("a message's update (participants null) keeps the participants known", () => {
  const { conversation, needsParticipants } = mergeConversation(thread({}), { ...thread({ last_seq: 2 }), participants: null });
  assert.deepEqual(conversation.participants, [ana, ben]);
  assert.equal(conversation.last_seq, 2);
  assert.equal(needsParticipants, false);
});

test("an update that lists participants replaces them (someone left)", () => {
  const { conversation } = mergeConversation(thread({}), thread({ participants: [ana] }));
  assert.deepEqual(conversation.participants, [ana]);
});

test("a thread first seen through a message's update asks for its participants", () => {
  const { conversation, needsParticipants } = mergeConversation(undefined, { ...thread({}), participants: null });
  assert.deepEqual(conversation.participants, []);
  assert.equal(needsParticipants, true);
});

test("the frame's thread has no team_request: the known one stays", () => {
  const request = { status: "claimed", claimed_by: ben };
  const { conversation } = mergeConversation(thread({ team_request: request }), { ...thread({ last_seq: 3 }), participants: null });
  assert.deepEqual(conversation.team_request, request);
  assert.equal(conversation.last_seq, 3);
});

test("a thread read over HTTP brings its own team_request, even none", () => {
  const { conversation } = mergeConversation(thread({ team_request: { status: "open" } }), thread({ team_request: null }));
  assert.equal(conversation.team_request, null);
});
