/** Editing and deleting messages through the library against the real stack (started by
 * tests/clients/test_js_client.py): the author's edit and deletion, what the other participant's
 * stream and HTTP show, a replay that already carries the current state, the refusals as ApiErrors
 * (someone else's message, a deleted one, an empty body, the edit window passed), an admin's
 * deletion any time. */

import assert from "node:assert/strict";
import { after, test } from "node:test";
import { ApiError, type HelpdeskIm, Http, type Message, type MessageSettings, type QueuedFrame } from "../src/index.js";
import { clientFor, env, mint, until } from "./support.js";

// A tenant of its own: the edit window set to 0 below changes nothing for the other tests, which
// run at the same time against the same stack.
const TENANT = `${env.tenant}-lifecycle`;

const open: HelpdeskIm[] = [];
after(() => open.forEach((im) => im.close()));

function agent(id: string): HelpdeskIm {
  const { im } = clientFor(id, { getToken: () => mint(id, { tenant: TENANT }) });
  open.push(im);
  return im;
}

/** The tenant's admin through the library's Http (admins delete any message, any time). */
const admin = new Http({ baseUrl: env.api, getToken: () => mint("root", { role: "admin", tenant: TENANT }) });

/** Every message.updated and conversation.updated a stream hands over. */
function changes(im: HelpdeskIm): QueuedFrame[] {
  const seen: QueuedFrame[] = [];
  im.stream.on("frame", (f) => {
    if (f.type === "message.updated" || f.type === "conversation.updated" || f.type === "message.created") seen.push(f);
  });
  return seen;
}

function refusedWith(status: number, code: string) {
  return (error: unknown) => {
    assert.ok(error instanceof ApiError, String(error));
    assert.equal(error.status, status, error.message);
    assert.equal(error.code, code, error.message);
    assert.equal(error.transient, false);
    return true;
  };
}

test("edit and delete: the author's change reaches the other participant live, over HTTP and in a replay", async () => {
  for (const [id, name] of [["ana", "Ana"], ["ben", "Ben"], ["cy", "Cy"]]) {
    await admin.request("PUT", `/v1/agents/${id}`, { display_name: name });
  }
  const ana = agent("ana");
  const ben = agent("ben");
  const cy = agent("cy");
  const benSaw = changes(ben);
  ben.stream.start((await ben.http.conversations()).stream_cursor);
  await until(() => ben.stream.state === "open", "ben's stream open");
  // Cy's stream starts only after the changes, from before the messages: a replay.
  const cyFrom = (await cy.http.conversations()).stream_cursor;

  const c = await ana.http.startConversation({ participant_ids: ["ben", "cy"], related: { type: "ticket", id: "T-edit" } });
  const first: Message = await ana.sends.send(c.id, "The refund is 40 EUR");
  const second: Message = await ana.sends.send(c.id, "Wrong thread, sorry");
  await until(() => benSaw.some((f) => f.type === "message.created" && f.message.seq === second.seq), "both messages at ben");

  // The author edits: the answer is the message as it is now, same id and seq.
  const edited = await ana.http.editMessage(c.id, first.seq, "The refund is 45 EUR");
  assert.equal(edited.id, first.id);
  assert.equal(edited.seq, first.seq);
  assert.equal(edited.body, "The refund is 45 EUR");
  assert.ok(edited.edited_at, "edited_at is set");
  assert.equal(edited.deleted_at ?? null, null);
  await until(() => benSaw.some((f) => f.type === "message.updated" && f.message.seq === first.seq
    && f.message.body === "The refund is 45 EUR" && f.message.edited_at), "ben's message.updated with the new body");
  const benRead = (await ben.http.messages(c.id)).items.find((m) => m.seq === first.seq)!;
  assert.equal(benRead.body, "The refund is 45 EUR");
  assert.equal(benRead.edited_at, edited.edited_at);

  // Only the author changes a message (the tenant's admin may delete it: below).
  await assert.rejects(ben.http.editMessage(c.id, first.seq, "Not mine to change"), refusedWith(403, "not_author"));
  await assert.rejects(ben.http.deleteMessage(c.id, first.seq), refusedWith(403, "not_author"));
  await assert.rejects(ana.http.editMessage(c.id, first.seq, "   "), (e: unknown) => e instanceof ApiError && e.status === 422);

  // The author deletes the thread's last message: a tombstone, and the thread's preview follows.
  const gone = await ana.http.deleteMessage(c.id, second.seq);
  assert.equal(gone.id, second.id);
  assert.equal(gone.body, "");
  assert.ok(gone.deleted_at, "deleted_at is set");
  await until(() => benSaw.some((f) => f.type === "message.updated" && f.message.seq === second.seq
    && f.message.deleted_at && f.message.body === ""), "ben's message.updated with the tombstone");
  await until(() => benSaw.some((f) => f.type === "conversation.updated" && f.conversation.id === c.id
    && f.conversation.last_message?.seq === second.seq && f.conversation.last_message.deleted_at),
  "ben's conversation.updated whose preview is the tombstone");
  const listed = (await ben.http.conversations()).items.find((x) => x.id === c.id)!;
  assert.equal(listed.last_message?.seq, second.seq);
  assert.equal(listed.last_message?.body, "");
  assert.ok(listed.last_message?.deleted_at);
  await assert.rejects(ana.http.editMessage(c.id, second.seq, "Back again"), refusedWith(409, "deleted"));
  await assert.rejects(ana.http.deleteMessage(c.id, second.seq), refusedWith(409, "deleted"));

  // A replay from before the messages: their message.created frames already carry them as they are.
  const cySaw = changes(cy);
  cy.stream.start(cyFrom);
  await until(() => cySaw.some((f) => f.type === "message.updated" && f.message.seq === second.seq), "cy's replay");
  const created = new Map(cySaw.flatMap((f) => (f.type === "message.created" && f.message.conversation_id === c.id
    ? [[f.message.seq, f.message] as const] : [])));
  assert.equal(created.get(first.seq)?.body, "The refund is 45 EUR");
  assert.equal(created.get(second.seq)?.body, "");
  assert.ok(created.get(second.seq)?.deleted_at);
  assert.ok(!cySaw.some((f) => JSON.stringify(f).includes("Wrong thread")), "no frame of the replay holds the deleted body");
});

test("after the edit window: 403 edit_window_passed for the author, an admin still deletes", async () => {
  for (const [id, name] of [["ana", "Ana"], ["ben", "Ben"]]) {
    await admin.request("PUT", `/v1/agents/${id}`, { display_name: name });
  }
  const ana = agent("ana");
  const c = await ana.http.startConversation({ participant_ids: ["ben"] });
  const m = await ana.sends.send(c.id, "Posted before the window closed");
  const settings = await admin.request<MessageSettings>("PUT", "/v1/admin/message-settings", { edit_window_s: 0 });
  assert.equal(settings.edit_window_s, 0);
  try {
    await assert.rejects(ana.http.editMessage(c.id, m.seq, "Too late"), (error: unknown) => {
      refusedWith(403, "edit_window_passed")(error);
      assert.equal((error as ApiError).field, "seq");
      assert.ok((error as ApiError).message.length > 0, "the server says how long the window is");
      return true;
    });
    await assert.rejects(ana.http.deleteMessage(c.id, m.seq), refusedWith(403, "edit_window_passed"));
    const unchanged = (await ana.http.messages(c.id)).items.find((x) => x.seq === m.seq)!;
    assert.equal(unchanged.body, "Posted before the window closed");
    assert.equal(unchanged.edited_at ?? null, null);
    // A tenant admin deletes any message any time (not a participant of the thread either).
    const gone = await admin.deleteMessage(c.id, m.seq);
    assert.equal(gone.body, "");
    assert.ok(gone.deleted_at);
  } finally {
    await admin.request("PUT", "/v1/admin/message-settings", { edit_window_s: 900 });
  }
});
