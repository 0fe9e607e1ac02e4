// Edited and deleted messages (src/message-changes.ts), without a browser.
import assert from "node:assert/strict";
import { test } from "node:test";
import {
  DEFAULT_EDIT_WINDOW_MS,
  editable,
  isDeleted,
  isEdited,
  mergeBySeq,
  narrowWindow,
  newer,
  nextExpiry,
  tombstoneText,
  replaceBySeq,
  withPreview,
} from "../src/message-changes.js";

const T0 = Date.parse("2026-01-05T10:00:00Z");
const at = (minutes: number) => new Date(T0 + minutes * 60_000).toISOString();

interface M {
  conversation_id: string;
  seq: number;
  sender_id: string;
  kind: "text" | "system";
  body: string;
  created_at: string;
  edited_at: string | null;
  deleted_at: string | null;
  redacted_at?: string | null;
}

function msg(seq: number, over: Partial<M> = {}): M {
  return { conversation_id: "c1", seq, sender_id: "ana", kind: "text", body: `message ${seq}`, created_at: at(seq),
    edited_at: null, deleted_at: null, ...over };
}
const edited = (seq: number, minute: number, body = `edited ${seq}`) => msg(seq, { body, edited_at: at(minute) });
const deleted = (seq: number, minute: number) => msg(seq, { body: "", deleted_at: at(minute) });

test("edited and deleted, as the server marks them", () => {
  assert.equal(isEdited(msg(1)), false);
  assert.equal(isEdited(edited(1, 3)), true);
  assert.equal(isDeleted(deleted(1, 3)), true);
  assert.equal(isEdited({ ...deleted(1, 4), edited_at: at(3) }), false); // a tombstone shows no "(edited)"
  assert.equal(isDeleted({ ...msg(1), deleted_at: undefined }), false); // HTTP may omit the fields
});

test("the current version: deleted beats edited beats posted; a later edit beats an earlier one", () => {
  assert.equal(newer(undefined, msg(1)).body, "message 1");
  assert.equal(newer(edited(1, 3), msg(1)).body, "edited 1"); // a page read before the edit
  assert.equal(newer(msg(1), edited(1, 3)).body, "edited 1");
  assert.equal(newer(edited(1, 5, "second"), edited(1, 3, "first")).body, "second");
  assert.equal(newer(edited(1, 3, "first"), edited(1, 5, "second")).body, "second");
  assert.equal(newer(deleted(1, 4), edited(1, 6)).deleted_at, at(4)); // nothing comes back from a deletion
  assert.equal(newer(edited(1, 3), deleted(1, 4)).body, "");
  const same = edited(1, 3, "again");
  assert.equal(newer(edited(1, 3), same), same); // a tie: the incoming copy
});

test("a redaction comes last, even of a message deleted earlier, and says so", () => {
  const redacted = msg(1, { body: "", deleted_at: at(4), redacted_at: at(8) });
  assert.equal(newer(redacted, deleted(1, 4)), redacted); // the deletion's late copy changes nothing
  assert.equal(newer(deleted(1, 4), redacted), redacted);
  assert.equal(newer(redacted, edited(1, 9)).redacted_at, at(8));
  assert.equal(tombstoneText(redacted), "Message removed by an admin");
  assert.equal(tombstoneText(deleted(1, 4)), "Message deleted");
});

test("a message.updated replaces the message of its seq, and only that one", () => {
  const history = [msg(1), msg(2), msg(3)];
  const next = replaceBySeq(history, edited(2, 9));
  assert.notEqual(next, history); // a new array: the windowing sees the change
  assert.deepEqual(next.map((m) => m.body), ["message 1", "edited 2", "message 3"]);
  assert.equal(next[0], history[0]);
  assert.deepEqual(history.map((m) => m.body), ["message 1", "message 2", "message 3"]); // not mutated
  assert.deepEqual(replaceBySeq(next, deleted(3, 10)).map((m) => m.body), ["message 1", "edited 2", ""]);
});

test("a message.updated for a message not loaded adds nothing (no gap in the history); an older one changes nothing", () => {
  const history = [msg(10), msg(11)];
  assert.equal(replaceBySeq(history, edited(3, 20)), history);
  assert.equal(replaceBySeq(history, edited(12, 20)), history);
  assert.equal(replaceBySeq([], edited(1, 2)).length, 0);
  const gone = [msg(10), deleted(11, 30)];
  assert.equal(replaceBySeq(gone, edited(11, 20)), gone); // a late edit frame cannot bring a deleted body back
});

test("merging a page: new seqs in order, each message its current version, the changes seen live winning", () => {
  const history = [edited(3, 20), msg(4)];
  const page = [msg(1), msg(2), msg(3), msg(4)]; // read before the edit of 3
  const revised = new Map([[2, deleted(2, 25)]]); // seen live while the page was on its way
  const merged = mergeBySeq(history, page, revised);
  assert.deepEqual(merged.map((m) => m.seq), [1, 2, 3, 4]);
  assert.deepEqual(merged.map((m) => m.body), ["message 1", "", "edited 3", "message 4"]);
  assert.deepEqual(mergeBySeq([msg(2)], [msg(1)]).map((m) => m.seq), [1, 2]);
  assert.deepEqual(mergeBySeq([msg(1)], [edited(1, 5)]).map((m) => m.body), ["edited 1"]);
});

test("the list's preview follows a change of the thread's last message only", () => {
  const thread = { id: "c1", last_message: msg(5) };
  assert.equal(withPreview(thread, edited(5, 9)).last_message?.body, "edited 5");
  assert.equal(withPreview(thread, deleted(5, 9)).last_message?.deleted_at, at(9));
  assert.equal(withPreview(thread, edited(4, 9)), thread); // not its last message
  assert.equal(withPreview(thread, { ...edited(5, 9), conversation_id: "c2" }), thread);
  assert.equal(withPreview({ id: "c1", last_message: null }, edited(5, 9)).last_message, null);
  const gone = { id: "c1", last_message: deleted(5, 9) };
  assert.equal(withPreview(gone, edited(5, 8)), gone);
});

test("Edit and Delete are offered on the agent's own text messages within the window", () => {
  const now = T0 + 10 * 60_000; // 10:10
  const w = DEFAULT_EDIT_WINDOW_MS;
  assert.equal(w, 15 * 60_000);
  assert.equal(editable(msg(5), "ana", now, w), true); // posted 10:05
  assert.equal(editable(msg(5), "ben", now, w), false); // someone else's
  assert.equal(editable(msg(5, { kind: "system" }), "ana", now, w), false);
  assert.equal(editable(deleted(5, 6), "ana", now, w), false);
  assert.equal(editable(edited(5, 6), "ana", now, w), true); // the window runs from posting, edited or not
  assert.equal(editable(msg(5), "ana", T0 + 20 * 60_000, w), false); // exactly 15 minutes: gone
  assert.equal(editable(msg(5), "ana", T0 + 20 * 60_000 - 1, w), true);
  assert.equal(editable(msg(5, { created_at: "not a time" }), "ana", now, w), false);
  assert.equal(editable(msg(5), "ana", now, 0), false);
});

test("the next expiry: when the soonest of the agent's editable messages leaves the window", () => {
  const w = DEFAULT_EDIT_WINDOW_MS;
  const history = [msg(1), msg(2, { sender_id: "ben" }), msg(3), deleted(4, 5), msg(5)];
  const now = T0 + 10 * 60_000;
  assert.equal(nextExpiry(history, "ana", now, w), T0 + 16 * 60_000); // seq 1 at 10:01 → 10:16
  assert.equal(nextExpiry(history, "ana", T0 + 17 * 60_000, w), T0 + 18 * 60_000); // seq 3 next
  assert.equal(nextExpiry(history, "ana", T0 + 21 * 60_000, w), null);
  assert.equal(nextExpiry(history, "ben", now, w), T0 + 17 * 60_000);
  assert.equal(nextExpiry([], "ana", now, w), null);
});

test("a refusal as too late narrows the window to less than that message's age", () => {
  const w = DEFAULT_EDIT_WINDOW_MS;
  const now = T0 + 10 * 60_000;
  const refusedAt = narrowWindow(w, msg(5), now); // posted 5 minutes before the refusal
  assert.equal(refusedAt, 5 * 60_000);
  assert.equal(editable(msg(5), "ana", now, refusedAt), false);
  assert.equal(editable(msg(4), "ana", now, refusedAt), false); // older: refused as well
  assert.equal(editable(msg(9), "ana", now, refusedAt), true); // a minute old: still offered
  assert.equal(narrowWindow(refusedAt, msg(2), now), refusedAt); // an older refusal says nothing new
  assert.equal(narrowWindow(w, msg(5, { created_at: "?" }), now), w);
  assert.equal(narrowWindow(w, msg(11), now), 0); // posted "after now" (clock skew): offer nothing
});
