/** Teams as recipients, through the library against the real stack (started by
 * tests/clients/test_js_client.py): the offer reaches the members' streams, one claim wins, the
 * loser is told who won, and a release offers it again. */

import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, test } from "node:test";
import { ApiError, type HelpdeskIm, type QueuedFrame, type Team } from "../src/index.js";
import { clientFor, env, mint, until } from "./support.js";

const open: HelpdeskIm[] = [];
after(() => open.forEach((im) => im.close()));

/** An admin's call (teams and agents are theirs to manage), outside the library on purpose. */
async function admin<T>(method: string, path: string, body?: unknown): Promise<T> {
  const r = await fetch(`${env.api}${path}`, {
    method,
    headers: { Authorization: `Bearer ${mint("root", { role: "admin" })}`, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  if (!r.ok) throw new Error(`${method} ${path}: ${r.status} ${text}`);
  return (text ? JSON.parse(text) : undefined) as T;
}

/** Every team_request.* frame a stream hands over. */
function requests(im: HelpdeskIm): QueuedFrame[] {
  const seen: QueuedFrame[] = [];
  im.stream.on("frame", (f) => {
    if (f.type.startsWith("team_request.")) seen.push(f as QueuedFrame);
  });
  return seen;
}

test("a team request: offered live to the members, one claim wins, the other learns who, a release offers it again", async () => {
  await admin("PUT", "/v1/agents/cal", { display_name: "Cal" });
  const name = `Tier 2 ${randomUUID().slice(0, 8)}`;
  const created = await admin<Team>("POST", "/v1/teams", { name, member_ids: ["ben", "cal"] });

  const members = ["ben", "cal"].map((id) => {
    const { im } = clientFor(id);
    open.push(im);
    return { id, im, frames: requests(im) };
  });
  for (const m of members) m.im.stream.start((await m.im.http.conversations()).stream_cursor);
  const { im: ana } = clientFor("ana");
  open.push(ana);
  // Both members online (their streams are open), as the team list counts them.
  const team = (await until(async () => (await ana.http.teams(name.slice(0, 6))).items
    .find((t) => t.id === created.id && t.online_count === 2), "both members counted online"))!;
  assert.equal(team.member_count, 2);
  assert.equal(team.is_member, false);
  const full = await ana.http.team(team.id);
  assert.deepEqual(full.members?.map((m) => m.id).sort(), ["ben", "cal"]);

  const question = "Is this printer model covered by the extended warranty?";
  const asked = await ana.http.startConversation({
    participant_ids: [], team_ids: [team.id], related: { type: "ticket", id: "T-team" },
    first_message: { body: question, client_msg_id: randomUUID() },
  });
  assert.equal(asked.team_request?.status, "open");
  assert.equal(asked.team_request?.question, question);
  assert.deepEqual([...(asked.team_request?.offered_to ?? [])].sort(), ["ben", "cal"]);

  const [ben, cal] = members as [typeof members[0], typeof members[0]];
  for (const m of members) {
    await until(() => m.frames.some((f) => f.type === "team_request.offered" && f.request.conversation_id === asked.id),
      `the offer on ${m.id}'s stream`);
    // Listed as an offer, readable only once claimed.
    assert.ok((await m.im.http.conversations()).items.some((c) => c.id === asked.id));
    await assert.rejects(m.im.http.messages(asked.id), (e: ApiError) => e.status === 404);
  }

  const claimed = await ben.im.http.claim(asked.id);
  assert.ok(claimed.participants.some((p) => p.id === "ben"));
  assert.equal(claimed.team_request?.claimed_by?.id, "ben");
  assert.ok((await ben.im.http.messages(asked.id)).items.some((m) => m.body === question));
  await assert.rejects(cal.im.http.claim(asked.id), (e: unknown) => {
    assert.ok(e instanceof ApiError);
    assert.equal(e.status, 409);
    assert.equal(e.code, "already_claimed");
    assert.deepEqual(e.details?.claimed_by, { id: "ben", display_name: "Ben" });
    return true;
  });
  await until(() => cal.frames.some((f) => f.type === "team_request.claimed" && f.request.claimed_by?.id === "ben"),
    "cal told that ben took it");

  // The asker gives it back: ben leaves it, cal (online, not the one who had it) is offered it again.
  const released = await ana.http.release(asked.id);
  assert.equal(released.team_request?.status, "open");
  await until(() => cal.frames.some((f) => f.type === "team_request.released" && f.request.offered_to.includes("cal")),
    "cal offered it again");
  const again = await cal.im.http.claim(asked.id);
  assert.equal(again.team_request?.claimed_by?.id, "cal");
  await assert.rejects(ana.http.release(randomUUID().replaceAll("-", "")), (e: ApiError) => e.status === 404);
});
