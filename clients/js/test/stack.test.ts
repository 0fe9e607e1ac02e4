/** The client library against the real stack (im-api, the delivery worker and gateway, presence,
 * Kafka, MongoDB), started by tests/clients/test_js_client.py. */

import assert from "node:assert/strict";
import { after, describe, test } from "node:test";
import { type HelpdeskIm, type Message, MemoryStorage } from "../src/index.js";
import { clientFor, control, mint, until } from "./support.js";

const open: HelpdeskIm[] = [];
after(() => open.forEach((im) => im.close()));

function track<T extends { im: HelpdeskIm }>(c: T): T {
  open.push(c.im);
  return c;
}

/** Every message.created a stream hands over, as (conversation, seq), in arrival order. */
function received(im: HelpdeskIm): Array<[string, number]> {
  const seen: Array<[string, number]> = [];
  im.stream.on("frame", (f) => {
    if (f.type === "message.created") seen.push([f.message.conversation_id, f.message.seq]);
  });
  return seen;
}

describe("the stream", () => {
  test("reconnects across a SIGKILLed gateway and hands over every message once, in order", async () => {
    const { im: ana } = track(clientFor("ana"));
    const { im: ben } = track(clientFor("ben"));
    const conversation = await ana.http.startConversation({ participant_ids: ["ben"] });
    const got = received(ben);
    const states: string[] = [];
    ben.stream.on("state", (s) => states.push(s));
    const errors: string[] = [];
    ben.stream.on("error", (e) => errors.push(e.message));
    ben.stream.start((await ben.http.conversations()).stream_cursor);
    await until(() => ben.stream.state === "open", "ben's stream open");
    for (let i = 1; i <= 30; i++) {
      await ana.sends.send(conversation.id, `message ${i}`);
      if (i === 12) await control("restart-gateway"); // SIGKILL mid-conversation, then a new process
    }
    const mine = () => got.filter(([c]) => c === conversation.id).map(([, seq]) => seq);
    await until(() => mine().length >= 30, "all 30 messages at ben", 60_000).catch((error: Error) => {
      throw new Error(`${error.message}; got ${JSON.stringify(mine())}; states ${states.join(",")}; cursor ${ben.stream.cursor}; errors ${errors.join(" | ")}`);
    });
    assert.deepEqual(mine(), Array.from({ length: 30 }, (_, i) => i + 1)); // once each, in order
    assert.ok(states.includes("reconnecting"), `the stream reconnected (states: ${states.join(",")})`);
  });

  test("4409: reloads over HTTP, resumes after the page's cursor and goes on", async () => {
    const { im: ana } = track(clientFor("ana"));
    const { im: ben } = track(clientFor("ben"));
    const conversation = await ana.http.startConversation({ participant_ids: ["ben"], related: { type: "ticket", id: "T-4409" } });
    const reloads: number[] = [];
    ben.stream.on("reload", (page) => reloads.push(page.stream_cursor));
    const got = received(ben);
    ben.stream.start(1_000_000_000); // a cursor the server never held: closed 4409
    await until(() => reloads.length === 1 && ben.stream.state === "open", "a reload, then an open stream");
    assert.equal(ben.stream.cursor !== null && ben.stream.cursor >= reloads[0]!, true);
    await ana.sends.send(conversation.id, "after the reload");
    await until(() => got.some(([c, seq]) => c === conversation.id && seq === 1), "the next message arrives");
    assert.equal(reloads.length, 1);
  });

  test("a socket closed 4401 when its token expires comes back with a fresh token from the host page", async () => {
    const refreshes: boolean[] = [];
    let unauthorized = 0;
    const counting: typeof fetch = async (input, init) => {
      const response = await fetch(input, init);
      if (response.status === 401) unauthorized++;
      return response;
    };
    const { im: ben } = track(clientFor("ben", {
      fetch: counting,
      getToken: ({ refresh }) => {
        refreshes.push(refresh);
        return refresh ? mint("ben") : mint("ben", { ttlS: 3 }); // the first one expires while connected
      },
    }));
    const states: string[] = [];
    ben.stream.on("state", (s) => states.push(s));
    ben.stream.start();
    await until(() => ben.stream.state === "open", "open with the short-lived token");
    await until(() => states.includes("reconnecting") && ben.stream.state === "open",
      "closed 4401 at the token's expiry, then open again", 20_000);
    assert.deepEqual(refreshes, [false, true]);
    // The close itself asked for the new token: no call was refused on the way back.
    assert.equal(unauthorized, 0);
  });
});

describe("sends", () => {
  test("an answer lost on the way back: the retry is stored once", async () => {
    let dropped = 0;
    const flaky: typeof fetch = async (input, init) => {
      const response = await fetch(input, init);
      if (init?.method === "POST" && String(input).endsWith("/messages") && dropped === 0) {
        dropped++;
        throw new TypeError("fetch failed: the connection was reset"); // the server has it; we never learn
      }
      return response;
    };
    const { im: ana } = track(clientFor("ana", { fetch: flaky }));
    const conversation = await ana.http.startConversation({ participant_ids: ["ben"], related: { type: "chat", id: "C-lost" } });
    const sent: Message = await ana.sends.send(conversation.id, "said once");
    assert.equal(dropped, 1);
    const page = await ana.http.messages(conversation.id);
    assert.deepEqual(page.items.filter((m) => m.body === "said once").map((m) => m.id), [sent.id]);
    assert.deepEqual(ana.sends.pending(), []);
  });

  test("unsent messages survive a page reload and are stored once, even resumed twice", async () => {
    const storage = new MemoryStorage();
    const offline: typeof fetch = async (input, init) => {
      if (init?.method === "POST" && String(input).endsWith("/messages")) throw new TypeError("fetch failed: offline");
      return fetch(input, init);
    };
    const { im: before } = clientFor("ana", { storage, fetch: offline });
    const conversation = await before.http.startConversation({ participant_ids: ["ben"], related: { type: "ticket", id: "T-reload" } });
    void before.sends.send(conversation.id, "typed before the reload").catch(() => undefined);
    await until(() => before.sends.pending().length === 1, "the message kept as pending");
    before.close(); // the page goes away with the message unsent
    const { im: after1 } = track(clientFor("ana", { storage }));
    const { im: after2 } = track(clientFor("ana", { storage })); // a second tab resuming the same
    const results = await Promise.all([...after1.sends.resume(), ...after2.sends.resume()]);
    assert.equal(new Set(results.map((m) => m.id)).size, 1);
    const page = await after1.http.messages(conversation.id);
    assert.equal(page.items.filter((m) => m.body === "typed before the reload").length, 1);
    assert.deepEqual(after1.sends.pending(), []);
  });

  test("sends to one thread fired together are stored in the order they were typed", async () => {
    const { im: ana } = track(clientFor("ana"));
    const conversation = await ana.http.startConversation({ participant_ids: ["ben"], related: { type: "chat", id: "C-order" } });
    const bodies = Array.from({ length: 12 }, (_, i) => `in order ${i + 1}`);
    const stored = await Promise.all(bodies.map((body) => ana.sends.send(conversation.id, body)));
    assert.deepEqual(stored.map((m) => m.seq), bodies.map((_, i) => i + 1));
    const page = await ana.http.messages(conversation.id);
    assert.deepEqual(page.items.map((m) => m.body), bodies);
  });

  test("a refusal is not retried: the error names the field", async () => {
    const { im: ana } = track(clientFor("ana"));
    const conversation = await ana.http.startConversation({ participant_ids: ["ben"], related: { type: "chat", id: "C-long" } });
    await assert.rejects(ana.sends.send(conversation.id, "x".repeat(10_001)), (error: Error & { status?: number; field?: string }) => {
      assert.equal(error.status, 422);
      assert.match(String(error.field), /body/);
      return true;
    });
    assert.deepEqual(ana.sends.pending(), []);
  });
});

describe("http", () => {
  test("a 401 asks the host page for a fresh token once and succeeds", async () => {
    const refreshes: boolean[] = [];
    const { im } = track(clientFor("ana", {
      getToken: ({ refresh }) => {
        refreshes.push(refresh);
        return refresh ? mint("ana") : mint("ana", { ttlS: -120 });
      },
    }));
    const unread = await im.http.unread();
    assert.equal(typeof unread.total, "number");
    assert.deepEqual(refreshes, [false, true]);
  });

  test("another tenant's thread is not found", async () => {
    const { im: ana } = track(clientFor("ana"));
    const conversation = await ana.http.startConversation({ participant_ids: ["ben"], related: { type: "ticket", id: "T-iso" } });
    const { im: outsider } = track(clientFor("zed", { getToken: () => mint("zed", { tenant: "other" }) }));
    await assert.rejects(outsider.http.conversation(conversation.id), (e: Error & { status?: number }) => e.status === 404);
  });
});
